//! The peer manager: a synchronous state machine deciding whom to dial,
//! whom to accept and whom to evict.

mod options;
mod peer;
mod score;

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

pub use options::{OptionsError, PeerManagerOptions};
pub use score::PeerScore;

use self::peer::{KnownAddress, Peer};
use crate::address::PeerAddress;
use crate::channel::ChannelId;
use crate::identity::NodeId;
use crate::peer_store::{AddressRecord, LoadedPeers, PeerStore, StoreBatch, StoreError};

/// The most addresses kept per peer: a hostile peer-exchange partner cannot
/// grow one peer's entry without bound.
pub const MAX_ADDRESSES_PER_PEER: usize = 16;

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
    Up {
        /// The peer.
        peer: NodeId,
        /// Its channels.
        channels: Vec<ChannelId>,
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
    /// Peer ids by rank, best first; `None` when anything that affects the
    /// ranking changed. Rebuilt lazily by `ranked`.
    ranked: Option<Arc<[NodeId]>>,
    /// Dials in progress. `dial_next` inserts; `dialed`, `dial_failed` remove.
    dialing: HashSet<NodeId>,
    /// Upgrade reservations, victim → candidate being dialed. `dial_next`
    /// inserts; `dialed`, `dial_failed` and the victim's `disconnected`
    /// remove.
    upgrading: HashMap<NodeId, NodeId>,
    /// Admitted connections. `dialed`, `accepted` insert; `disconnected`
    /// removes.
    connected: HashMap<NodeId, Direction>,
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
            ranked: None,
            dialing: HashSet::new(),
            upgrading: HashMap::new(),
            connected: HashMap::new(),
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
        self.ranked().to_vec()
    }

    /// Every known peer with its score, best-ranked first.
    pub fn scores(&mut self) -> Vec<(NodeId, PeerScore)> {
        self.ranked()
            .iter()
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

    /// Whether the limited connection slots are all taken.
    pub fn is_full(&self) -> bool {
        self.options.max_connected > 0 && self.limited_connected() >= self.options.max_connected
    }

    // ----- Outbound ----------------------------------------------------------

    /// The next address to dial, if any is due now and a slot is free (or a
    /// lower-scored peer can be replaced). The peer is then `Dialing` until
    /// [`dialed`](Self::dialed) or [`dial_failed`](Self::dial_failed).
    pub fn dial_next(&mut self, now: SystemTime) -> Option<PeerAddress> {
        let ranked = self.ranked();
        let room = self.dial_room();
        for id in ranked.iter() {
            if room.none_further(self, id) {
                break;
            }
            let Some((due, index)) = self.dial_time(now, id) else {
                continue;
            };
            if due > now || !room.allows(self, id) {
                continue;
            }
            if self.needs_upgrade(id) {
                let Some(victim) = self.upgrade_victim(self.score_of(id)) else {
                    continue;
                };
                self.upgrading.insert(victim, *id);
            }
            self.dialing.insert(*id);
            return self
                .peers
                .get(id)
                .map(|p| p.addresses[index].record.address.clone());
        }
        None
    }

    /// Reports a failed dial of `address`: its retry delay grows and any
    /// upgrade reservation is released.
    pub fn dial_failed(&mut self, now: SystemTime, address: &PeerAddress) {
        let id = address.node_id();
        self.dialing.remove(&id);
        self.upgrading.retain(|_, candidate| *candidate != id);
        let jitter = self.draw_jitter();
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if let Some(known) = peer.address_mut(address) {
            known.record.last_dial_failure = Some(now);
            known.record.dial_failures = known.record.dial_failures.saturating_add(1);
            known.jitter = jitter;
            self.dirty.insert(id);
            self.ranked = None;
        }
    }

    /// Reports a dial that ended without saying anything about the address
    /// (e.g. a simultaneous dial settled in favour of the other
    /// connection): the peer is no longer dialing and any upgrade
    /// reservation is released, with no retry penalty.
    pub fn dial_cancelled(&mut self, address: &PeerAddress) {
        let id = address.node_id();
        self.dialing.remove(&id);
        self.upgrading.retain(|_, candidate| *candidate != id);
    }

    /// Reports a successful dial and handshake of `address`; on `Ok` the peer
    /// is connected. When this fills the last slot through an upgrade, a
    /// lower-scored peer is marked for eviction.
    pub fn dialed(&mut self, now: SystemTime, address: &PeerAddress) -> Result<(), AdmitError> {
        let id = address.node_id();
        self.dialing.remove(&id);
        let reserved = self
            .upgrading
            .iter()
            .find(|(_, candidate)| **candidate == id)
            .map(|(victim, _)| *victim);
        if let Some(victim) = reserved {
            self.upgrading.remove(&victim);
        }
        if id == self.self_id {
            return Err(AdmitError::SelfConnection);
        }
        if self.connected.contains_key(&id) {
            return Err(AdmitError::AlreadyConnected(id));
        }
        let limited = self.is_limited(&id);
        if limited && self.options.max_connected > 0 {
            let ceiling = self.options.max_connected + self.options.max_connected_upgrade;
            // The peer no longer counts as dialing: this is the room the
            // others leave, which also covers dials the manager did not
            // hand out.
            if self.limited_occupied() >= ceiling {
                return Err(AdmitError::Full);
            }
            if self.is_full() && reserved.is_none() {
                return Err(AdmitError::Full);
            }
        }
        self.peer_entry(id);
        self.insert_address(address.clone());
        let peer = self.peer_entry(id);
        if let Some(known) = peer.address_mut(address) {
            known.record.last_dial_success = Some(now);
            known.record.dial_failures = 0;
            known.jitter = Duration::ZERO;
        }
        peer.last_connected = Some(now);
        peer.inactive = false;
        self.dirty.insert(id);
        self.ranked = None;
        if let Some(victim) = reserved {
            if limited && self.is_full() {
                // A peer scored even lower may have connected since the
                // reservation; prefer evicting that one.
                let victim = self.upgrade_victim(self.score_of(&id)).unwrap_or(victim);
                self.mark_for_eviction(victim);
            }
        }
        self.connected.insert(id, Direction::Outbound);
        self.prune();
        Ok(())
    }

    // ----- Inbound -----------------------------------------------------------

    /// Decides on an inbound connection from `peer` (after its handshake);
    /// on `Ok` the peer is connected. When full, a lower-scored peer is
    /// marked for eviction to make room, or the connection is refused.
    pub fn accepted(&mut self, now: SystemTime, peer: NodeId) -> Result<(), AdmitError> {
        if peer == self.self_id {
            return Err(AdmitError::SelfConnection);
        }
        if self.connected.contains_key(&peer) {
            return Err(AdmitError::AlreadyConnected(peer));
        }
        // A peer we are dialing as an upgrade may connect inbound first:
        // its reservation (and its victim) is then used by this connection.
        let reserved = self
            .upgrading
            .iter()
            .find(|(_, candidate)| **candidate == peer)
            .map(|(victim, _)| *victim);
        let mut victim = None;
        if self.is_limited(&peer) && self.options.max_connected > 0 {
            let ceiling = self.options.max_connected + self.options.max_connected_upgrade;
            let occupied = self.limited_occupied() - usize::from(self.dialing.contains(&peer));
            if occupied >= ceiling {
                return Err(AdmitError::Full);
            }
            if self.is_full() {
                let score = self.score_of(&peer);
                // A peer scored even lower than the reserved victim is
                // preferred, as in `dialed`.
                victim = Some(
                    self.upgrade_victim(score)
                        .or(reserved)
                        .ok_or(AdmitError::Full)?,
                );
            }
        }
        if let Some(reserved) = reserved {
            self.upgrading.remove(&reserved);
        }
        let entry = self.peer_entry(peer);
        entry.last_connected = Some(now);
        entry.inactive = false;
        self.dirty.insert(peer);
        self.ranked = None;
        self.connected.insert(peer, Direction::Inbound);
        if let Some(victim) = victim {
            self.mark_for_eviction(victim);
        }
        self.prune();
        Ok(())
    }

    // ----- Both directions -----------------------------------------------------

    /// Reports that a connected peer finished its handshake and may be used;
    /// queues [`PeerUpdate::Up`]. Ignored for a peer that is not connected.
    pub fn ready(&mut self, peer: NodeId, channels: Vec<ChannelId>) {
        if self.connected.contains_key(&peer) && self.ready.insert(peer) {
            self.updates.push_back(PeerUpdate::Up { peer, channels });
        }
    }

    /// Reports that a connection ended; queues [`PeerUpdate::Down`] if the
    /// peer was ready. The peer is not redialed within the disconnect
    /// cooldown.
    pub fn disconnected(&mut self, now: SystemTime, peer: NodeId) {
        let was_connected = self.connected.remove(&peer).is_some();
        let was_ready = self.ready.remove(&peer);
        self.evict.remove(&peer);
        self.evicting.remove(&peer);
        self.upgrading.remove(&peer);
        if was_connected {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.last_disconnected = Some(now);
            }
            self.ranked = None;
        }
        if was_ready {
            self.updates.push_back(PeerUpdate::Down { peer });
        }
    }

    /// Reports a fatal error of a connected peer: it is marked for eviction.
    pub fn errored(&mut self, peer: NodeId) {
        self.mark_for_eviction(peer);
    }

    /// The next connected peer to disconnect: peers marked for eviction
    /// first (lowest-ranked first), then the lowest-ranked peers above
    /// `max_connected`. The peer stays connected until
    /// [`disconnected`](Self::disconnected).
    pub fn evict_next(&mut self) -> Option<NodeId> {
        let ranked = self.ranked();
        let lowest =
            |pred: &dyn Fn(&NodeId) -> bool| ranked.iter().rev().find(|id| pred(id)).copied();
        let chosen = if self.evict.is_empty() {
            if !self.over_capacity() {
                return None;
            }
            lowest(&|id| {
                self.connected.contains_key(id)
                    && !self.evicting.contains(id)
                    && self.is_limited(id)
            })
        } else {
            lowest(&|id| self.evict.contains(id))
        };
        let chosen = chosen?;
        self.evict.remove(&chosen);
        self.evicting.insert(chosen);
        Some(chosen)
    }

    // ----- Knowledge -------------------------------------------------------------

    /// Adds an address (from configuration or peer exchange). Returns whether
    /// it is new and kept: a known address, an inactive peer, a full address
    /// list or a store full of better peers all give `false`.
    pub fn add(&mut self, address: PeerAddress) -> Result<bool, AddError> {
        let id = address.node_id();
        if id == self.self_id {
            return Err(AddError::SelfAddress);
        }
        if self.is_inactive(id) {
            return Ok(false);
        }
        self.peer_entry(id);
        if !self.insert_address(address.clone()) {
            return Ok(false);
        }
        self.prune();
        Ok(self.addresses(id).contains(&address))
    }

    /// Up to `limit` addresses to tell `peer` about: our own address first
    /// (when configured), then addresses of better-ranked peers first (ties
    /// shuffled). Never the asking peer's own, never private or inactive
    /// peers.
    pub fn advertise(&mut self, peer: NodeId, limit: usize) -> Vec<PeerAddress> {
        let mut out = Vec::with_capacity(limit.min(64));
        if limit == 0 {
            return out;
        }
        if let Some(address) = &self.options.self_address {
            out.push(address.clone());
        }
        let mut ranked: Vec<(PeerScore, NodeId)> = self
            .ranked()
            .iter()
            .map(|id| (self.score_of(id), *id))
            .collect();
        // Shuffle within equal scores so that nodes asking the same peer
        // do not all learn the same few addresses.
        for group in ranked.chunk_by_mut(|a, b| a.0 == b.0) {
            group.shuffle(&mut self.rng);
        }
        for (_, id) in ranked {
            if out.len() >= limit {
                break;
            }
            if id == peer || self.options.private_peers.contains(&id) {
                continue;
            }
            let Some(p) = self.peers.get(&id) else {
                continue;
            };
            if p.inactive {
                continue;
            }
            for a in &p.addresses {
                if out.len() >= limit {
                    break;
                }
                out.push(a.record.address.clone());
            }
        }
        out.truncate(limit);
        out
    }

    /// Marks `peer` inactive (it belongs to another network): it is not
    /// dialed, and its addresses are not added, until it connects
    /// successfully again. Returns whether the peer was marked.
    ///
    /// Persistent and unconditional peers are never marked: the operator
    /// configured them, so they are retried on their normal backoff (a
    /// peer restarted with other channels or settings comes back).
    pub fn inactivate(&mut self, peer: NodeId) -> bool {
        if self.persistent.contains(&peer) || !self.is_limited(&peer) {
            return false;
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        p.inactive = true;
        self.dirty.insert(peer);
        true
    }

    /// Changes the earned score of `peer` by `delta` (negative for
    /// misbehaviour). Fixed and persistent scores are unaffected.
    pub fn adjust_score(&mut self, peer: NodeId, delta: i16) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.earned = p.earned.saturating_add(i64::from(delta));
            self.ranked = None;
        }
    }

    // ----- Driver plumbing ---------------------------------------------------------

    /// When the driver should next call [`dial_next`](Self::dial_next) or
    /// [`evict_next`](Self::evict_next): `now` if something is due, the
    /// earliest future retry or cooldown end otherwise, `None` when only a
    /// new event can make progress.
    pub fn next_wakeup(&mut self, now: SystemTime) -> Option<SystemTime> {
        if !self.evict.is_empty() || self.over_capacity() {
            return Some(now);
        }
        let ranked = self.ranked();
        let room = self.dial_room();
        ranked
            .iter()
            .take_while(|id| !room.none_further(self, id))
            .filter_map(|id| {
                let (due, _) = self.dial_time(now, id)?;
                room.allows(self, id).then_some(due)
            })
            .min()
    }

    /// The next queued peer update, oldest first.
    pub fn take_update(&mut self) -> Option<PeerUpdate> {
        self.updates.pop_front()
    }

    /// Writes every change since the last successful flush to the store, in
    /// one atomic batch. On error nothing is lost: the changes stay pending
    /// and the next flush retries them.
    ///
    /// Without a store of its own ([`from_loaded`](Self::from_loaded)) this
    /// writes nothing: take the changes with
    /// [`take_store_batch`](Self::take_store_batch).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.dirty.is_empty() && self.removed.is_empty() {
            return Ok(());
        }
        let batch = self.store_batch();
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        store.write(&batch.records, &batch.removed)?;
        self.dirty.clear();
        self.removed.clear();
        Ok(())
    }

    /// Every change since the last batch was taken: records of peers that
    /// changed, ids of peers removed. `None` when nothing changed. The
    /// caller must write it (retrying on failure); the manager forgets it.
    pub fn take_store_batch(&mut self) -> Option<StoreBatch> {
        if self.dirty.is_empty() && self.removed.is_empty() {
            return None;
        }
        let batch = self.store_batch();
        self.dirty.clear();
        self.removed.clear();
        Some(batch)
    }

    fn store_batch(&self) -> StoreBatch {
        let records = self
            .dirty
            .iter()
            .filter_map(|id| self.peers.get(id))
            .map(Peer::to_record)
            .collect();
        // A peer removed and known again is written, not deleted.
        let removed = self
            .removed
            .iter()
            .filter(|id| !self.peers.contains_key(id))
            .copied()
            .collect();
        StoreBatch { records, removed }
    }

    // ----- Internals ---------------------------------------------------------------

    fn ranked(&mut self) -> Arc<[NodeId]> {
        if let Some(ranked) = &self.ranked {
            return ranked.clone();
        }
        let ranked = self.rank_snapshot();
        self.ranked = Some(ranked.clone());
        ranked
    }

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

    fn is_limited(&self, id: &NodeId) -> bool {
        !self.options.unconditional_peers.contains(id)
    }

    fn limited_connected(&self) -> usize {
        self.connected
            .keys()
            .filter(|id| self.is_limited(id))
            .count()
    }

    /// Limited peers connected or being dialed, each counted once.
    fn limited_occupied(&self) -> usize {
        let dialing_only = self
            .dialing
            .iter()
            .filter(|id| !self.connected.contains_key(id) && self.is_limited(id))
            .count();
        self.limited_connected() + dialing_only
    }

    fn limited_outgoing(&self) -> usize {
        let outgoing = self
            .connected
            .iter()
            .filter(|(id, d)| **d == Direction::Outbound && self.is_limited(id))
            .count();
        let dialing = self
            .dialing
            .iter()
            .filter(|id| !self.connected.contains_key(id) && self.is_limited(id))
            .count();
        outgoing + dialing
    }

    /// Whether a limited peer may be dialed at all (connection and
    /// outgoing limits), and the lowest score an upgrade could replace:
    /// computed once per `dial_next`/`next_wakeup`, so that ranking every
    /// known peer costs O(1) each rather than a walk of the connections.
    fn dial_room(&self) -> DialRoom {
        let o = &self.options;
        let over_ceiling = o.max_connected > 0
            && self.limited_occupied() >= o.max_connected + o.max_connected_upgrade;
        let over_outgoing = o.max_outgoing > 0 && self.limited_outgoing() >= o.max_outgoing;
        let full = self.is_full();
        DialRoom {
            limited: !over_ceiling && !over_outgoing,
            full,
            lowest_victim: if full {
                self.lowest_victim_score()
            } else {
                None
            },
        }
    }

    /// The score of the peer [`upgrade_victim`](Self::upgrade_victim) would
    /// pick for a candidate of any higher score: the lowest-ranked usable
    /// connected peer.
    fn lowest_victim_score(&self) -> Option<PeerScore> {
        let ranked = self.ranked.clone().unwrap_or_else(|| self.rank_snapshot());
        ranked
            .iter()
            .rev()
            .find(|id| self.usable_victim(id))
            .map(|id| self.score_of(id))
    }

    fn usable_victim(&self, id: &NodeId) -> bool {
        self.connected.contains_key(id)
            && self.is_limited(id)
            && !self.evict.contains(id)
            && !self.evicting.contains(id)
            && !self.upgrading.contains_key(id)
    }

    fn needs_upgrade(&self, id: &NodeId) -> bool {
        self.is_limited(id) && self.is_full()
    }

    fn over_capacity(&self) -> bool {
        let evicting = self
            .evicting
            .iter()
            .filter(|id| self.is_limited(id))
            .count();
        self.options.max_connected > 0
            && self.limited_connected().saturating_sub(evicting) > self.options.max_connected
    }

    /// The lowest-ranked connected peer scored below `score` that is not
    /// already on its way out or reserved for another upgrade.
    fn upgrade_victim(&self, score: PeerScore) -> Option<NodeId> {
        let ranked = self.ranked.clone().unwrap_or_else(|| self.rank_snapshot());
        for id in ranked.iter().rev() {
            if self.score_of(id) >= score {
                return None;
            }
            if self.usable_victim(id) {
                return Some(*id);
            }
        }
        None
    }

    /// The ranking, computed afresh: score, then most recently connected,
    /// then id. `ranked` caches it; `&self` callers use it directly.
    fn rank_snapshot(&self) -> Arc<[NodeId]> {
        let mut ids: Vec<_> = self
            .peers
            .values()
            .map(|p| {
                (
                    Reverse(self.score_of(&p.id)),
                    Reverse(p.last_connected),
                    p.id,
                )
            })
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, _, id)| id).collect()
    }

    fn mark_for_eviction(&mut self, peer: NodeId) {
        if self.connected.contains_key(&peer) && !self.evicting.contains(&peer) {
            self.evict.insert(peer);
        }
    }

    /// When `id` could be dialed, and which of its addresses: `None` if it
    /// cannot be dialed without a new event (connected, dialing, inactive,
    /// no retriable address).
    fn dial_time(&self, now: SystemTime, id: &NodeId) -> Option<(SystemTime, usize)> {
        if *id == self.self_id || self.dialing.contains(id) || self.connected.contains_key(id) {
            return None;
        }
        let peer = self.peers.get(id)?;
        if peer.inactive {
            return None;
        }
        let cooldown_end = peer
            .last_disconnected
            .map_or(now, |t| t + self.options.disconnect_cooldown);
        let persistent = self.persistent.contains(id);
        let max_retry = if persistent && !self.options.max_retry_time_persistent.is_zero() {
            self.options.max_retry_time_persistent
        } else {
            self.options.max_retry_time
        };
        peer.addresses
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let delay = score::retry_delay(
                    a.record.dial_failures,
                    self.options.min_retry_time,
                    max_retry,
                    a.jitter,
                )?;
                let retry_at = a.record.last_dial_failure.map_or(now, |t| t + delay);
                Some((retry_at.max(cooldown_end).max(now), i))
            })
            // Earliest due first; among equals, the fewest failures, then the
            // order in which addresses were learned.
            .min_by_key(|&(due, i)| (due, peer.addresses[i].record.dial_failures, i))
    }

    fn draw_jitter(&mut self) -> Duration {
        let max = self.options.retry_time_jitter;
        if max.is_zero() {
            return Duration::ZERO;
        }
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.random_range(0..=nanos))
    }

    fn peer_entry(&mut self, id: NodeId) -> &mut Peer {
        if !self.peers.contains_key(&id) {
            self.ranked = None;
            self.dirty.insert(id);
            self.removed.remove(&id);
        }
        self.peers.entry(id).or_insert_with(|| Peer::new(id))
    }

    /// Adds `address` to its (existing) peer. Returns whether it was added.
    /// A full list makes room by dropping its most-failed address, if any
    /// address has failed.
    fn insert_address(&mut self, address: PeerAddress) -> bool {
        let id = address.node_id();
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        if peer.addresses.iter().any(|a| a.record.address == address) {
            return false;
        }
        if peer.addresses.len() >= MAX_ADDRESSES_PER_PEER {
            let worst = peer
                .addresses
                .iter()
                .enumerate()
                .filter(|(_, a)| a.record.dial_failures > 0)
                .max_by_key(|(_, a)| a.record.dial_failures)
                .map(|(i, _)| i);
            match worst {
                Some(i) => {
                    peer.addresses.remove(i);
                }
                None => return false,
            }
        }
        peer.addresses.push(KnownAddress {
            record: AddressRecord::new(address),
            jitter: Duration::ZERO,
        });
        self.dirty.insert(id);
        self.ranked = None;
        true
    }

    /// Removes the lowest-ranked peers that are neither connected, dialing
    /// nor persistent until the store fits `max_peers`.
    fn prune(&mut self) {
        let max = self.options.max_peers;
        if max == 0 || self.peers.len() <= max {
            return;
        }
        let ranked = self.ranked();
        for id in ranked.iter().rev() {
            if self.peers.len() <= max {
                break;
            }
            if self.connected.contains_key(id)
                || self.dialing.contains(id)
                || self.persistent.contains(id)
            {
                continue;
            }
            self.peers.remove(id);
            self.dirty.remove(id);
            self.removed.insert(*id);
        }
        self.ranked = None;
    }
}

