//! The peer manager: a synchronous state machine deciding whom to dial,
//! whom to accept and whom to evict.

mod admission;
mod book;
mod dial;
mod eviction;
mod index;
mod options;
mod peer;
mod persist;
mod score;

use std::collections::{HashMap, HashSet, VecDeque};

use rand::rngs::StdRng;
use rand::SeedableRng;

pub use options::{OptionsError, PeerManagerOptions};
pub use score::PeerScore;

use self::peer::Peer;
use crate::address::{PeerAddress, Protocol};
use crate::channel::ChannelId;
use crate::identity::NodeId;
use crate::peer_store::{LoadedPeers, PeerStore, StoreError};

/// The most addresses kept per peer: a hostile peer-exchange partner cannot
/// grow one peer's entry without bound.
pub const MAX_ADDRESSES_PER_PEER: usize = 16;

/// How long a transient visitor stays once it was given addresses.
pub(crate) const VISIT_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We dialed.
    Outbound,
    /// The peer dialed us.
    Inbound,
}

/// Where a peer stands, as [`PeerManager::status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerStatus {
    /// Not connected and not being dialed.
    Down,
    /// A dial is in progress.
    Dialing,
    /// Connected, not yet reported ready.
    Connected(Direction),
    /// Connected and ready: reactors may talk to it.
    Up(Direction),
}

/// A change in a peer's availability, for reactors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerUpdate {
    /// The peer is connected and ready, with the channels it serves.
    #[non_exhaustive]
    Up {
        /// The peer.
        peer: NodeId,
        /// Its channels.
        channels: Vec<ChannelId>,
        /// The transport of the connection: a reactor that speaks another
        /// network's dialect (PEX to CometBFT over MConnection) picks it by
        /// this.
        protocol: Protocol,
        /// Who dialed.
        direction: Direction,
    },
    /// The peer is gone.
    Down {
        /// The peer.
        peer: NodeId,
    },
}

/// Why a connection was not admitted by [`PeerManager::dialed`] or
/// [`PeerManager::accepted`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    /// The peer is this node.
    #[error("connection to self")]
    SelfConnection,
    /// The peer already has a connection.
    #[error("peer {0} is already connected")]
    AlreadyConnected(NodeId),
    /// Every slot is taken and no lower-scored peer can make room.
    #[error("already connected to the maximum number of peers")]
    Full,
}

/// Why [`PeerManager::add`] refused an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// The address is our own.
    #[error("cannot add our own address")]
    SelfAddress,
}

