//! The peer manager's ordered views of its peers, kept up to date as each
//! peer changes, so that answering "whom to dial now", "when next" and
//! "whom to evict" costs O(log n) per event rather than a sort and a walk
//! of every known peer.
//!
//! Every mutation of a peer's score, last connection, addresses, dial
//! state or connection ends with [`PeerManager::reindex`] for that peer.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use super::score::PeerScore;
use super::PeerManager;
use crate::identity::NodeId;

/// Rank order: higher score first, then the most recently connected, then
/// the id (a total order, so every peer has one place).
pub(super) type RankKey = (Reverse<PeerScore>, Reverse<Option<SystemTime>>, NodeId);

/// Where one peer stands in the views.
#[derive(Debug, Clone, Copy)]
struct Placed {
    rank: RankKey,
    /// When the peer may be dialed, if it can be without a new event.
    due: Option<SystemTime>,
    connected: bool,
    /// Configured, or connected to at some time (see
    /// [`PeerManager::is_proven`]).
    proven: bool,
}

#[derive(Debug)]
pub(super) struct PeerIndex {
    placed: HashMap<NodeId, Placed>,
    /// Every known peer, best first.
    rank: BTreeSet<RankKey>,
    /// Connected peers, best first.
    connected: BTreeSet<RankKey>,
    /// Dialable peers not yet due at `promoted`, by due time.
    waiting: BTreeSet<(SystemTime, RankKey)>,
    /// Dialable peers due at `promoted`, best first.
    ready: BTreeSet<RankKey>,
    /// The proven peers of `waiting` and `ready`: what may be dialed while
    /// the dials of new peers are at their limit.
    waiting_proven: BTreeSet<(SystemTime, RankKey)>,
    ready_proven: BTreeSet<RankKey>,
    /// The latest `now` the waiting peers were promoted at (the epoch at
    /// first, so peers due at once, the usual new peer, go straight to
    /// `ready`).
    promoted: SystemTime,
}

impl Default for PeerIndex {
    fn default() -> Self {
        Self {
            placed: HashMap::new(),
            rank: BTreeSet::new(),
            connected: BTreeSet::new(),
            waiting: BTreeSet::new(),
            ready: BTreeSet::new(),
            waiting_proven: BTreeSet::new(),
            ready_proven: BTreeSet::new(),
            promoted: SystemTime::UNIX_EPOCH,
        }
    }
}

impl PeerIndex {
    fn remove(&mut self, id: &NodeId) {
        let Some(old) = self.placed.remove(id) else {
            return;
        };
        self.rank.remove(&old.rank);
        self.connected.remove(&old.rank);
        if let Some(due) = old.due {
            self.waiting.remove(&(due, old.rank));
            self.ready.remove(&old.rank);
            self.waiting_proven.remove(&(due, old.rank));
            self.ready_proven.remove(&old.rank);
        }
    }

    fn insert(&mut self, id: NodeId, placed: Placed) {
        self.rank.insert(placed.rank);
        if placed.connected {
            self.connected.insert(placed.rank);
        }
        if let Some(due) = placed.due {
            if due <= self.promoted {
                self.ready.insert(placed.rank);
                if placed.proven {
                    self.ready_proven.insert(placed.rank);
                }
            } else {
                self.waiting.insert((due, placed.rank));
                if placed.proven {
                    self.waiting_proven.insert((due, placed.rank));
                }
            }
        }
        self.placed.insert(id, placed);
    }

    /// Moves the peers due by `now` to the ready view.
    pub(super) fn promote(&mut self, now: SystemTime) {
        if self.promoted >= now {
            return;
        }
        self.promoted = now;
        while let Some(&(due, key)) = self.waiting.first() {
            if due > now {
                break;
            }
            self.waiting.pop_first();
            self.ready.insert(key);
        }
        while let Some(&(due, key)) = self.waiting_proven.first() {
            if due > now {
                break;
            }
            self.waiting_proven.pop_first();
            self.ready_proven.insert(key);
        }
    }

