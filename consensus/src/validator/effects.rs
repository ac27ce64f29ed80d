//! The effect handler: what the core asks for (send, sign, verify,
//! schedule, store, decide), carried out on the validator's state and
//! queued for the loop to send.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use malachite_consensus::LivenessMsg;
use malachite_consensus::{
    Effect, Input, LocallyProposedValue, ProposedValue, Resumable, Resume, SignedConsensusMsg,
};
use malachite_peer::PeerId;
use malachite_types::{
    Height as _, Round, Timeout, TimeoutKind, Validity, ValueOrigin, ValueResponse,
    VoteExtensionPolicy,
};
use p2p_router::{ChannelId, NodeId, PeerError, PeerErrorKind, Severity};
use tokio::time::Instant;
use tokio_util::time::{delay_queue, DelayQueue};
use tracing::{debug, info, warn};

use super::{ConsensusConfig, SYNC_CHANNEL};
use crate::blocks::{check_block, make_block, parts, BlockStore};
use crate::codec::{
    encode_polka, encode_round, encode_signed, encode_vote, sync_message, BlockPartMessage,
    ConsensusMessage, SyncMessage,
};
use crate::context::{Address, BlockHash, Ctx, Height, ValidatorSet};
use crate::record::{Decision, Decisions};
use crate::signing::{self, Signer};

/// What the effect handler asks the loop to send.
pub(super) enum Out {
    Broadcast(ConsensusMessage),
    Parts(Vec<BlockPartMessage>),
    Sync(SyncMessage),
    SyncTo(NodeId, SyncMessage),
    Report(PeerError),
}

/// Everything the effect handler touches besides the core's state.
pub(super) struct Io {
    pub(super) me: Address,
    pub(super) signer: Signer,
    pub(super) validators: ValidatorSet,
    pub(super) config: ConsensusConfig,
    pub(super) outbox: Vec<Out>,
    /// Inputs the effects produced, fed once the current one is done.
    pub(super) inputs: VecDeque<Input<Ctx>>,
    pub(super) timers: DelayQueue<Timeout>,
    pub(super) timer_keys: HashMap<Timeout, delay_queue::Key>,
    pub(super) store: BlockStore,
    pub(super) decisions: Decisions,
    /// When each height's first proposal part (or our proposal) was seen.
    pub(super) first_seen: BTreeMap<Height, Instant>,
    /// Signatures checked on arrival, so the core's check is free.
    pub(super) preverified: HashSet<[u8; 64]>,
    /// The sync request in flight: whom, which height, since when.
    pub(super) sync_pending: Option<(NodeId, Height, Instant)>,
}

pub(super) fn peer_id(node: NodeId) -> PeerId {
    // An identity multihash of the node id: code 0, length 20.
    let mut bytes = vec![0, 20];
    bytes.extend_from_slice(node.as_bytes());
    PeerId::from_bytes(&bytes).unwrap_or_else(|_| unreachable!("20 bytes fit an identity hash"))
}

pub(super) fn node_of(peer: PeerId) -> Option<NodeId> {
    let bytes = peer.to_bytes();
    let id: [u8; 20] = bytes.get(2..)?.try_into().ok()?;
    Some(NodeId::from_bytes(id))
}

pub(super) fn reactor_error(
    peer: NodeId,
    channel: ChannelId,
    what: impl std::fmt::Display,
) -> PeerError {
    PeerError::new(
        peer,
        Severity::Minor,
        PeerErrorKind::reactor(channel, what.to_string()),
    )
}

impl Io {
    pub(super) fn duration_for(&self, timeout: Timeout) -> Duration {
        let t = &self.config.timeouts;
        let round = timeout.round.as_u32().unwrap_or(0);
        let grow = |base: Duration, delta: Duration| base + delta * round;
        match timeout.kind {
            TimeoutKind::Propose => grow(t.propose, t.propose_delta),
            TimeoutKind::Prevote => grow(t.prevote, t.prevote_delta),
            TimeoutKind::Precommit => grow(t.precommit, t.precommit_delta),
            TimeoutKind::Rebroadcast => t.rebroadcast,
            TimeoutKind::FinalizeHeight(d) => d,
        }
    }

