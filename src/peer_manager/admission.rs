//! Admission: whether an inbound or dialed peer may connect, which
//! connected peer an upgrade replaces, and the connection limits.

use std::time::SystemTime;

use super::score::PeerScore;
use super::{AdmitError, Direction, PeerManager, PeerUpdate};
use crate::address::Protocol;
use crate::channel::ChannelId;
use crate::identity::NodeId;

/// A dialed connection the peer ends sooner than this was a visit.
const SHORT_VISIT: std::time::Duration = std::time::Duration::from_secs(3);

impl PeerManager {
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
        let mut transient = false;
        if self.is_limited(&peer) && self.options.max_connected > 0 {
            let ceiling = self.options.max_connected + self.options.max_connected_upgrade;
            let occupied = self.limited_occupied() - usize::from(self.dialing.contains(&peer));
            let room = if occupied >= ceiling {
                None
            } else if self.is_full() {
                // A peer scored even lower than the reserved victim is
                // preferred, as in `dialed`.
                self.upgrade_victim(self.score_of(&peer))
                    .or(reserved)
                    .map(Some)
            } else {
                Some(None)
            };
            match room {
                Some(v) => victim = v,
                None if self.transient.len() < self.options.max_transient => transient = true,
                None => return Err(AdmitError::Full),
            }
        }
        if transient {
            // No slot and no upgrade reservation: the peer only visits.
            self.transient
                .insert(peer, now + self.options.transient_time);
        } else if let Some(reserved) = reserved {
            self.upgrading.remove(&reserved);
        }
        let entry = self.peer_entry(peer);
        entry.last_connected = Some(now);
        entry.inactive = false;
        self.dirty.insert(peer);
        self.connected.insert(peer, Direction::Inbound);
        self.reindex(peer);
        if let Some(victim) = victim {
            self.mark_for_eviction(victim);
        }
        self.prune();
        Ok(())
    }

    /// Reports that a peer we dialed admitted us for a visit only
    /// ([`Admission::Visiting`](crate::transport::Admission::Visiting)).
    /// The visit keeps its slot here (were visits free, a node below its
    /// target would visit every full node it knows at once), but is not
    /// counted among the peers the node keeps
    /// ([`transient_count`](Self::transient_count)).
    pub fn visiting(&mut self, peer: NodeId) {
        if self.connected.get(&peer) == Some(&Direction::Outbound) {
            self.visits.insert(peer);
        }
    }

    /// Reports that a connected peer finished its handshake over
    /// `protocol` and may be used; queues [`PeerUpdate::Up`]. Ignored for a
    /// peer that is not connected.
    pub fn ready(&mut self, peer: NodeId, channels: Vec<ChannelId>, protocol: Protocol) {
        let Some(&direction) = self.connected.get(&peer) else {
            return;
        };
        if self.ready.insert(peer) {
            self.updates.push_back(PeerUpdate::Up {
                peer,
                channels,
                protocol,
                direction,
            });
        }
    }

    /// Reports that a connection ended; queues [`PeerUpdate::Down`] if the
    /// peer was ready. The peer is not redialed within the disconnect
    /// cooldown.
    pub fn disconnected(&mut self, now: SystemTime, peer: NodeId) {
        let direction = self.connected.remove(&peer);
        let was_connected = direction.is_some();
        self.transient.remove(&peer);
        self.visits.remove(&peer);
        if direction == Some(Direction::Outbound) {
            self.penalise_short_visit(now, peer);
        }
        let was_ready = self.ready.remove(&peer);
        self.evict.remove(&peer);
        self.evicting.remove(&peer);
        self.upgrading.remove(&peer);
        if was_connected {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.last_disconnected = Some(now);
            }
            self.reindex(peer);
        }
        if was_ready {
            self.updates.push_back(PeerUpdate::Down { peer });
        }
        // A departing visitor may leave the store above `max_peers`.
        self.prune();
    }

    /// The score of the peer [`upgrade_victim`](Self::upgrade_victim) would
    /// pick for a candidate of any higher score: the lowest-ranked usable
    /// connected peer.
    pub(super) fn lowest_victim_score(&self) -> Option<PeerScore> {
        self.index
            .connected()
            .rev()
            .find(|id| self.usable_victim(id))
            .map(|id| self.score_of(id))
    }

    pub(super) fn usable_victim(&self, id: &NodeId) -> bool {
        self.connected.contains_key(id)
            && self.is_limited(id)
            && !self.transient.contains_key(id)
            && !self.evict.contains(id)
            && !self.evicting.contains(id)
            && !self.upgrading.contains_key(id)
    }

    pub(super) fn needs_upgrade(&self, id: &NodeId) -> bool {
        self.is_limited(id) && self.is_full()
    }

    /// The lowest-ranked connected peer scored below `score` that is not
    /// already on its way out or reserved for another upgrade.
    pub(super) fn upgrade_victim(&self, score: PeerScore) -> Option<NodeId> {
        for id in self.index.connected().rev() {
            if self.score_of(id) >= score {
                return None;
            }
            if self.usable_victim(id) {
                return Some(*id);
            }
        }
        None
    }

    pub(super) fn is_limited(&self, id: &NodeId) -> bool {
        !self.options.unconditional_peers.contains(id)
    }

    /// Limited peers holding a slot (transient visitors hold none).
    pub(super) fn limited_connected(&self) -> usize {
        self.connected
            .keys()
            .filter(|id| self.is_limited(id) && !self.transient.contains_key(id))
            .count()
    }

    /// A connection we dialed that lasted clears the address's failures.
    /// One that ended within [`SHORT_VISIT`] (mostly a full node letting us
    /// visit, see `max_transient`; either side may have closed it) counts
    /// as a failed dial of the address we dialed, on top of earlier ones:
    /// it is retried later and ranked lower, so a node below its target
    /// turns to peers with room instead of visiting the same full ones
    /// again.
    fn penalise_short_visit(&mut self, now: SystemTime, peer: NodeId) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let short = p
            .last_connected
            .is_some_and(|since| now.duration_since(since).unwrap_or_default() < SHORT_VISIT);
        let dialed = p
            .addresses
            .iter()
            .filter(|a| a.record.last_dial_success.is_some())
            .max_by_key(|a| a.record.last_dial_success)
            .map(|a| a.record.address.clone());
        match (short, dialed) {
            (true, Some(address)) => self.record_dial_failure(now, &address),
            (false, Some(address)) => {
                if let Some(known) = self
                    .peers
                    .get_mut(&peer)
                    .and_then(|p| p.address_mut(&address))
                {
                    known.record.dial_failures = 0;
                    self.dirty.insert(peer);
                }
            }
            _ => {}
        }
    }

    /// Whether our dial of `id` counts against the limits: it does until
    /// the peer holds a slot by a connection (a visit holds none).
    fn dial_holds_a_slot(&self, id: &NodeId) -> bool {
        self.is_limited(id) && (!self.connected.contains_key(id) || self.transient.contains_key(id))
    }

    /// Whether `peer` is connected as a transient visitor.
    pub fn is_transient(&self, peer: NodeId) -> bool {
        self.transient.contains_key(&peer)
    }

    /// A transient visitor was given addresses: it leaves shortly (after
    /// 250 ms, time for the answer to reach it) rather than at the end of
    /// `transient_time`, so the next newcomer gets its slot sooner.
    pub fn visit_served(&mut self, now: SystemTime, peer: NodeId) {
        if let Some(until) = self.transient.get_mut(&peer) {
            *until = (*until).min(now + super::VISIT_GRACE);
        }
    }

    /// Marks transient peers whose time is up for eviction; the driver then
    /// takes them from [`evict_next`](Self::evict_next).
    pub fn expire_transient(&mut self, now: SystemTime) {
        let due: Vec<NodeId> = self
            .transient
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(id, _)| *id)
            .collect();
        for peer in due {
            self.mark_for_eviction(peer);
        }
    }

    /// Limited peers connected or being dialed, each counted once.
    pub(super) fn limited_occupied(&self) -> usize {
        let dialing_only = self
            .dialing
            .iter()
            .filter(|id| self.dial_holds_a_slot(id))
            .count();
        self.limited_connected() + dialing_only
    }

    pub(super) fn limited_outgoing(&self) -> usize {
        let outgoing = self
            .connected
            .iter()
            .filter(|(id, d)| **d == Direction::Outbound && self.is_limited(id))
            .count();
        let dialing = self
            .dialing
            .iter()
            .filter(|id| self.dial_holds_a_slot(id))
            .count();
        outgoing + dialing
    }
}