/// What the limits allow a dial right now; see `PeerManager::dial_room`.
struct DialRoom {
    /// Limited peers may be dialed.
    limited: bool,
    /// The limited slots are full: a limited dial must be an upgrade.
    full: bool,
    /// The score an upgrade must beat, if any peer can be replaced.
    lowest_victim: Option<PeerScore>,
}

impl DialRoom {
    /// Whether no peer from `id` on down the ranking can be dialed: every
    /// peer is limited (no unconditional ones are configured) and either
    /// the limits forbid any dial or, the node being full, `id` and
    /// everyone ranked below it score no higher than the peer an upgrade
    /// would replace. A full node then stops its scan at once instead of
    /// walking every known peer on each event.
    fn none_further(&self, manager: &PeerManager, id: &NodeId) -> bool {
        if !manager.options.unconditional_peers.is_empty() {
            return false;
        }
        if !self.limited {
            return true;
        }
        self.full
            && self
                .lowest_victim
                .is_none_or(|victim| manager.score_of(id) <= victim)
    }

    /// Whether the limits allow dialing `id`.
    fn allows(&self, manager: &PeerManager, id: &NodeId) -> bool {
        if !manager.is_limited(id) {
            return true;
        }
        if !self.limited {
            return false;
        }
        !self.full
            || self
                .lowest_victim
                .is_some_and(|victim| victim < manager.score_of(id))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
