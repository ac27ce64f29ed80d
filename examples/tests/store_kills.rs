//! The peer store survives SIGKILL during heavy address churn: a node
//! process learns hundreds of addresses by PEX from a peer (and fails to
//! dial them, each failure another store write) and is killed 20 times at
//! random moments. After each restart its store opens, the records read
//! back whole, and it reconnects to its seed.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::NodeProcess;
use p2p_router::peer_store::PeerStore;
use p2p_router::pex::PexOptions;
use p2p_router::test_utils::{key, loopback_options, TestNodeBuilder};
use p2p_router::{LocalNode, RedbPeerStore};
use p2p_transport_quic::{QuicConfig, QuicTransport};

const KILLS: usize = 20;
const FAKE_PEERS: u64 = 300;
const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_store_survives_twenty_kills_during_address_churn() {
    // The churner: a router with PEX that knows 300 addresses nobody
    // listens on (loopback ports, so dialing them sends nothing anywhere).
    let k = key(1);
    let mut config = QuicConfig::new().listen_on("127.0.0.1:0".parse().unwrap());
    // The node it serves reconnects from 127.0.0.1 again and again.
    config.listener.single_source(64);
    let transport =
        Arc::new(QuicTransport::bind(&LocalNode::new(k.clone(), "node-test"), config).unwrap());
    let address = format!("quic://{}@{}", k.node_id(), transport.local_addrs()[0])
        .parse()
        .unwrap();
    let mut builder = TestNodeBuilder::new(k);
    builder.network = "node-test".into();
    builder.router = loopback_options(64);
    builder.pm.max_peers = 1_000;
    builder.pex = Some(PexOptions::default());
    let churner = builder.start(transport, address);
    for n in 0..FAKE_PEERS {
        let fake = format!("quic://{}@127.0.0.1:{}", key(1_000 + n).node_id(), 1 + n)
            .parse()
            .unwrap();
        churner.router.add_peer(fake).await.unwrap();
    }
    let seed = churner.address().to_string();
    let churner_id = churner.id().to_string();

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("victim");
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut known = Vec::new();
    for kill in 0..KILLS {
        let mut node = tokio::time::timeout(PATIENCE, NodeProcess::start(&dir, &["--seed", &seed]))
            .await
            .unwrap_or_else(|_| panic!("restart {kill}: the node did not come up"));
        known.push(node.known.len());
        tokio::time::timeout(PATIENCE, node.until_up(&[&churner_id]))
            .await
            .unwrap_or_else(|_| panic!("restart {kill}: no reconnection to the seed"));
        // A random moment in the next 0.8 s, while addresses pour in.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let moment = Duration::from_millis(rng % 800);
        let _ = tokio::time::timeout(moment, node.until(|_| false)).await;
        node.child.kill().await.unwrap();
        // Read back by the test itself: it opens, and every record decodes.
        let mut store = RedbPeerStore::open(dir.join("peers.redb")).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.corrupt, 0, "restart {kill}: corrupt records");
    }
    println!("known peers at each restart: {known:?}");
    // Something was learned and kept across the kills.
    assert!(known.iter().skip(1).all(|&n| n >= 1), "{known:?}");
    assert!(known.iter().max().copied().unwrap_or(0) > 50, "{known:?}");
}