    pub(super) fn handle(&mut self, effect: Effect<Ctx>) -> Result<Resume<Ctx>, Infallible> {
        Ok(match effect {
            Effect::CancelAllTimeouts(r) => {
                self.timers.clear();
                self.timer_keys.clear();
                r.resume_with(())
            }
            Effect::CancelTimeout(timeout, r) => {
                if let Some(key) = self.timer_keys.remove(&timeout) {
                    self.timers.remove(&key);
                }
                r.resume_with(())
            }
            Effect::ScheduleTimeout(timeout, r) => {
                let key = self.timers.insert(timeout, self.duration_for(timeout));
                if let Some(old) = self.timer_keys.insert(timeout, key) {
                    self.timers.remove(&old);
                }
                r.resume_with(())
            }
            Effect::StartRound(height, round, proposer, _, r) => {
                debug!(%height, %round, %proposer, "round");
                r.resume_with(())
            }
            Effect::PublishConsensusMsg(msg, r) => {
                if let SignedConsensusMsg::Proposal(p) = &msg {
                    self.first_seen
                        .entry(p.message.height)
                        .or_insert_with(Instant::now);
                }
                self.outbox.push(Out::Broadcast(encode_signed(&msg)));
                r.resume_with(())
            }
            Effect::PublishLivenessMsg(msg, r) => {
                let wire = match &msg {
                    LivenessMsg::Vote(v) => encode_vote(v),
                    LivenessMsg::PolkaCertificate(c) => encode_polka(c),
                    LivenessMsg::SkipRoundCertificate(c) => encode_round(c),
                };
                self.outbox.push(Out::Broadcast(wire));
                r.resume_with(())
            }
            Effect::RepublishVote(v, r) => {
                self.outbox.push(Out::Broadcast(encode_vote(&v)));
                r.resume_with(())
            }
            Effect::RepublishRoundCertificate(c, r) => {
                self.outbox.push(Out::Broadcast(encode_round(&c)));
                r.resume_with(())
            }
            Effect::GetValue(height, round, _, r) => {
                let block = make_block(height, self.me, self.config.block_size);
                let hash = BlockHash::of(&block);
                self.store.propose(height, hash, block.clone());
                self.first_seen.entry(height).or_insert_with(Instant::now);
                let parts = parts(&block, height, round, Round::Nil, self.me, self.part_size());
                self.outbox.push(Out::Parts(parts));
                self.inputs
                    .push_back(Input::Propose(LocallyProposedValue::new(
                        height, round, hash,
                    )));
                r.resume_with(())
            }
            Effect::RestreamProposal(height, round, valid_round, proposer, value, r) => {
                if let Some(block) = self.store.proposed(height, &value) {
                    let parts = parts(
                        block,
                        height,
                        round,
                        valid_round,
                        proposer,
                        self.part_size(),
                    );
                    self.outbox.push(Out::Parts(parts));
                }
                r.resume_with(())
            }
            Effect::CertVerifiedSyncValue(response, proposer, r) => {
                self.synced_value(response, proposer);
                r.resume_with(())
            }
            Effect::CertRejectedSyncValue(peer, height, error, r) => {
                self.sync_pending = None;
                if let Some(node) = node_of(peer) {
                    let what = format!("sync certificate for height {height} refused: {error}");
                    self.outbox
                        .push(Out::Report(reactor_error(node, SYNC_CHANNEL, what)));
                }
                r.resume_with(())
            }
            Effect::Decide(certificate, _, r) => {
                self.decided(certificate);
                r.resume_with(())
            }
            Effect::SignVote(vote, r) => r.resume_with(self.signer.sign_vote(vote)),
            Effect::SignProposal(proposal, r) => r.resume_with(self.signer.sign_proposal(proposal)),
            Effect::VerifySignature(msg, key, r) => {
                let valid = self.preverified.remove(&msg.signature.to_bytes())
                    || signing::verify(&msg.message, &msg.signature, &key);
                r.resume_with(valid)
            }
            Effect::VerifyCommitCertificate(c, set, thresholds, r) => {
                r.resume_with(signing::verify_commit(&c, &set, thresholds))
            }
            Effect::VerifyExtendedCommitCertificate(c, set, thresholds, _, r) => {
                r.resume_with(signing::verify_extended_commit(&c, &set, thresholds))
            }
            Effect::VerifyPolkaCertificate(c, set, thresholds, r) => {
                r.resume_with(signing::verify_polka(&c, &set, thresholds))
            }
            Effect::VerifyRoundCertificate(c, set, thresholds, r) => {
                r.resume_with(signing::verify_round(&c, &set, thresholds))
            }
            // No write-ahead log: a restarted validator has forgotten its
            // votes, so it catches up by sync instead of rejoining the
            // height it was in (it cannot equivocate on a height it skips).
            Effect::WalAppend(_, _, r) => r.resume_with(()),
            Effect::ExtendVote(_, _, _, _, r) => r.resume_with(None),
            Effect::VerifyVoteExtension(_, _, _, _, _, _, r) => r.resume_with(Ok(())),
            Effect::Finalize(certificate, _, _, r) => {
                self.inputs.push_back(Input::StartHeight(
                    certificate.height.increment(),
                    self.validators.clone(),
                    false,
                    None,
                    VoteExtensionPolicy::Disabled,
                ));
                r.resume_with(())
            }
        })
    }