    /// Every known peer, best first.
    pub(super) fn ranked(&self) -> impl DoubleEndedIterator<Item = &NodeId> {
        self.rank.iter().map(|(_, _, id)| id)
    }

    /// Connected peers, best first.
    pub(super) fn connected(&self) -> impl DoubleEndedIterator<Item = &NodeId> {
        self.connected.iter().map(|(_, _, id)| id)
    }

    /// Dialable peers due at the last promotion, best first; only the
    /// proven ones if `proven_only`.
    pub(super) fn ready(&self, proven_only: bool) -> impl Iterator<Item = &NodeId> {
        let set = if proven_only {
            &self.ready_proven
        } else {
            &self.ready
        };
        set.iter().map(|(_, _, id)| id)
    }

    /// Dialable peers not yet due, soonest first; only the proven ones if
    /// `proven_only`.
    pub(super) fn waiting(&self, proven_only: bool) -> impl Iterator<Item = (SystemTime, &NodeId)> {
        let set = if proven_only {
            &self.waiting_proven
        } else {
            &self.waiting
        };
        set.iter().map(|(due, (_, _, id))| (*due, id))
    }

    /// When `id` may be dialed, as last indexed.
    pub(super) fn due(&self, id: &NodeId) -> Option<SystemTime> {
        self.placed.get(id).and_then(|p| p.due)
    }

    /// Whether peers were promoted at a time later than `now`.
    pub(super) fn promoted_beyond(&self, now: SystemTime) -> bool {
        self.promoted > now
    }

    #[cfg(test)]
    fn rank_key(&self, id: &NodeId) -> Option<RankKey> {
        self.placed.get(id).map(|p| p.rank)
    }
}

impl PeerManager {
    /// Re-places `id` in every view after a change to it (or removes it if
    /// it is no longer known).
    pub(super) fn reindex(&mut self, id: NodeId) {
        self.index.remove(&id);
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let placed = Placed {
            rank: (
                Reverse(self.score_of(&id)),
                Reverse(peer.last_connected),
                id,
            ),
            // With `now` at the epoch, `dial_time` gives the peer's own due
            // time: the later of its retry backoff and its cooldown.
            due: self
                .dial_time(SystemTime::UNIX_EPOCH, &id)
                .map(|(due, _)| due),
            connected: self.connected.contains_key(&id),
            proven: self.is_proven(peer),
        };
        self.index.insert(id, placed);
    }

    /// Checks the views against a brute-force rebuild (tests only).
    #[cfg(test)]
    pub(crate) fn check_index(&self) {
        let mut expected: Vec<RankKey> = self
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
        expected.sort_unstable();
        let actual: Vec<RankKey> = self.index.rank.iter().copied().collect();
        assert_eq!(actual, expected, "rank view");
        for id in self.peers.keys() {
            let due = self
                .dial_time(SystemTime::UNIX_EPOCH, id)
                .map(|(due, _)| due);
            assert_eq!(self.index.due(id), due, "due time of {id}");
            let key = self.index.rank_key(id).expect("placed");
            let proven = self.is_proven(&self.peers[id]);
            assert_eq!(
                self.index.ready_proven.contains(&key),
                proven && self.index.ready.contains(&key),
                "proven ready view for {id}"
            );
            assert_eq!(
                due.is_some_and(|d| self.index.waiting_proven.contains(&(d, key))),
                proven && due.is_some_and(|d| self.index.waiting.contains(&(d, key))),
                "proven waiting view for {id}"
            );
            assert_eq!(
                self.index
                    .connected
                    .contains(&self.index.rank_key(id).expect("placed")),
                self.connected.contains_key(id),
                "connected view for {id}"
            );
        }
        assert_eq!(self.index.placed.len(), self.peers.len());
    }
}
