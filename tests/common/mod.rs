//! Test helpers for router scenarios over the memory transport: the
//! crate's own `test_utils` (nodes, networks, waiting on events, never on
//! sleeps) and what only these tests use.

#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

use std::sync::Arc;

pub use p2p_router::test_utils::*;
pub use p2p_transport_memory::test_utils::{network, StartOnMemory};
use p2p_transport_memory::MemoryNetwork;

/// A message of another type than [`Text`], to provoke decode failures.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Number {
    #[prost(fixed64, tag = "1")]
    pub value: u64,
}

/// Tells `node` to dial test node `n` on the memory network.
pub async fn dial_memory(node: &TestNode, n: u64) {
    let address = p2p_router::PeerAddress::memory(key(n).node_id());
    node.router.add_peer(address).await.expect("add_peer");
}

/// Two nodes, the first having dialed the second, both seeing Up.
pub async fn connected_pair() -> (MemoryNetwork, TestNode, TestNode) {
    let net = MemoryNetwork::new();
    let mut a = TestNodeBuilder::new(key(1)).start_on(&net);
    let mut b = TestNodeBuilder::new(key(2)).start_on(&net);
    connect(&mut a, &mut b).await;
    (net, a, b)
}
