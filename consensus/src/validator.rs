//! The host: one task per validator that feeds Malachite's core the
//! messages, timeouts and blocks it needs, and carries out the effects it
//! asks for over the router's three channels.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use malachite_consensus::LivenessMsg;
use malachite_consensus::{
    Effect, Input, LocallyProposedValue, Params, ProposedValue, Resumable, Resume,
    SignedConsensusMsg, State, ThresholdParams, ValuePayload,
};
use malachite_ed25519::PrivateKey;
use malachite_peer::PeerId;
use malachite_types::{
    ExtendedCommitCertificate, ExtendedCommitSignature, Height as _, LinearTimeouts, Round,
    Timeout, TimeoutKind, Validity, ValueOrigin, ValueResponse, VoteExtensionPolicy,
};
use p2p_router::{
    ChannelDescriptor, ChannelError, ChannelId, ChannelReceiver, ChannelSender, Envelope,
    FullPolicy, NodeId, PeerError, PeerErrorKind, PeerUpdate, RouterBuilder, RouterHandle,
    SendError, Severity,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{delay_queue, DelayQueue};
use tracing::{debug, info, warn, Instrument};

use crate::blocks::{check_block, make_block, parts, Assembled, Assembler, BlockStore};
use crate::codec::{
    decode_commit, decode_consensus, encode_commit, encode_polka, encode_round, encode_signed,
    encode_vote, sync_message, BlockPartMessage, ConsensusMessage, Decoded, SyncMessage,
    SyncResponse,
};
use crate::context::{Address, BlockHash, Ctx, Height, ValidatorSet};
use crate::record::{Decision, Decisions};
use crate::signing::{self, Signer};
use malachite_types::ValidatorSet as _;

/// The consensus channel: votes, proposals and the liveness certificates.
pub const CONSENSUS_CHANNEL: ChannelId = ChannelId(0x40);
/// The proposal channel: block parts.
pub const PROPOSAL_CHANNEL: ChannelId = ChannelId(0x41);
/// The sync channel: status, requests and decided blocks.
pub const SYNC_CHANNEL: ChannelId = ChannelId(0x42);

/// How a validator runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsensusConfig {
    /// Bytes of synthetic transactions in each proposed block (default
    /// 64 KiB).
    pub block_size: usize,
    /// Bytes of block per part on the proposal channel (default 64 KiB).
    pub part_size: usize,
    /// The largest block accepted from a peer (default 8 MiB).
    pub max_block_size: usize,
    /// Round timeouts (Malachite's defaults: propose 3 s, prevote and
    /// precommit 1 s, each growing by 500 ms per round).
    pub timeouts: LinearTimeouts,
    /// How often a validator tells its peers its last decided height.
    pub status_interval: Duration,
    /// How long a sync request may go unanswered before another peer is
    /// asked; also how long a validator waits at a height a peer has
    /// already decided before it asks for it.
    pub sync_timeout: Duration,
    /// Decided blocks kept to serve sync (default 1,000).
    pub keep_decided: usize,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        Self {
            block_size: 64 << 10,
            part_size: 64 << 10,
            max_block_size: 8 << 20,
            timeouts: LinearTimeouts::default(),
            status_interval: Duration::from_secs(1),
            sync_timeout: Duration::from_secs(2),
            keep_decided: 1_000,
        }
    }
}

/// The three channels a validator uses, declared on a router builder.
pub struct ConsensusChannels {
    consensus: (
        ChannelSender<ConsensusMessage>,
        ChannelReceiver<ConsensusMessage>,
    ),
    proposal: (
        ChannelSender<BlockPartMessage>,
        ChannelReceiver<BlockPartMessage>,
    ),
    sync: (ChannelSender<SyncMessage>, ChannelReceiver<SyncMessage>),
}

impl std::fmt::Debug for ConsensusChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsensusChannels").finish_non_exhaustive()
    }
}

