//! [`PeerManagerOptions`] and their validation.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::score::PeerScore;
use crate::address::PeerAddress;
use crate::identity::NodeId;

/// How the [`PeerManager`](super::PeerManager) chooses peers.
///
/// A limit of 0 means "no limit". [`Default`] gives the values below, which
/// are Tendermint's defaults where it has one.
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PeerManagerOptions {
    /// Our own dialable address, advertised first to peers that ask.
    pub self_address: Option<PeerAddress>,
    /// Peers always kept: highest score, retried forever, never pruned.
    pub persistent_peers: Vec<PeerAddress>,
    /// Peers whose addresses are never advertised.
    pub private_peers: HashSet<NodeId>,
    /// Peers admitted even when full; they do not count against the
    /// connection limits and are never evicted to make room.
    pub unconditional_peers: HashSet<NodeId>,
    /// Fixed scores that override the computed ones.
    pub peer_scores: HashMap<NodeId, PeerScore>,
    /// Most connected peers (default 64).
    pub max_connected: usize,
    /// Peers the node dials towards (default 0: `max_connected`). With
    /// this many connected it stops dialing, yet still admits peers that
    /// dial it, up to `max_connected`. A target below the maximum keeps
    /// room for newcomers on every node, so that every node can reach its
    /// target; with the two equal, the last nodes still looking for peers
    /// may find every other node full (CometBFT makes the same split with
    /// 10 outbound and 40 inbound peers).
    pub target_connected: usize,
    /// Most outgoing connections plus dials in progress (default 0: only
    /// `max_connected` applies).
    pub max_outgoing: usize,
    /// Extra slots used temporarily to replace a connected peer by a better
    /// one (default 4).
    pub max_connected_upgrade: usize,
    /// Most peers kept in the store (default 1000).
    pub max_peers: usize,
    /// Most dials at once to peers the node has never been connected to
    /// and that are not configured (default 4; the router dials 8 at
    /// once by default). Addresses heard of through peer exchange may not
    /// exist, and a dial of one can last its whole timeout: the other
    /// dial slots stay free for peers known to be real, so that a burst
    /// of bad addresses never holds up a reconnection.
    pub max_dialing_new: usize,
    /// Retry delay per failed dial of an address (default 250 ms); 0 turns
    /// retries of failed addresses off.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub min_retry_time: Duration,
    /// Cap on the retry delay (default 30 min).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_retry_time: Duration,
    /// Cap on the retry delay of persistent peers (default 5 min; 0 means
    /// `max_retry_time`).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_retry_time_persistent: Duration,
    /// Upper bound of the random delay added to each retry (default 3 s), so
    /// that many nodes do not retry in lockstep.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub retry_time_jitter: Duration,
    /// How long after a disconnect the peer is not redialed (default 1 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub disconnect_cooldown: Duration,
    /// Inbound peers admitted while every slot is taken, for peer exchange
    /// only (default 16): a full node still tells newcomers about the
    /// network, as a seed would, instead of leaving them with no one to
    /// ask. They hold no slot and leave after `transient_time`. 0 refuses
    /// them at once.
    pub max_transient: usize,
    /// How long a transient peer stays (default 2 s): long enough for its
    /// first peer-exchange request and our answer.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub transient_time: Duration,
}

impl Default for PeerManagerOptions {
    fn default() -> Self {
        Self {
            self_address: None,
            persistent_peers: Vec::new(),
            private_peers: HashSet::new(),
            unconditional_peers: HashSet::new(),
            peer_scores: HashMap::new(),
            max_connected: 64,
            target_connected: 0,
            max_outgoing: 0,
            max_connected_upgrade: 4,
            max_peers: 1000,
            max_dialing_new: 4,
            min_retry_time: Duration::from_millis(250),
            max_retry_time: Duration::from_secs(30 * 60),
            max_retry_time_persistent: Duration::from_secs(5 * 60),
            retry_time_jitter: Duration::from_secs(3),
            disconnect_cooldown: Duration::from_secs(1),
            max_transient: 16,
            transient_time: Duration::from_secs(2),
        }
    }
}