/// Why a [`PeerManager`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerManagerError {
    /// The options are invalid.
    #[error("invalid peer manager options: {0}")]
    Options(#[from] OptionsError),
    /// The store could not be loaded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Decides whom to dial, whom to accept and whom to evict.
///
/// It performs no IO and reads no clock: every call that depends on time
/// takes `now`, and randomness (retry jitter, advertisement shuffling) comes
/// from an RNG seeded at construction. A driver (the router) calls it as
/// events happen and performs the decisions it returns.
///
/// # Call protocol
///
/// - Outbound: [`dial_next`](Self::dial_next) returns an address, the driver
///   dials it and reports [`dialed`](Self::dialed) or
///   [`dial_failed`](Self::dial_failed); after the handshake it reports
///   [`ready`](Self::ready); when the connection ends,
///   [`disconnected`](Self::disconnected).
/// - Inbound: [`accepted`](Self::accepted) → [`ready`](Self::ready) →
///   [`disconnected`](Self::disconnected).
/// - Eviction: [`errored`](Self::errored) (or an upgrade admitted by
///   `dialed`/`accepted`) marks a peer; [`evict_next`](Self::evict_next)
///   returns it; the driver closes the connection and reports
///   [`disconnected`](Self::disconnected).
///
/// After handling events the driver asks [`next_wakeup`](Self::next_wakeup)
/// when to call `dial_next`/`evict_next` again, drains
/// [`take_update`](Self::take_update) into its (non-blocking) fan-out, and
/// calls [`flush`](Self::flush) to persist changes.
///
/// # Limits
///
/// Connected plus dialing peers never exceed `max_connected +
/// max_connected_upgrade`; outgoing connections plus dials never exceed
/// `max_outgoing`; there is at most one connection per peer, and never one to
/// ourselves. Unconditional peers are outside these counts.
pub struct PeerManager {
    self_id: NodeId,
    options: PeerManagerOptions,
    persistent: HashSet<NodeId>,
    /// `None` when the driver persists the batches itself
    /// ([`from_loaded`](Self::from_loaded) and
    /// [`take_store_batch`](Self::take_store_batch)).
    store: Option<Box<dyn PeerStore>>,
    rng: StdRng,
    /// Every known peer. Written by `add`, `dialed`, `accepted`,
    /// `dial_failed`, `disconnected`, `inactivate`, `adjust_score`; pruned
    /// by `prune`.
    peers: HashMap<NodeId, Peer>,
    /// Ordered views of `peers` (by rank, by due time, connected), kept in
    /// step by `reindex` after every change to a peer.
    index: index::PeerIndex,
    /// Dials in progress. `dial_next` inserts; `dialed`, `dial_failed` remove.
    dialing: HashSet<NodeId>,
    /// Upgrade reservations, victim → candidate being dialed. `dial_next`
    /// inserts; `dialed`, `dial_failed` and the victim's `disconnected`
    /// remove.
    upgrading: HashMap<NodeId, NodeId>,
    /// Admitted connections. `dialed`, `accepted` insert; `disconnected`
    /// removes.
    connected: HashMap<NodeId, Direction>,
    /// Peers admitted over the limits for peer exchange only, with the time
    /// they must leave. `accepted` inserts; `disconnected` removes.
    transient: HashMap<NodeId, std::time::SystemTime>,
    /// Peers we dialed that admitted us for a visit only.
    visits: HashSet<NodeId>,
    /// Connections reported ready. `ready` inserts; `disconnected` removes.
    ready: HashSet<NodeId>,
    /// Connected peers to evict. `errored`, `dialed`, `accepted` insert;
    /// `evict_next`, `disconnected` remove.
    evict: HashSet<NodeId>,
    /// Evictions handed to the driver. `evict_next` inserts; `disconnected`
    /// removes.
    evicting: HashSet<NodeId>,
    /// Peers changed since the last successful `flush`.
    dirty: HashSet<NodeId>,
    /// Peers removed since the last successful `flush`.
    removed: HashSet<NodeId>,
    /// Updates not yet taken by the driver; at most two per connection.
    updates: VecDeque<PeerUpdate>,
    corrupt_records: usize,
}

impl std::fmt::Debug for PeerManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerManager")
            .field("self_id", &self.self_id)
            .field("peers", &self.peers.len())
            .field("connected", &self.connected.len())
            .field("dialing", &self.dialing.len())
            .finish_non_exhaustive()
    }
}

impl PeerManager {
    /// Loads the store, drops our own id from it, adds the persistent peers
    /// and prunes the store to `max_peers`.
    ///
    /// [`flush`](Self::flush) then writes to `store` synchronously; a driver
    /// that must not block (the router) uses
    /// [`from_loaded`](Self::from_loaded) instead.
    pub fn new(
        self_id: NodeId,
        options: PeerManagerOptions,
        mut store: impl PeerStore + 'static,
        rng_seed: u64,
    ) -> Result<Self, PeerManagerError> {
        options.validate(self_id)?;
        let loaded = store.load()?;
        let mut manager = Self::from_loaded(self_id, options, loaded, rng_seed)?;
        manager.store = Some(Box::new(store));
        Ok(manager)
    }

