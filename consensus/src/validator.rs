//! A validator: its three channels, its configuration and its task. The
//! task is the host Malachite's core needs: `host` feeds the core the
//! messages, timeouts and blocks it needs, `effects` carries out what the
//! core asks for.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use malachite_consensus::{Params, State, ThresholdParams, ValuePayload};
use malachite_ed25519::PrivateKey;
use malachite_types::LinearTimeouts;
use p2p_router::{
    ChannelDescriptor, ChannelError, ChannelId, ChannelReceiver, ChannelSender, FullPolicy,
    RouterBuilder, RouterHandle,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;
use tracing::Instrument;

use crate::blocks::{Assembler, BlockStore};
use crate::codec::{BlockPartMessage, ConsensusMessage, SyncMessage};
use crate::context::{Address, Ctx, Height, ValidatorSet};
use crate::record::Decisions;
use crate::signing::Signer;

mod effects;
mod host;

use effects::Io;
use host::Host;

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

#[cfg(test)]
mod tests;