impl ConsensusChannels {
    /// Declares the channels on `builder`.
    ///
    /// Votes get the highest priority and a queue that never blocks the
    /// validator: with `DropNewest`, a slow peer whose queue is full
    /// misses new votes (the core's rebroadcast timeout sends our last
    /// vote again, and sync catches it up if it falls a height behind),
    /// while every other peer gets them at once. `Wait` would let one
    /// slow peer stall the validator's loop, hence every peer; and
    /// `DropOldest` would discard the votes a peer still needs, in favour
    /// of later ones it cannot use without them. The queue holds 1,024
    /// votes, dozens of rounds of a 100-validator set. Block parts share
    /// the policy with room for 4 blocks of parts, and sync (large
    /// answers, few of them) has the lowest priority.
    pub fn declare(
        builder: &mut RouterBuilder,
        config: &ConsensusConfig,
    ) -> Result<Self, ChannelError> {
        let parts_per_block = config.max_block_size.div_ceil(config.part_size.max(1));
        let consensus = ChannelDescriptor::new(CONSENSUS_CHANNEL, "consensus")
            .with_priority(10)
            .with_send_capacity(1024)
            .with_receive_capacity(4096)
            .with_max_message_size(1 << 20)
            .with_full_policy(FullPolicy::DropNewest);
        let proposal = ChannelDescriptor::new(PROPOSAL_CHANNEL, "proposal")
            .with_priority(5)
            .with_send_capacity((4 * parts_per_block).max(64))
            .with_receive_capacity((4 * parts_per_block).max(64))
            .with_max_message_size(config.part_size + 1024)
            .with_full_policy(FullPolicy::DropNewest);
        let sync = ChannelDescriptor::new(SYNC_CHANNEL, "sync")
            .with_priority(2)
            .with_send_capacity(64)
            .with_receive_capacity(256)
            .with_max_message_size(config.max_block_size + (1 << 20))
            .with_full_policy(FullPolicy::DropNewest);
        Ok(Self {
            consensus: builder.channel(consensus)?.split(),
            proposal: builder.channel(proposal)?.split(),
            sync: builder.channel(sync)?.split(),
        })
    }
}

