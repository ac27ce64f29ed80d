//! Four validators over loopback QUIC decide ten heights and agree.

use std::sync::Arc;
use std::time::Duration;

use p2p_consensus::{
    check_agreement, spawn_validator, ConsensusChannels, ConsensusConfig, Validator, ValidatorSet,
};
use p2p_router::test_utils::{connect_all, key, within, TestNode, TestNodeBuilder};
use p2p_router::{LocalNode, PeerAddress};
use p2p_transport_quic::{QuicConfig, QuicTransport};

const PATIENCE: Duration = Duration::from_secs(60);

fn secret(i: u64) -> [u8; 32] {
    [0x70 + i as u8; 32]
}

fn config() -> ConsensusConfig {
    let mut config = ConsensusConfig::default();
    config.block_size = 256 << 10;
    config
}

/// Node `i` listening on an ephemeral loopback port, with the consensus
/// channels declared.
fn quic_node(i: u64) -> (TestNode, ConsensusChannels) {
    let builder = TestNodeBuilder::new(key(i));
    let local = LocalNode::new(key(i), builder.network.clone());
    let quic = QuicConfig::new().listen_on("127.0.0.1:0".parse().expect("address"));
    let transport = Arc::new(QuicTransport::bind(&local, quic).expect("bind"));
    let address: PeerAddress =
        format!("quic://{}@{}", key(i).node_id(), transport.local_addrs()[0])
            .parse()
            .expect("address");
    builder.start_declaring(transport, address, |b| {
        ConsensusChannels::declare(b, &config()).expect("channels declare")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_over_loopback_quic_decide_ten_heights() {
    let set = ValidatorSet::new(
        (1..=4)
            .map(|i| Validator::from_secret(secret(i), 1))
            .collect(),
    );
    let (mut nodes, channels): (Vec<_>, Vec<_>) = (1..=4).map(quic_node).unzip();
    let handles: Vec<_> = (1..=4)
        .zip(&nodes)
        .zip(channels)
        .map(|((i, node), channels)| {
            spawn_validator(
                node.router.handle(),
                channels,
                secret(i),
                set.clone(),
                config(),
            )
        })
        .collect();
    connect_all(&mut nodes).await;
    for h in &handles {
        within(PATIENCE, "height 10", h.decisions.reached(10)).await;
    }
    let decisions: Vec<_> = handles.iter().map(|h| h.decisions.clone()).collect();
    let agreement = check_agreement(&decisions).expect("agreement");
    assert!(agreement.shared_heights >= 10, "{agreement:?}");
    for h in handles {
        h.shutdown().await;
    }
    for node in nodes {
        node.router.shutdown().await;
    }
}
