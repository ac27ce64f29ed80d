//! The consensus [`Context`]: what heights, values, proposals, votes and
//! validators are for Malachite's core. A value is the hash of a block; the
//! block itself travels in parts on the proposal channel
//! ([`ValuePayload::ProposalAndParts`](malachite_types::ValuePayload)), so
//! proposals and votes stay small whatever the block size.

use std::fmt;

use malachite_ed25519::{Ed25519, PublicKey};
use malachite_types::{
    Context, Height as _, LinearTimeouts, NilOrVal, Round, SignedExtension, VoteType, VotingPower,
};
use sha2::{Digest, Sha256};

/// A validator's address: the first 20 bytes of the SHA-256 of its public
/// key (as a Tendermint address is).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// The address of `key`.
    pub fn of(key: &PublicKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut address = [0; 20];
        address.copy_from_slice(&digest[..20]);
        Self(address)
    }
}

/// Display and Debug as the first `$shown` bytes in hex (enough to tell
/// values apart in logs), Debug wrapped in the type's name.
macro_rules! short_hex {
    ($type:ident, $shown:expr) => {
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0[..$shown]
                    .iter()
                    .try_for_each(|b| write!(f, "{b:02x}"))
            }
        }

        impl fmt::Debug for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($type))
            }
        }
    };
}

short_hex!(Address, 4);

impl malachite_types::Address for Address {}

/// A block height, from 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl malachite_types::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// What consensus decides: the SHA-256 of an encoded block.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockHash(pub [u8; 32]);

impl BlockHash {
    /// The hash of `block` (its encoding).
    pub fn of(block: &[u8]) -> Self {
        Self(Sha256::digest(block).into())
    }
}

short_hex!(BlockHash, 6);

impl malachite_types::Value for BlockHash {
    type Id = BlockHash;

    fn id(&self) -> BlockHash {
        *self
    }
}

/// One validator: its key and voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    /// Derived from the key.
    pub address: Address,
    /// Checks its signatures.
    pub public_key: PublicKey,
    /// Its weight in every quorum.
    pub voting_power: VotingPower,
}

impl Validator {
    /// The validator whose key has the 32 secret bytes `secret`.
    pub fn from_secret(secret: [u8; 32], voting_power: VotingPower) -> Self {
        let key = malachite_ed25519::PrivateKey::from(secret);
        Self::new(key.public_key(), voting_power)
    }

    /// A validator with key `public_key`.
    pub fn new(public_key: PublicKey, voting_power: VotingPower) -> Self {
        Self {
            address: Address::of(&public_key),
            public_key,
            voting_power,
        }
    }
}

impl malachite_types::Validator<Ctx> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }

    fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    fn voting_power(&self) -> VotingPower {
        self.voting_power
    }
}

/// The validators, sorted by address (proposers rotate in that order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
}

impl ValidatorSet {
    /// The set of `validators` (duplicates by address are dropped).
    pub fn new(mut validators: Vec<Validator>) -> Self {
        validators.sort_by_key(|v| v.address);
        validators.dedup_by_key(|v| v.address);
        Self { validators }
    }

    /// The validators, by address.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }
}

impl malachite_types::ValidatorSet<Ctx> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }

    fn total_voting_power(&self) -> VotingPower {
        self.validators.iter().map(|v| v.voting_power).sum()
    }

    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.validators
            .binary_search_by_key(address, |v| v.address)
            .ok()
            .map(|i| &self.validators[i])
    }

    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// A proposal: the proposer's claim that `value` is the block for
/// (`height`, `round`). Its parts carry the block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// The height.
    pub height: Height,
    /// The round.
    pub round: Round,
    /// The block's hash.
    pub value: BlockHash,
    /// The round of the polka that justifies re-proposing it, or nil.
    pub pol_round: Round,
    /// Who proposes.
    pub proposer: Address,
}

impl malachite_types::Proposal<Ctx> for Proposal {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &BlockHash {
        &self.value
    }

    fn take_value(self) -> BlockHash {
        self.value
    }

    fn pol_round(&self) -> Round {
        self.pol_round
    }

    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

/// One part of a proposed block, as the proposal channel carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockPart {
    /// Its place among the block's parts.
    pub index: u32,
    /// How many parts the block has.
    pub count: u32,
}

impl malachite_types::ProposalPart<Ctx> for BlockPart {
    fn is_first(&self) -> bool {
        self.index == 0
    }

    fn is_last(&self) -> bool {
        self.index + 1 == self.count
    }
}

/// A prevote or precommit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    /// Prevote or precommit.
    pub vote_type: VoteType,
    /// The height.
    pub height: Height,
    /// The round.
    pub round: Round,
    /// The block voted for, or nil.
    pub value: NilOrVal<BlockHash>,
    /// Who votes.
    pub validator: Address,
    /// Always `None`: this application does not extend votes.
    pub extension: Option<SignedExtension<Ctx>>,
}

impl malachite_types::Vote<Ctx> for Vote {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &NilOrVal<BlockHash> {
        &self.value
    }

    fn take_value(self) -> NilOrVal<BlockHash> {
        self.value
    }

    fn vote_type(&self) -> VoteType {
        self.vote_type
    }

    fn validator_address(&self) -> &Address {
        &self.validator
    }

    fn extension(&self) -> Option<&SignedExtension<Ctx>> {
        self.extension.as_ref()
    }

    fn take_extension(&mut self) -> Option<SignedExtension<Ctx>> {
        self.extension.take()
    }

    fn extend(self, extension: SignedExtension<Ctx>) -> Self {
        Self {
            extension: Some(extension),
            ..self
        }
    }
}

/// The application's context for Malachite's core.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ctx;

impl Context for Ctx {
    type Address = Address;
    type Height = Height;
    type ProposalPart = BlockPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Timeouts = LinearTimeouts;
    type Value = BlockHash;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = Ed25519;

    /// Round robin over the validators by address, shifted by height, so
    /// every validator proposes in turn.
    fn select_proposer<'a>(
        &self,
        validator_set: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        let n = validator_set.validators.len().max(1) as u64;
        let round = round.as_u32().unwrap_or(0) as u64;
        let index = (height.as_u64() + round) % n;
        &validator_set.validators[index as usize]
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: BlockHash,
        pol_round: Round,
        address: Address,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer: address,
        }
    }

    fn new_prevote(&self, h: Height, r: Round, v: NilOrVal<BlockHash>, a: Address) -> Vote {
        new_vote(VoteType::Prevote, h, r, v, a)
    }

    fn new_precommit(&self, h: Height, r: Round, v: NilOrVal<BlockHash>, a: Address) -> Vote {
        new_vote(VoteType::Precommit, h, r, v, a)
    }
}

/// A vote without extension.
pub(crate) fn new_vote(
    vote_type: VoteType,
    height: Height,
    round: Round,
    value: NilOrVal<BlockHash>,
    validator: Address,
) -> Vote {
    Vote {
        vote_type,
        height,
        round,
        value,
        validator,
        extension: None,
    }
}
