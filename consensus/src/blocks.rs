//! Blocks: making a proposer's block, cutting it into parts, reassembling
//! a peer's parts (bounded), and keeping proposed and decided blocks.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use malachite_consensus::ProposedValue;
use malachite_types::{CommitCertificate, Round, Validity};
use p2p_router::NodeId;
use prost::Message;

use crate::codec::{read_address, read_optional_round, read_round, BlockMessage, BlockPartMessage};
use crate::context::{Address, BlockHash, Ctx, Height};

/// A block's transactions: `size` bytes that differ per height and
/// proposer (cheap to make, so a proposer never waits on it).
pub(crate) fn make_block(height: Height, proposer: Address, size: usize) -> Bytes {
    let mut state = height.0 ^ u64::from_le_bytes(proposer.0[..8].try_into().unwrap_or([1; 8]));
    state |= 1;
    let mut transactions = Vec::with_capacity(size + 8);
    while transactions.len() < size {
        // xorshift64: the bytes only need to differ, not be random.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        transactions.extend_from_slice(&state.to_le_bytes());
    }
    transactions.truncate(size);
    let block = BlockMessage {
        height: height.0,
        proposer: Bytes::copy_from_slice(&proposer.0),
        transactions: transactions.into(),
    };
    block.encode_to_vec().into()
}

/// The parts of `block` for (`height`, `round`), `part_size` bytes each.
pub(crate) fn parts(
    block: &Bytes,
    height: Height,
    round: Round,
    valid_round: Round,
    proposer: Address,
    part_size: usize,
) -> Vec<BlockPartMessage> {
    let count = block.len().div_ceil(part_size).max(1);
    (0..count)
        .map(|i| BlockPartMessage {
            height: height.0,
            round: round.as_u32().unwrap_or(0),
            valid_round: valid_round.as_i64(),
            proposer: Bytes::copy_from_slice(&proposer.0),
            index: i as u32,
            count: count as u32,
            chunk: block.slice(i * part_size..((i + 1) * part_size).min(block.len())),
        })
        .collect()
}

/// A block reassembled from a peer's parts: the value the core is told
/// of (well-formed blocks are valid in this application) and its bytes.
#[derive(Debug)]
pub(crate) struct Assembled {
    pub(crate) value: ProposedValue<Ctx>,
    pub(crate) bytes: Bytes,
}

/// Why a peer's parts were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PartError {
    #[error("a part out of order or of another block")]
    OutOfOrder,
    #[error("a block larger than the maximum")]
    TooLarge,
    #[error("a field of the part or block is invalid")]
    Invalid,
    #[error("the block does not match its parts' height or proposer")]
    Mismatch,
}

struct Partial {
    first: BlockPartMessage,
    next: u32,
    data: Vec<u8>,
}

/// Reassembles each peer's stream of parts. A peer has one block in
/// progress at a time (a first part replaces it), and a block holds at
/// most `max_block` bytes, so memory is bounded by peers × `max_block`.
pub(crate) struct Assembler {
    max_block: usize,
    partial: HashMap<NodeId, Partial>,
}

impl Assembler {
    pub(crate) fn new(max_block: usize) -> Self {
        Self {
            max_block,
            partial: HashMap::new(),
        }
    }

