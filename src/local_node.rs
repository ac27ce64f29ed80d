//! Who this node is: its key and the network it belongs to, given once and
//! read by the router and by every transport that needs them.

use crate::identity::{NodeId, NodeKey};

/// This node's key and network (chain) id.
///
/// The router builder takes it, and transports that need either (QUIC folds
/// the network into ALPN and uses the key as its TLS identity) are bound from
/// the same value, so the two can never disagree.
#[derive(Clone)]
pub struct LocalNode {
    key: NodeKey,
    network: String,
}

impl LocalNode {
    /// The node with `key`, on `network`.
    pub fn new(key: NodeKey, network: impl Into<String>) -> Self {
        Self {
            key,
            network: network.into(),
        }
    }

    /// The node's key.
    pub fn key(&self) -> &NodeKey {
        &self.key
    }

    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// The network (chain) id.
    pub fn network(&self) -> &str {
        &self.network
    }
}

impl std::fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("LocalNode")
            .field("node_id", &self.node_id())
            .field("network", &self.network)
            .finish()
    }
}
