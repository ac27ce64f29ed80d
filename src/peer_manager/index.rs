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

/// Dialable peers, split at the last promotion time.
#[derive(Debug, Default)]
struct Dialable {
    /// Not yet due at `promoted`, by due time.
    waiting: BTreeSet<(SystemTime, RankKey)>,
    /// Due at `promoted`, best first.
    ready: BTreeSet<RankKey>,
}

impl Dialable {
    fn insert(&mut self, due: SystemTime, rank: RankKey, promoted: SystemTime) {
        if due <= promoted {
            self.ready.insert(rank);
        } else {
            self.waiting.insert((due, rank));
        }
    }

    fn remove(&mut self, due: SystemTime, rank: &RankKey) {
        self.waiting.remove(&(due, *rank));
        self.ready.remove(rank);
    }

    fn promote(&mut self, now: SystemTime) {
        while let Some(&(due, key)) = self.waiting.first() {
            if due > now {
                break;
            }
            self.waiting.pop_first();
            self.ready.insert(key);
        }
    }
}

#[derive(Debug)]
pub(super) struct PeerIndex {
    placed: HashMap<NodeId, Placed>,
    /// Every known peer, best first.
    rank: BTreeSet<RankKey>,
    /// Connected peers, best first.
    connected: BTreeSet<RankKey>,
    /// Every dialable peer.
    dialable: Dialable,
    /// The proven ones among them: what may be dialed while the dials of
    /// new peers are at their limit.
    proven: Dialable,
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
            dialable: Dialable::default(),
            proven: Dialable::default(),
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
            self.dialable.remove(due, &old.rank);
            self.proven.remove(due, &old.rank);
        }
    }

    fn insert(&mut self, id: NodeId, placed: Placed) {
        self.rank.insert(placed.rank);
        if placed.connected {
            self.connected.insert(placed.rank);
        }
        if let Some(due) = placed.due {
            self.dialable.insert(due, placed.rank, self.promoted);
            if placed.proven {
                self.proven.insert(due, placed.rank, self.promoted);
            }
        }
        self.placed.insert(id, placed);
    }

    /// Moves the peers due by `now` to the ready views.
    pub(super) fn promote(&mut self, now: SystemTime) {
        if self.promoted >= now {
            return;
        }
        self.promoted = now;
        self.dialable.promote(now);
        self.proven.promote(now);
    }

    fn views(&self, proven_only: bool) -> &Dialable {
        if proven_only {
            &self.proven
        } else {
            &self.dialable
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
        self.views(proven_only).ready.iter().map(|(_, _, id)| id)
    }

    /// Dialable peers not yet due, soonest first; only the proven ones if
    /// `proven_only`.
    pub(super) fn waiting(&self, proven_only: bool) -> impl Iterator<Item = (SystemTime, &NodeId)> {
        self.views(proven_only)
            .waiting
            .iter()
            .map(|(due, (_, _, id))| (*due, id))
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
            let (all, only) = (&self.index.dialable, &self.index.proven);
            assert_eq!(
                only.ready.contains(&key),
                proven && all.ready.contains(&key),
                "proven ready view for {id}"
            );
            assert_eq!(
                due.is_some_and(|d| only.waiting.contains(&(d, key))),
                proven && due.is_some_and(|d| all.waiting.contains(&(d, key))),
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