/// Why a set of [`PeerManagerOptions`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// More persistent peers than connection slots.
    #[error("{persistent} persistent peers exceed max_connected {max_connected}")]
    TooManyPersistentPeers {
        /// Distinct persistent peers.
        persistent: usize,
        /// The limit.
        max_connected: usize,
    },
    /// `max_peers` is set but `max_connected` is unlimited.
    #[error("max_peers needs max_connected")]
    MaxPeersWithoutMaxConnected,
    /// The store could not hold every connected and upgrading peer.
    #[error("max_peers {max_peers} is below max_connected + max_connected_upgrade ({needed})")]
    MaxPeersTooSmall {
        /// The limit given.
        max_peers: usize,
        /// The least it must be.
        needed: usize,
    },
    /// `max_outgoing` above `max_connected` could never be reached.
    #[error("max_outgoing {max_outgoing} exceeds max_connected {max_connected}")]
    MaxOutgoingAboveMaxConnected {
        /// The outgoing limit.
        max_outgoing: usize,
        /// The connection limit.
        max_connected: usize,
    },
    /// `target_connected` above `max_connected` could never be reached.
    #[error("target_connected {target_connected} exceeds max_connected {max_connected}")]
    TargetAboveMaxConnected {
        /// The target.
        target_connected: usize,
        /// The connection limit.
        max_connected: usize,
    },
    /// A maximum retry time without a minimum.
    #[error("max_retry_time needs min_retry_time")]
    MaxRetryWithoutMinRetry,
    /// The minimum retry time is above a maximum.
    #[error("min_retry_time {min:?} exceeds {which} {max:?}")]
    MinRetryAboveMax {
        /// The minimum.
        min: Duration,
        /// The maximum.
        max: Duration,
        /// Which maximum.
        which: &'static str,
    },
    /// Our own id listed as a persistent peer.
    #[error("persistent peer {0} is this node")]
    SelfAsPersistentPeer(NodeId),
    /// The self address names another node.
    #[error("self_address names node {found}, this node is {expected}")]
    SelfAddressMismatch {
        /// Our id.
        expected: NodeId,
        /// The id in the address.
        found: NodeId,
    },
}

impl PeerManagerOptions {
    /// The peers the node dials towards: `target_connected`, or
    /// `max_connected` when that is 0 (0: no limit).
    pub fn dial_target(&self) -> usize {
        match self.target_connected {
            0 => self.max_connected,
            n => n,
        }
    }

    /// The distinct ids of the persistent peers.
    pub(crate) fn persistent_ids(&self) -> HashSet<NodeId> {
        self.persistent_peers.iter().map(|a| a.node_id()).collect()
    }

    /// Checks the options for a node whose id is `self_id`.
    pub fn validate(&self, self_id: NodeId) -> Result<(), OptionsError> {
        let persistent = self.persistent_ids();
        if persistent.contains(&self_id) {
            return Err(OptionsError::SelfAsPersistentPeer(self_id));
        }
        if let Some(address) = &self.self_address {
            if address.node_id() != self_id {
                return Err(OptionsError::SelfAddressMismatch {
                    expected: self_id,
                    found: address.node_id(),
                });
            }
        }
        if self.max_connected > 0 && persistent.len() > self.max_connected {
            return Err(OptionsError::TooManyPersistentPeers {
                persistent: persistent.len(),
                max_connected: self.max_connected,
            });
        }
        if self.max_peers > 0 {
            if self.max_connected == 0 {
                return Err(OptionsError::MaxPeersWithoutMaxConnected);
            }
            let needed = self.max_connected + self.max_connected_upgrade;
            if self.max_peers < needed {
                return Err(OptionsError::MaxPeersTooSmall {
                    max_peers: self.max_peers,
                    needed,
                });
            }
        }
        if self.max_outgoing > 0 && self.max_connected > 0 && self.max_outgoing > self.max_connected
        {
            return Err(OptionsError::MaxOutgoingAboveMaxConnected {
                max_outgoing: self.max_outgoing,
                max_connected: self.max_connected,
            });
        }
        if self.max_connected > 0 && self.target_connected > self.max_connected {
            return Err(OptionsError::TargetAboveMaxConnected {
                target_connected: self.target_connected,
                max_connected: self.max_connected,
            });
        }
        let maxima = [
            (self.max_retry_time, "max_retry_time"),
            (self.max_retry_time_persistent, "max_retry_time_persistent"),
        ];
        for (max, which) in maxima {
            if max.is_zero() {
                continue;
            }
            if self.min_retry_time.is_zero() {
                return Err(OptionsError::MaxRetryWithoutMinRetry);
            }
            if self.min_retry_time > max {
                return Err(OptionsError::MinRetryAboveMax {
                    min: self.min_retry_time,
                    max,
                    which,
                });
            }
        }
        Ok(())
    }
}