    pub(super) fn part_size(&self) -> usize {
        self.config.part_size.max(1024)
    }

    pub(super) fn decided(&mut self, certificate: malachite_types::CommitCertificate<Ctx>) {
        let height = certificate.height;
        let latency = self.first_seen.remove(&height).map(|seen| seen.elapsed());
        self.first_seen = self.first_seen.split_off(&height.increment());
        let decision = Decision {
            height: height.0,
            value: certificate.value_id,
            round: certificate.round.as_u32().unwrap_or(0),
            signers: certificate.commit_signatures.len(),
            latency,
        };
        if !self.store.decide(certificate) {
            warn!(%height, "decided a block that is not here; sync cannot serve it");
        }
        info!(%height, value = %decision.value, round = decision.round, "decided");
        self.decisions.record(decision);
        if self.preverified.len() > 100_000 {
            self.preverified.clear();
        }
        self.outbox.push(Out::Sync(SyncMessage {
            kind: Some(sync_message::Kind::Status(height.0)),
        }));
    }

    /// A synced block whose certificate the core verified: check that the
    /// block is the one certified, then hand it to the core.
    pub(super) fn synced_value(&mut self, response: ValueResponse<Ctx>, proposer: Address) {
        self.sync_pending = None;
        let certificate = &response.certificate;
        let hash = BlockHash::of(&response.value_bytes);
        let block_ok = check_block(&response.value_bytes)
            .is_ok_and(|(height, _)| height == certificate.height);
        if hash != certificate.value_id || !block_ok {
            if let Some(node) = node_of(response.peer) {
                let what = "synced block does not match its certificate";
                self.outbox
                    .push(Out::Report(reactor_error(node, SYNC_CHANNEL, what)));
            }
            return;
        }
        self.store
            .propose(certificate.height, hash, response.value_bytes.clone());
        self.inputs.push_back(Input::ProposedValue(
            ProposedValue {
                height: certificate.height,
                round: certificate.round,
                valid_round: Round::Nil,
                proposer,
                value: hash,
                validity: Validity::Valid,
            },
            ValueOrigin::Sync,
        ));
    }
}
