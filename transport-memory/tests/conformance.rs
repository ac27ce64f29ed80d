//! The core conformance suite over the memory transport.

use std::sync::Arc;

use p2p_router::conformance::{self, Expectations};
use p2p_router::Transport;
use p2p_transport_memory::MemoryNetwork;

#[tokio::test]
async fn memory_transport_passes_the_conformance_suite() {
    let network = MemoryNetwork::new();
    conformance::run(
        |key| {
            let network = network.clone();
            async move { Arc::new(network.transport(&key)) as Arc<dyn Transport> }
        },
        Expectations::default(),
    )
    .await;
}
