//! Outbound: which peer to dial next and when (retry backoff, cooldown,
//! the dial limits and upgrades), and the outcome of a dial.

use std::time::{Duration, SystemTime};

use rand::RngExt;

use super::score::PeerScore;
use super::{AdmitError, Direction, PeerManager};
use crate::address::PeerAddress;
use crate::identity::NodeId;

impl PeerManager {
    /// The next address to dial, if any is due now and a slot is free (or a
    /// lower-scored peer can be replaced). The peer is then `Dialing` until
    /// [`dialed`](Self::dialed) or [`dial_failed`](Self::dial_failed).
    pub fn dial_next(&mut self, now: SystemTime) -> Option<PeerAddress> {
        self.index.promote(now);
        let room = self.dial_room();
        let mut chosen = None;
        // Peers due now, best first: usually the first one is dialed.
        for id in self.index.ready(!room.new_allowed) {
            if room.none_further(self, id) {
                break;
            }
            let Some((due, index)) = self.dial_time(now, id) else {
                continue;
            };
            // `now` may run behind an earlier promotion (a clock step back).
            if due > now || !room.allows(self, id) {
                continue;
            }
            let victim = if self.needs_upgrade(id) {
                let Some(victim) = self.upgrade_victim(self.score_of(id)) else {
                    continue;
                };
                Some(victim)
            } else {
                None
            };
            chosen = Some((*id, index, victim));
            break;
        }
        let (id, index, victim) = chosen?;
        if let Some(victim) = victim {
            self.upgrading.insert(victim, id);
        }
        self.dialing.insert(id);
        self.reindex(id);
        self.peers
            .get(&id)
            .map(|p| p.addresses[index].record.address.clone())
    }

    /// Reports a failed dial of `address`: its retry delay grows and any
    /// upgrade reservation is released.
    pub fn dial_failed(&mut self, now: SystemTime, address: &PeerAddress) {
        let id = address.node_id();
        self.dialing.remove(&id);
        self.upgrading.retain(|_, candidate| *candidate != id);
        self.record_dial_failure(now, address);
        self.reindex(id);
        // No longer pinned by its dial: the store may be above `max_peers`
        // while visitors are connected.
        self.prune();
    }

    /// Counts a failure of `address` (retry delay, jitter, rank); the caller
    /// reindexes the peer.
    pub(super) fn record_dial_failure(&mut self, now: SystemTime, address: &PeerAddress) {
        let id = address.node_id();
        let jitter = self.draw_jitter();
        if let Some(known) = self
            .peers
            .get_mut(&id)
            .and_then(|peer| peer.address_mut(address))
        {
            known.record.last_dial_failure = Some(now);
            known.record.dial_failures = known.record.dial_failures.saturating_add(1);
            known.jitter = jitter;
            self.dirty.insert(id);
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
        self.reindex(id);
        self.prune();
    }

    /// Reports a successful dial and handshake of `address`; on `Ok` the peer
    /// is connected. When this fills the last slot through an upgrade, a
    /// lower-scored peer is marked for eviction.
    pub fn dialed(&mut self, now: SystemTime, address: &PeerAddress) -> Result<(), AdmitError> {
        let result = self.admit_dialed(now, address);
        // Admitted or not, the peer is no longer pinned by its dial.
        self.prune();
        result
    }

    fn admit_dialed(&mut self, now: SystemTime, address: &PeerAddress) -> Result<(), AdmitError> {
        let id = address.node_id();
        self.dialing.remove(&id);
        // Placed again as not dialing, whatever the outcome below.
        self.reindex(id);
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
            // The failure count is cleared when the connection proves to
            // be more than a short visit (see `disconnected`): a full node
            // that lets us visit again and again must back off like one
            // that refuses.
            known.record.last_dial_success = Some(now);
            known.jitter = Duration::ZERO;
        }
        peer.last_connected = Some(now);
        peer.inactive = false;
        self.dirty.insert(id);
        if let Some(victim) = reserved {
            if limited && self.is_full() {
                // A peer scored even lower may have connected since the
                // reservation; prefer evicting that one.
                let victim = self.upgrade_victim(self.score_of(&id)).unwrap_or(victim);
                self.mark_for_eviction(victim);
            }
        }
        self.connected.insert(id, Direction::Outbound);
        self.reindex(id);
        self.prune();
        Ok(())
    }

