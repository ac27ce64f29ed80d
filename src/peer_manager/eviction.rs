//! Eviction: peers marked after errors or upgrades, and the lowest-ranked
//! peers above the connection limit.

use super::PeerManager;
use crate::identity::NodeId;

impl PeerManager {
    /// Reports a fatal error of a connected peer: it is marked for eviction.
    pub fn errored(&mut self, peer: NodeId) {
        self.mark_for_eviction(peer);
    }

    /// The next connected peer to disconnect: peers marked for eviction
    /// first (lowest-ranked first), then the lowest-ranked peers above
    /// `max_connected`. The peer stays connected until
    /// [`disconnected`](Self::disconnected).
    pub fn evict_next(&mut self) -> Option<NodeId> {
        // Both walks are over connected peers only, lowest-ranked first.
        let chosen = if self.evict.is_empty() {
            if !self.over_capacity() {
                return None;
            }
            self.index
                .connected()
                .rev()
                .find(|id| !self.evicting.contains(id) && self.is_limited(id))
                .copied()
        } else {
            self.index
                .connected()
                .rev()
                .find(|id| self.evict.contains(id))
                .copied()
        };
        let chosen = chosen?;
        self.evict.remove(&chosen);
        self.evicting.insert(chosen);
        Some(chosen)
    }

    pub(super) fn over_capacity(&self) -> bool {
        let evicting = self
            .evicting
            .iter()
            .filter(|id| self.is_limited(id) && !self.transient.contains_key(id))
            .count();
        self.options.max_connected > 0
            && self.limited_connected().saturating_sub(evicting) > self.options.max_connected
    }

    pub(super) fn mark_for_eviction(&mut self, peer: NodeId) {
        if self.connected.contains_key(&peer) && !self.evicting.contains(&peer) {
            self.evict.insert(peer);
        }
    }
}
