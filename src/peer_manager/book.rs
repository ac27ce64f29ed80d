//! The address book: adding addresses, what may be advertised, inactive
//! peers, scores, and pruning the store to `max_peers`.

use std::time::Duration;

use rand::seq::SliceRandom;

use super::peer::{KnownAddress, Peer};
use super::score::PeerScore;
use super::{AddError, PeerManager, MAX_ADDRESSES_PER_PEER};
use crate::address::PeerAddress;
use crate::identity::NodeId;
use crate::peer_store::AddressRecord;

impl PeerManager {
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
        let added = self.insert_address(address.clone());
        // A peer new to the book is placed even without a usable address.
        self.reindex(id);
        if !added {
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
        self.advertise_matching(peer, limit, |_| true)
    }

    /// As [`advertise`](Self::advertise), of the addresses `keep` accepts
    /// (those the asking peer can dial).
    pub fn advertise_matching(
        &mut self,
        peer: NodeId,
        limit: usize,
        keep: impl Fn(&PeerAddress) -> bool,
    ) -> Vec<PeerAddress> {
        let mut out = Vec::with_capacity(limit.min(64));
        if limit == 0 {
            return out;
        }
        if let Some(address) = self.options.self_address.as_ref().filter(|a| keep(a)) {
            out.push(address.clone());
        }
        let mut ranked: Vec<(PeerScore, NodeId)> = self
            .index
            .ranked()
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
            for a in p.addresses.iter().filter(|a| keep(&a.record.address)) {
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
        self.reindex(peer);
        true
    }

    /// Changes the earned score of `peer` by `delta` (negative for
    /// misbehaviour). Fixed and persistent scores are unaffected.
    pub fn adjust_score(&mut self, peer: NodeId, delta: i16) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.earned = p.earned.saturating_add(i64::from(delta));
            self.reindex(peer);
        }
    }

    pub(super) fn peer_entry(&mut self, id: NodeId) -> &mut Peer {
        // The caller reindexes once it has filled the entry in.
        if !self.peers.contains_key(&id) {
            self.dirty.insert(id);
            self.removed.remove(&id);
        }
        self.peers.entry(id).or_insert_with(|| Peer::new(id))
    }

    /// Adds `address` to its (existing) peer. Returns whether it was added.
    /// A full list makes room by dropping its most-failed address, if any
    /// address has failed.
    pub(super) fn insert_address(&mut self, address: PeerAddress) -> bool {
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
        self.reindex(id);
        true
    }

    /// Removes the lowest-ranked peers that are neither connected, dialing
    /// nor persistent until the store fits `max_peers`.
    pub(super) fn prune(&mut self) {
        let max = self.options.max_peers;
        if max == 0 || self.peers.len() <= max {
            return;
        }
        let excess = self.peers.len() - max;
        let doomed: Vec<NodeId> = self
            .index
            .ranked()
            .rev()
            .filter(|id| {
                !self.connected.contains_key(id)
                    && !self.dialing.contains(id)
                    && !self.persistent.contains(id)
            })
            .take(excess)
            .copied()
            .collect();
        for id in doomed {
            self.peers.remove(&id);
            self.dirty.remove(&id);
            self.removed.insert(id);
            self.reindex(id);
        }
    }
}
