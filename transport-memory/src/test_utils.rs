//! In-process networks of [`TestNode`]s (feature `test-utils`), on the
//! core's `p2p_router::test_utils`.

use std::sync::Arc;

use p2p_router::test_utils::{key, TestNode, TestNodeBuilder};
use p2p_router::{PeerAddress, RouterBuilder};

use crate::{MemoryNetwork, MemoryTransport};

/// Starts a [`TestNodeBuilder`]'s node on a memory network, dialable at
/// `memory:<id>`.
pub trait StartOnMemory {
    /// Starts the node on a new transport of `net`.
    fn start_on(self, net: &MemoryNetwork) -> TestNode;
    /// Starts the node on `transport` (made by a [`MemoryNetwork`], perhaps
    /// with options of its own).
    fn start_on_transport(self, transport: Arc<MemoryTransport>) -> TestNode;
    /// Like [`start_on`](Self::start_on), letting `declare` add to the
    /// router builder first; returns what it returned.
    fn start_declaring_on<T>(
        self,
        net: &MemoryNetwork,
        declare: impl FnOnce(&mut RouterBuilder) -> T,
    ) -> (TestNode, T);
}

impl StartOnMemory for TestNodeBuilder {
    fn start_on(self, net: &MemoryNetwork) -> TestNode {
        self.start_declaring_on(net, |_| ()).0
    }

    fn start_on_transport(self, transport: Arc<MemoryTransport>) -> TestNode {
        let address = PeerAddress::memory(self.key.node_id());
        self.start(transport, address)
    }

    fn start_declaring_on<T>(
        self,
        net: &MemoryNetwork,
        declare: impl FnOnce(&mut RouterBuilder) -> T,
    ) -> (TestNode, T) {
        let transport = Arc::new(net.transport(&self.key));
        let address = PeerAddress::memory(self.key.node_id());
        self.start_declaring(transport, address, declare)
    }
}

/// `n` test nodes with keys `key(1)..=key(n)` on one new memory network,
/// not yet connected (see `p2p_router::test_utils::connect_all`).
pub fn network(n: u64) -> (MemoryNetwork, Vec<TestNode>) {
    let net = MemoryNetwork::new();
    let nodes = (1..=n)
        .map(|i| TestNodeBuilder::new(key(i)).start_on(&net))
        .collect();
    (net, nodes)
}