    /// When the driver should next call [`dial_next`](Self::dial_next) or
    /// [`evict_next`](Self::evict_next): `now` if something is due, the
    /// earliest future retry or cooldown end otherwise, `None` when only a
    /// new event can make progress.
    pub fn next_wakeup(&mut self, now: SystemTime) -> Option<SystemTime> {
        // A transient visitor's time running out is a wakeup too.
        let leave = self
            .transient
            .iter()
            .filter(|(id, _)| !self.evicting.contains(id))
            .map(|(_, until)| (*until).max(now))
            .min();
        match (self.next_dial_wakeup(now), leave) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn next_dial_wakeup(&mut self, now: SystemTime) -> Option<SystemTime> {
        if !self.evict.is_empty() || self.over_capacity() {
            return Some(now);
        }
        self.index.promote(now);
        let room = self.dial_room();
        let due_now = self
            .index
            .ready(!room.new_allowed)
            .take_while(|id| !room.none_further(self, id))
            .any(|id| room.allows(self, id) && self.index.due(id).is_some_and(|d| d <= now));
        if due_now {
            return Some(now);
        }
        // After a clock step back some ready peers are not due yet; the
        // ranking walk below covers them too.
        let later = if room.full || !room.limited || self.index.promoted_beyond(now) {
            // Only peers ranked above the cut can be dialed: walk the
            // ranking down to it (few peers on a full node) rather than
            // every waiting peer.
            self.index
                .ranked()
                .take_while(|id| !room.none_further(self, id))
                .filter(|id| room.allows(self, id))
                .filter_map(|id| self.index.due(id))
                .min()
        } else {
            // Every peer may be dialed: the soonest one is first in line.
            self.index
                .waiting(!room.new_allowed)
                .find(|(_, id)| room.allows(self, id))
                .map(|(due, _)| due)
        };
        later.map(|due| due.max(now))
    }

    /// Whether a limited peer may be dialed at all (connection and
    /// outgoing limits), and the lowest score an upgrade could replace:
    /// computed once per `dial_next`/`next_wakeup`, so that ranking every
    /// known peer costs O(1) each rather than a walk of the connections.
    pub(super) fn dial_room(&self) -> DialRoom {
        let o = &self.options;
        let over_ceiling = o.max_connected > 0
            && self.limited_occupied() >= o.max_connected + o.max_connected_upgrade;
        let over_outgoing = o.max_outgoing > 0 && self.limited_outgoing() >= o.max_outgoing;
        let full = self.is_full();
        // Between the target and the maximum the node only admits: it
        // dials again to upgrade once full, as without a target.
        let at_target =
            !full && o.target_connected > 0 && self.limited_connected() >= o.target_connected;
        DialRoom {
            new_allowed: o.max_dialing_new == 0 || self.dialing_new() < o.max_dialing_new,
            limited: !over_ceiling && !over_outgoing && !at_target,
            full,
            lowest_victim: if full {
                self.lowest_victim_score()
            } else {
                None
            },
        }
    }

    /// When `id` could be dialed, and which of its addresses: `None` if it
    /// cannot be dialed without a new event (connected, dialing, inactive,
    /// no retriable address).
    pub(super) fn dial_time(&self, now: SystemTime, id: &NodeId) -> Option<(SystemTime, usize)> {
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
                let delay = retry_delay(
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

    /// Whether `peer` is configured (persistent or unconditional) or was
    /// connected at some time: a peer worth a dial slot before addresses
    /// only heard of, which may not exist (see `max_dialing_new`).
    pub(super) fn is_proven(&self, peer: &super::peer::Peer) -> bool {
        peer.last_connected.is_some()
            || self.persistent.contains(&peer.id)
            || !self.is_limited(&peer.id)
    }

    /// Dials in progress to peers that are not proven.
    fn dialing_new(&self) -> usize {
        self.dialing
            .iter()
            .filter(|id| self.peers.get(id).is_some_and(|p| !self.is_proven(p)))
            .count()
    }

    pub(super) fn draw_jitter(&mut self) -> Duration {
        let max = self.options.retry_time_jitter;
        if max.is_zero() {
            return Duration::ZERO;
        }
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.random_range(0..=nanos))
    }
}

/// What the limits allow a dial right now; see `PeerManager::dial_room`.
pub(super) struct DialRoom {
    /// Peers that are not proven may be dialed (`max_dialing_new`).
    new_allowed: bool,
    /// Limited peers may be dialed.
    pub(super) limited: bool,
    /// The limited slots are full: a limited dial must be an upgrade.
    pub(super) full: bool,
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
        if !self.new_allowed && !manager.peers.get(id).is_some_and(|p| manager.is_proven(p)) {
            return false;
        }
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

/// How long after its last failure an address may be dialed again:
/// `min_retry × failures + jitter`, capped at `max_retry` (0: no cap).
/// `None` means never (retries are off: `min_retry` is 0).
fn retry_delay(
    failures: u32,
    min_retry: Duration,
    max_retry: Duration,
    jitter: Duration,
) -> Option<Duration> {
    if failures == 0 {
        return Some(Duration::ZERO);
    }
    if min_retry.is_zero() {
        return None;
    }
    let delay = min_retry.saturating_mul(failures).saturating_add(jitter);
    Some(if max_retry.is_zero() {
        delay
    } else {
        delay.min(max_retry)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_linearly_and_caps() {
        let ms = Duration::from_millis;
        assert_eq!(retry_delay(0, ms(100), ms(350), ms(0)), Some(ms(0)));
        assert_eq!(retry_delay(1, ms(100), ms(350), ms(0)), Some(ms(100)));
        assert_eq!(retry_delay(3, ms(100), ms(350), ms(0)), Some(ms(300)));
        assert_eq!(retry_delay(4, ms(100), ms(350), ms(0)), Some(ms(350)));
        assert_eq!(retry_delay(2, ms(100), ms(350), ms(7)), Some(ms(207)));
        assert_eq!(
            retry_delay(u32::MAX, ms(100), ms(0), ms(0)),
            Some(ms(100) * u32::MAX)
        );
        assert_eq!(retry_delay(1, ms(0), ms(0), ms(0)), None);
    }
}