    /// Takes `part` from `peer`; returns the block once its last part is in.
    pub(crate) fn push(
        &mut self,
        peer: NodeId,
        part: BlockPartMessage,
    ) -> Result<Option<Assembled>, PartError> {
        if part.count == 0 || part.index >= part.count {
            return Err(PartError::Invalid);
        }
        if part.index == 0 {
            self.partial.insert(
                peer,
                Partial {
                    data: Vec::new(),
                    next: 0,
                    first: BlockPartMessage {
                        chunk: Bytes::new(),
                        ..part.clone()
                    },
                },
            );
        }
        let Some(partial) = self.partial.get_mut(&peer) else {
            return Err(PartError::OutOfOrder);
        };
        let same_block = part.height == partial.first.height
            && part.round == partial.first.round
            && part.proposer == partial.first.proposer
            && part.count == partial.first.count;
        if !same_block || part.index != partial.next {
            self.partial.remove(&peer);
            return Err(PartError::OutOfOrder);
        }
        if partial.data.len() + part.chunk.len() > self.max_block {
            self.partial.remove(&peer);
            return Err(PartError::TooLarge);
        }
        partial.data.extend_from_slice(&part.chunk);
        partial.next += 1;
        if partial.next < partial.first.count {
            return Ok(None);
        }
        let Some(done) = self.partial.remove(&peer) else {
            return Ok(None);
        };
        let bytes = Bytes::from(done.data);
        let (height, maker) = check_block(&bytes)?;
        let first = done.first;
        let proposer = read_address(&first.proposer).map_err(|_| PartError::Invalid)?;
        let valid_round = read_optional_round(first.valid_round).map_err(|_| PartError::Invalid)?;
        // A new block is its proposer's own. A block proposed again (its
        // valid round set) was made by the proposer of an earlier round,
        // so only its height must match.
        let fresh = valid_round == Round::Nil;
        if height.0 != first.height || (fresh && maker != proposer) {
            return Err(PartError::Mismatch);
        }
        let value = ProposedValue {
            height,
            round: read_round(first.round).map_err(|_| PartError::Invalid)?,
            valid_round,
            proposer,
            value: BlockHash::of(&bytes),
            validity: Validity::Valid,
        };
        Ok(Some(Assembled { value, bytes }))
    }

    /// Forgets a peer that left.
    pub(crate) fn forget(&mut self, peer: &NodeId) {
        self.partial.remove(peer);
    }
}

/// Decodes a block's height and proposer.
pub(crate) fn check_block(bytes: &[u8]) -> Result<(Height, Address), PartError> {
    let block = BlockMessage::decode(bytes).map_err(|_| PartError::Invalid)?;
    let proposer = read_address(&block.proposer).map_err(|_| PartError::Invalid)?;
    Ok((Height(block.height), proposer))
}

/// Blocks seen for undecided heights, by height and hash, and decided
/// blocks with their certificates. Undecided blocks above the current
/// height are bounded per height; decided ones by `keep_decided`.
pub(crate) struct BlockStore {
    proposed: BTreeMap<(Height, BlockHash), Bytes>,
    decided: BTreeMap<Height, (Bytes, CommitCertificate<Ctx>)>,
    keep_decided: usize,
    per_height: usize,
}

impl BlockStore {
    pub(crate) fn new(keep_decided: usize) -> Self {
        Self {
            proposed: BTreeMap::new(),
            decided: BTreeMap::new(),
            keep_decided: keep_decided.max(1),
            per_height: 16,
        }
    }

    /// Keeps a proposed block; false if its height already holds the most.
    pub(crate) fn propose(&mut self, height: Height, hash: BlockHash, bytes: Bytes) -> bool {
        let held = self
            .proposed
            .range((height, BlockHash([0; 32]))..=(height, BlockHash([0xff; 32])))
            .count();
        if held >= self.per_height && !self.proposed.contains_key(&(height, hash)) {
            return false;
        }
        self.proposed.insert((height, hash), bytes);
        true
    }

    pub(crate) fn proposed(&self, height: Height, hash: &BlockHash) -> Option<&Bytes> {
        self.proposed.get(&(height, *hash))
    }

    /// Records the decision at `certificate.height`, if its block is here,
    /// and drops the proposals at or below it.
    pub(crate) fn decide(&mut self, certificate: CommitCertificate<Ctx>) -> bool {
        let height = certificate.height;
        let Some(bytes) = self.proposed.remove(&(height, certificate.value_id)) else {
            return false;
        };
        self.proposed = self
            .proposed
            .split_off(&(Height(height.0 + 1), BlockHash([0; 32])));
        self.decided.insert(height, (bytes, certificate));
        while self.decided.len() > self.keep_decided {
            self.decided.pop_first();
        }
        true
    }