    /// A manager over records already loaded from a store, which it does
    /// not own: persistence is an output, taken with
    /// [`take_store_batch`](Self::take_store_batch) and written by the
    /// driver (the router does so on a blocking thread, retrying failures).
    pub fn from_loaded(
        self_id: NodeId,
        options: PeerManagerOptions,
        loaded: LoadedPeers,
        rng_seed: u64,
    ) -> Result<Self, PeerManagerError> {
        options.validate(self_id)?;
        let mut manager = Self {
            self_id,
            persistent: options.persistent_ids(),
            options,
            store: None,
            rng: StdRng::seed_from_u64(rng_seed),
            peers: HashMap::new(),
            index: index::PeerIndex::default(),
            dialing: HashSet::new(),
            upgrading: HashMap::new(),
            connected: HashMap::new(),
            transient: HashMap::new(),
            visits: HashSet::new(),
            ready: HashSet::new(),
            evict: HashSet::new(),
            evicting: HashSet::new(),
            dirty: HashSet::new(),
            removed: HashSet::new(),
            updates: VecDeque::new(),
            corrupt_records: loaded.corrupt,
        };
        for record in loaded.peers {
            if record.node_id == self_id {
                manager.removed.insert(self_id);
                continue;
            }
            manager
                .peers
                .insert(record.node_id, Peer::from_record(record));
        }
        for address in manager.options.persistent_peers.clone() {
            let peer = manager.peer_entry(address.node_id());
            // A persistent peer is configured by the operator: trust that
            // over an earlier network mismatch.
            peer.inactive = false;
            manager.insert_address(address);
        }
        let ids: Vec<NodeId> = manager.peers.keys().copied().collect();
        for id in ids {
            manager.reindex(id);
        }
        manager.prune();
        Ok(manager)
    }

    /// Our node id.
    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    /// The options in force.
    pub fn options(&self) -> &PeerManagerOptions {
        &self.options
    }

    /// Records that failed to decode when the store was loaded.
    pub fn corrupt_records(&self) -> usize {
        self.corrupt_records
    }

    // ----- Queries ---------------------------------------------------------

    /// Every known peer, best-ranked first.
    pub fn peers(&mut self) -> Vec<NodeId> {
        self.index.ranked().copied().collect()
    }

    /// Every known peer with its score, best-ranked first.
    pub fn scores(&mut self) -> Vec<(NodeId, PeerScore)> {
        self.index
            .ranked()
            .map(|id| (*id, self.score_of(id)))
            .collect()
    }

    /// The score of `peer`, if known.
    pub fn score(&self, peer: NodeId) -> Option<PeerScore> {
        self.peers.contains_key(&peer).then(|| self.score_of(&peer))
    }

    /// The known addresses of `peer`.
    pub fn addresses(&self, peer: NodeId) -> Vec<PeerAddress> {
        self.peers.get(&peer).map_or_else(Vec::new, |p| {
            p.addresses
                .iter()
                .map(|a| a.record.address.clone())
                .collect()
        })
    }

    /// Where `peer` stands.
    pub fn status(&self, peer: NodeId) -> PeerStatus {
        match self.connected.get(&peer) {
            Some(&d) if self.ready.contains(&peer) => PeerStatus::Up(d),
            Some(&d) => PeerStatus::Connected(d),
            None if self.dialing.contains(&peer) => PeerStatus::Dialing,
            None => PeerStatus::Down,
        }
    }

    /// Whether `peer` is marked inactive.
    pub fn is_inactive(&self, peer: NodeId) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.inactive)
    }

    /// Number of known peers (the store's size).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Number of connected peers, unconditional ones included.
    pub fn connected_count(&self) -> usize {
        self.connected.len()
    }

    /// Connected peers holding no slot: visitors, and our visits to full
    /// nodes.
    pub fn transient_count(&self) -> usize {
        // Disjoint: our visits are outbound, visitors inbound.
        self.transient.len() + self.visits.len()
    }

    /// Whether the limited connection slots are all taken.
    pub fn is_full(&self) -> bool {
        self.options.max_connected > 0 && self.limited_connected() >= self.options.max_connected
    }

    // ----- Driver plumbing ---------------------------------------------------------

    /// The next queued peer update, oldest first.
    pub fn take_update(&mut self) -> Option<PeerUpdate> {
        self.updates.pop_front()
    }

    // ----- Internals ---------------------------------------------------------------

    fn score_of(&self, id: &NodeId) -> PeerScore {
        let (earned, failures) = self
            .peers
            .get(id)
            .map_or((0, 0), |p| (p.earned, p.dial_failures()));
        score::score(
            self.options.peer_scores.get(id).copied(),
            self.persistent.contains(id),
            earned,
            failures,
        )
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
