//! The memory transport keeps the wire transports' bounds, so tests over
//! it see what a real peer would.

use bytes::Bytes;
use p2p_router::conformance::node_info;
use p2p_router::{ConnectionError, Endpoint, NodeKey, Transport, MAX_NODE_INFO_SIZE};
use p2p_transport_memory::MemoryNetwork;

#[tokio::test]
async fn a_node_info_over_the_limit_is_refused_before_decoding() {
    let net = MemoryNetwork::new();
    let (ka, kb) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
    let (a, b) = (net.transport(&ka), net.transport(&kb));
    let endpoint = Endpoint::memory(kb.node_id());
    let (dialed, accepted) = tokio::join!(a.dial_memory(&endpoint), b.accept());
    let (dialed, accepted) = (dialed.expect("dial"), accepted.expect("accept"));
    let huge = Bytes::from(vec![0u8; MAX_NODE_INFO_SIZE + 1]);
    let ours = node_info(&kb);
    let (sent, got) = tokio::join!(dialed.send_raw_handshake(huge), accepted.handshake(&ours));
    sent.expect("raw handshake sent");
    assert_eq!(
        got.err(),
        Some(ConnectionError::Oversized {
            size: MAX_NODE_INFO_SIZE as u64 + 1,
            max: MAX_NODE_INFO_SIZE,
        })
    );
}