    pub(crate) fn decided(&self, height: Height) -> Option<&(Bytes, CommitCertificate<Ctx>)> {
        self.decided.get(&height)
    }

    /// The last decided height (0 before any).
    pub(crate) fn tip(&self) -> Height {
        self.decided
            .keys()
            .next_back()
            .copied()
            .unwrap_or(Height(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> NodeId {
        p2p_router::NodeKey::from_seed([n; 32]).node_id()
    }

    const PROPOSER: Address = Address([7; 20]);

    /// Pushes all of `parts` from `peer`; what the last push returned.
    fn push_all(
        a: &mut Assembler,
        peer: NodeId,
        parts: Vec<BlockPartMessage>,
    ) -> Result<Option<Assembled>, PartError> {
        let mut last = Ok(None);
        for p in parts {
            last = a.push(peer, p);
        }
        last
    }

    /// A block of `size` bytes at height 3, round 1, and its 16 KiB parts.
    fn block_and_parts(size: usize) -> (Bytes, Vec<BlockPartMessage>) {
        let block = make_block(Height(3), PROPOSER, size);
        let parts = parts(
            &block,
            Height(3),
            Round::new(1),
            Round::Nil,
            PROPOSER,
            16 << 10,
        );
        (block, parts)
    }

    #[test]
    fn parts_reassemble_to_the_block_and_its_hash() {
        let (block, parts) = block_and_parts(100_000);
        assert_eq!(parts.len(), 7);
        let mut a = Assembler::new(1 << 20);
        let done = push_all(&mut a, peer(1), parts).unwrap().unwrap().value;
        assert_eq!(done.value, BlockHash::of(&block));
        assert_eq!(
            (done.height, done.round, done.proposer),
            (Height(3), Round::new(1), PROPOSER)
        );
    }

    #[test]
    fn out_of_order_oversized_and_mismatched_parts_are_refused() {
        let (_, parts) = block_and_parts(50_000);
        let mut a = Assembler::new(1 << 20);
        assert_eq!(
            a.push(peer(1), parts[1].clone()).unwrap_err(),
            PartError::OutOfOrder
        );
        let mut small = Assembler::new(20_000);
        small.push(peer(1), parts[0].clone()).unwrap();
        assert_eq!(
            small.push(peer(1), parts[1].clone()).unwrap_err(),
            PartError::TooLarge
        );
        let mut lying = parts.clone();
        for p in &mut lying {
            p.height = 4;
        }
        assert_eq!(
            push_all(&mut a, peer(2), lying).unwrap_err(),
            PartError::Mismatch
        );
        // A new block claimed by another proposer is refused too.
        let mut claimed = parts.clone();
        for p in &mut claimed {
            p.proposer = Bytes::copy_from_slice(&[9; 20]);
        }
        assert_eq!(
            push_all(&mut a, peer(3), claimed).unwrap_err(),
            PartError::Mismatch
        );
    }

    #[test]
    fn a_block_proposed_again_by_a_later_proposer_is_accepted_as_theirs() {
        // Round 2's proposer restreams the block PROPOSER made in round 1
        // (a polka formed on it there): the parts name the new proposer
        // and the valid round, the block still names its maker.
        let block = make_block(Height(3), PROPOSER, 50_000);
        let later = Address([8; 20]);
        let parts = parts(
            &block,
            Height(3),
            Round::new(2),
            Round::new(1),
            later,
            16 << 10,
        );
        let mut a = Assembler::new(1 << 20);
        let done = push_all(&mut a, peer(1), parts).unwrap().unwrap().value;
        assert_eq!(done.value, BlockHash::of(&block));
        assert_eq!(
            (done.round, done.valid_round, done.proposer),
            (Round::new(2), Round::new(1), later)
        );
    }
}