/// A running validator. Dropping it does not stop it: call
/// [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct ValidatorHandle {
    /// What it decided.
    pub decisions: Decisions,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl ValidatorHandle {
    /// Stops the validator and waits for its task.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

/// Starts a validator on `router` with validator key `key` (32 secret
/// bytes) in `validators`, from height 1. The router must have been built
/// with `channels` declared.
pub fn spawn_validator(
    router: RouterHandle,
    channels: ConsensusChannels,
    key: [u8; 32],
    validators: ValidatorSet,
    config: ConsensusConfig,
) -> ValidatorHandle {
    let signer = Signer::new(PrivateKey::from(key));
    let address = Address::of(&signer.public_key());
    let decisions = Decisions::default();
    let cancel = CancellationToken::new();
    let params = Params {
        address,
        threshold_params: ThresholdParams::default(),
        value_payload: ValuePayload::ProposalAndParts,
        enabled: true,
    };
    let state = State::new(Ctx, Height(1), validators.clone(), params, 1024, 256);
    let host = Host {
        io: Io {
            me: address,
            signer,
            validators,
            config: config.clone(),
            outbox: Vec::new(),
            inputs: VecDeque::new(),
            timers: DelayQueue::new(),
            timer_keys: HashMap::new(),
            store: BlockStore::new(config.keep_decided),
            decisions: decisions.clone(),
            first_seen: BTreeMap::new(),
            preverified: HashSet::new(),
            sync_pending: None,
        },
        state,
        assembler: Assembler::new(config.max_block_size),
        peer_tips: HashMap::new(),
        height_since: Instant::now(),
        channels,
        updates: router.subscribe_peer_updates(),
    };
    let span = tracing::info_span!("validator", %address);
    let task = tokio::spawn(host.run(cancel.clone()).instrument(span));
    ValidatorHandle {
        decisions,
        cancel,
        task,
    }
}

/// What the effect handler asks the loop to send.
enum Out {
    Broadcast(ConsensusMessage),
    Parts(Vec<BlockPartMessage>),
    Sync(SyncMessage),
    SyncTo(NodeId, SyncMessage),
    Report(PeerError),
}

/// Everything the effect handler touches besides the core's state.
struct Io {
    me: Address,
    signer: Signer,
    validators: ValidatorSet,
    config: ConsensusConfig,
    outbox: Vec<Out>,
    /// Inputs the effects produced, fed once the current one is done.
    inputs: VecDeque<Input<Ctx>>,
    timers: DelayQueue<Timeout>,
    timer_keys: HashMap<Timeout, delay_queue::Key>,
    store: BlockStore,
    decisions: Decisions,
    /// When each height's first proposal part (or our proposal) was seen.
    first_seen: BTreeMap<Height, Instant>,
    /// Signatures checked on arrival, so the core's check is free.
    preverified: HashSet<[u8; 64]>,
    /// The sync request in flight: whom, which height, since when.
    sync_pending: Option<(NodeId, Height, Instant)>,
}

fn peer_id(node: NodeId) -> PeerId {
    // An identity multihash of the node id: code 0, length 20.
    let mut bytes = vec![0, 20];
    bytes.extend_from_slice(node.as_bytes());
    PeerId::from_bytes(&bytes).unwrap_or_else(|_| unreachable!("20 bytes fit an identity hash"))
}

fn node_of(peer: PeerId) -> Option<NodeId> {
    let bytes = peer.to_bytes();
    let id: [u8; 20] = bytes.get(2..)?.try_into().ok()?;
    Some(NodeId::from_bytes(id))
}

fn reactor_error(peer: NodeId, channel: ChannelId, what: impl std::fmt::Display) -> PeerError {
    PeerError::new(
        peer,
        Severity::Minor,
        PeerErrorKind::reactor(channel, what.to_string()),
    )
}

impl Io {
    fn duration_for(&self, timeout: Timeout) -> Duration {
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

    fn handle(&mut self, effect: Effect<Ctx>) -> Result<Resume<Ctx>, Infallible> {
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

    fn part_size(&self) -> usize {
        self.config.part_size.max(1024)
    }

    fn decided(&mut self, certificate: malachite_types::CommitCertificate<Ctx>) {
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
    fn synced_value(&mut self, response: ValueResponse<Ctx>, proposer: Address) {
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

struct Host {
    io: Io,
    state: State<Ctx>,
    assembler: Assembler,
    /// Each peer's last decided height, from its status.
    peer_tips: HashMap<NodeId, u64>,
    /// When the current height began, to tell a lag from a race.
    height_since: Instant,
    channels: ConsensusChannels,
    updates: tokio::sync::broadcast::Receiver<PeerUpdate>,
}

impl Host {
    async fn run(mut self, cancel: CancellationToken) {
        self.feed(Input::StartHeight(
            Height(1),
            self.io.validators.clone(),
            false,
            None,
            VoteExtensionPolicy::Disabled,
        ));
        let mut status = tokio::time::interval(self.io.config.status_interval);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.flush().await.is_err() {
                break;
            }
            let height = self.state.height();
            tokio::select! {
                () = cancel.cancelled() => break,
                Some(expired) = std::future::poll_fn(|cx| self.io.timers.poll_expired(cx)) => {
                    let timeout = expired.into_inner();
                    self.io.timer_keys.remove(&timeout);
                    self.feed(Input::TimeoutElapsed(timeout));
                }
                message = self.channels.consensus.1.recv() => match message {
                    Some(e) => self.on_consensus(e.peer, e.message),
                    None => break,
                },
                part = self.channels.proposal.1.recv() => match part {
                    Some(e) => self.on_part(e.peer, e.message),
                    None => break,
                },
                message = self.channels.sync.1.recv() => match message {
                    Some(e) => self.on_sync(e.peer, e.message),
                    None => break,
                },
                update = self.updates.recv() => {
                    if !self.on_update(update) {
                        break;
                    }
                }
                _ = status.tick() => {
                    let tip = self.io.store.tip().0;
                    self.io.outbox.push(Out::Sync(SyncMessage {
                        kind: Some(sync_message::Kind::Status(tip)),
                    }));
                }
            }
            if self.state.height() != height {
                self.height_since = Instant::now();
            }
            self.maybe_request_sync();
        }
    }

    /// Feeds `input` and every input its effects produce to the core.
    fn feed(&mut self, input: Input<Ctx>) {
        let mut next = Some(input);
        while let Some(input) = next {
            let io = &mut self.io;
            let result: Result<(), malachite_consensus::Error<Ctx>> = malachite_consensus::process!(
                input: input,
                state: &mut self.state,
                metrics: &(),
                with: effect => io.handle(effect)
            );
            if let Err(error) = result {
                warn!(%error, "consensus refused an input");
            }
            next = self.io.inputs.pop_front();
        }
    }

    /// Sends what the effects asked for. Sends never wait for a peer (the
    /// channels drop instead); only a stopped router fails them.
    async fn flush(&mut self) -> Result<(), SendError> {
        for out in std::mem::take(&mut self.io.outbox) {
            match out {
                Out::Broadcast(m) => self.channels.consensus.0.broadcast(m).await?,
                Out::Parts(parts) => {
                    for part in parts {
                        self.channels.proposal.0.broadcast(part).await?;
                    }
                }
                Out::Sync(m) => self.channels.sync.0.broadcast(m).await?,
                Out::SyncTo(peer, message) => {
                    self.channels
                        .sync
                        .0
                        .send(Envelope { peer, message })
                        .await?
                }
                Out::Report(e) => self.channels.consensus.0.report(e).await?,
            }
        }
        Ok(())
    }

    fn report(&mut self, peer: NodeId, channel: ChannelId, what: impl std::fmt::Display) {
        self.io
            .outbox
            .push(Out::Report(reactor_error(peer, channel, what)));
    }

    fn on_consensus(&mut self, peer: NodeId, message: ConsensusMessage) {
        let decoded = match decode_consensus(&message) {
            Ok(d) => d,
            Err(e) => return self.report(peer, CONSENSUS_CHANNEL, e),
        };
        let input = match decoded {
            Decoded::Vote(v) => {
                let msg = malachite_consensus::ConsensusMsg::Vote(v.message.clone());
                if let Err(what) = self.check_signed(&msg, &v.signature, &v.message.validator) {
                    return self.report(peer, CONSENSUS_CHANNEL, what);
                }
                Input::Vote(v)
            }
            Decoded::Proposal(p) => {
                let msg = malachite_consensus::ConsensusMsg::Proposal(p.message.clone());
                if let Err(what) = self.check_signed(&msg, &p.signature, &p.message.proposer) {
                    return self.report(peer, CONSENSUS_CHANNEL, what);
                }
                Input::Proposal(p)
            }
            Decoded::Polka(c) => Input::PolkaCertificate(c),
            Decoded::Round(c) => Input::RoundCertificate(c),
        };
        self.feed(input);
    }

    /// Checks a vote's or proposal's signer and signature on arrival, so a
    /// peer that sends forgeries is reported (the core would only drop
    /// them) and the core's own check of the same signature is free.
    fn check_signed(
        &mut self,
        msg: &malachite_consensus::ConsensusMsg<Ctx>,
        signature: &malachite_ed25519::Signature,
        signer: &Address,
    ) -> Result<(), &'static str> {
        let Some(validator) = self.io.validators.get_by_address(signer) else {
            return Err("a message signed by an unknown validator");
        };
        if !signing::verify(msg, signature, &validator.public_key) {
            return Err("a message with a bad signature");
        }
        self.io.preverified.insert(signature.to_bytes());
        Ok(())
    }

    fn on_part(&mut self, peer: NodeId, part: BlockPartMessage) {
        let Assembled { value, bytes } = match self.assembler.push(peer, part) {
            Ok(Some(block)) => block,
            Ok(None) => return,
            Err(e) => return self.report(peer, PROPOSAL_CHANNEL, e),
        };
        if value.height < self.state.height()
            || !self.io.store.propose(value.height, value.value, bytes)
        {
            return;
        }
        self.io
            .first_seen
            .entry(value.height)
            .or_insert_with(Instant::now);
        self.feed(Input::ProposedValue(value, ValueOrigin::Consensus));
    }

    fn on_sync(&mut self, peer: NodeId, message: SyncMessage) {
        match message.kind {
            Some(sync_message::Kind::Status(tip)) => {
                self.peer_tips.insert(peer, tip);
            }
            Some(sync_message::Kind::Request(height)) => {
                if let Some((block, certificate)) = self.io.store.decided(Height(height)) {
                    let response = SyncResponse {
                        block: block.clone(),
                        certificate: Some(encode_commit(certificate)),
                    };
                    self.io.outbox.push(Out::SyncTo(
                        peer,
                        SyncMessage {
                            kind: Some(sync_message::Kind::Response(response)),
                        },
                    ));
                }
            }
            Some(sync_message::Kind::Response(response)) => self.on_sync_response(peer, response),
            None => self.report(peer, SYNC_CHANNEL, "a sync message without a kind"),
        }
    }

    fn on_sync_response(&mut self, peer: NodeId, response: SyncResponse) {
        let asked = self
            .io
            .sync_pending
            .is_some_and(|(whom, height, _)| whom == peer && height == self.state.height());
        if !asked {
            // Late (another peer answered) or unsolicited: nothing to do.
            return;
        }
        let Some(certificate) = response.certificate.as_ref() else {
            self.io.sync_pending = None;
            return self.report(peer, SYNC_CHANNEL, "a sync response without a certificate");
        };
        let certificate = match decode_commit(certificate) {
            Ok(c) if c.height == self.state.height() => c,
            Ok(_) => {
                self.io.sync_pending = None;
                return self.report(peer, SYNC_CHANNEL, "a sync response for another height");
            }
            Err(e) => {
                self.io.sync_pending = None;
                return self.report(peer, SYNC_CHANNEL, e);
            }
        };
        let extended = ExtendedCommitCertificate {
            height: certificate.height,
            round: certificate.round,
            value_id: certificate.value_id,
            commit_signatures: certificate
                .commit_signatures
                .into_iter()
                .map(|s| ExtendedCommitSignature {
                    address: s.address,
                    signature: s.signature,
                    extension: None,
                })
                .collect(),
        };
        self.feed(Input::SyncValueResponse(ValueResponse::new(
            peer_id(peer),
            response.block,
            extended,
        )));
        // A response the core could not use leaves the request to time out.
    }

    /// Asks a peer for the current height's block once a peer has decided
    /// it and we have not: at once if the peer is two heights ahead, after
    /// `sync_timeout` if it is one ahead (it may only have decided first).
    fn maybe_request_sync(&mut self) {
        let height = self.state.height();
        let timeout = self.io.config.sync_timeout;
        if let Some((_, asked, since)) = self.io.sync_pending {
            if asked == height && since.elapsed() < timeout {
                return;
            }
            self.io.sync_pending = None;
        }
        let lagging = self.height_since.elapsed() >= timeout;
        let Some((&peer, _)) = self
            .peer_tips
            .iter()
            .filter(|(_, &tip)| tip > height.0 || (tip == height.0 && lagging))
            .max_by_key(|(_, &tip)| tip)
        else {
            return;
        };
        debug!(%height, %peer, "asking for a decided block");
        self.io.sync_pending = Some((peer, height, Instant::now()));
        self.io.outbox.push(Out::SyncTo(
            peer,
            SyncMessage {
                kind: Some(sync_message::Kind::Request(height.0)),
            },
        ));
    }

    /// Follows peers coming and going; false once the router has stopped.
    fn on_update(
        &mut self,
        update: Result<PeerUpdate, tokio::sync::broadcast::error::RecvError>,
    ) -> bool {
        use tokio::sync::broadcast::error::RecvError;
        match update {
            Ok(PeerUpdate::Up { peer, .. }) => {
                // Tell a new peer where we are, so a restarted one learns
                // at once what to catch up on.
                let tip = self.io.store.tip().0;
                self.io.outbox.push(Out::SyncTo(
                    peer,
                    SyncMessage {
                        kind: Some(sync_message::Kind::Status(tip)),
                    },
                ));
            }
            Ok(PeerUpdate::Down { peer }) => {
                self.assembler.forget(&peer);
                self.peer_tips.remove(&peer);
            }
            Ok(_) => {}
            // Missed updates only delay a status; the interval repeats it.
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests;
