//! The router's counters and Prometheus metrics, over the memory
//! transport on paused time.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use p2p_router::metrics::METRIC_NAMES;
use p2p_router::{Envelope, NodeKey};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

fn scrape(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).unwrap();
    out
}

/// The value of the sample line starting with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn counters_follow_traffic_and_are_exported_for_prometheus() {
    let (_net, a, b) = connected_pair().await;
    let mut registry = Registry::default();
    a.router.register_metrics(&mut registry);

    for i in 0..10 {
        let message = text(format!("m{i}"));
        a.tx.send(Envelope {
            peer: b.id(),
            message,
        })
        .await
        .unwrap();
    }
    for _ in 0..10 {
        require_receive(&b.rx).await;
    }
    // Two drops with reasons: to a stranger and to ourselves.
    let stranger = NodeKey::from_seed([99; 32]).node_id();
    a.send_text(stranger, "x").await;
    a.send_text(a.id(), "x").await;

    let stats = a.router.channel_stats();
    let test = stats.iter().find(|c| c.id == TEXT_CHANNEL).unwrap();
    assert_eq!(test.name, "test");
    assert_eq!(test.sent_messages, 10);
    assert_eq!(test.sent_bytes, 10 * 4);
    assert_eq!((test.dropped_unknown_peer, test.dropped_self), (1, 1));
    let received = b.router.channel_stats();
    assert_eq!(received[0].received_messages, 10);

    let text = scrape(&registry);
    for name in METRIC_NAMES {
        assert!(
            text.contains(&format!("# TYPE p2p_{name} ")),
            "{name} missing:\n{text}"
        );
    }
    let memory = "transport=\"memory\"";
    assert_eq!(
        sample(
            &text,
            &format!("p2p_peers{{{memory},direction=\"outbound\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("p2p_peers{{{memory},direction=\"inbound\"}}")
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "p2p_peers{transport=\"quic\",direction=\"outbound\"}"
        ),
        0.0
    );
    assert_eq!(sample(&text, "p2p_known_peers "), 1.0);
    assert_eq!(sample(&text, "p2p_transient_peers "), 0.0);
    assert_eq!(sample(&text, &format!("p2p_dials_total{{{memory}}}")), 1.0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(&text, &format!("p2p_build_info{{version=\"{version}\"}}")),
        1.0
    );
    assert_eq!(sample(&text, "p2p_handshake_duration_seconds_count"), 1.0);
    assert_eq!(
        sample(
            &text,
            "p2p_channel_sent_messages_total{channel=\"test\",channel_id=\"1\"}"
        ),
        10.0
    );
    assert_eq!(
        sample(
            &text,
            "p2p_channel_sent_bytes_total{channel=\"test\",channel_id=\"1\"}"
        ),
        40.0
    );
    assert_eq!(
        sample(
            &text,
            "p2p_channel_dropped_messages_total{channel=\"test\",channel_id=\"1\",reason=\"unknown_peer\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "p2p_channel_send_queue_depth{channel=\"test\",channel_id=\"1\"}"
        ),
        0.0
    );
    // The memory transport measures no path: no RTT samples, packet
    // counters at zero.
    assert!(!text.contains("p2p_transport_rtt_seconds_count"), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("p2p_transport_sent_packets_total{{{memory}}}")
        ),
        0.0
    );

    let mut b_registry = Registry::default();
    b.router.register_metrics(&mut b_registry);
    let text = scrape(&b_registry);
    assert_eq!(
        sample(
            &text,
            "p2p_peers{transport=\"memory\",direction=\"inbound\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "p2p_channel_received_messages_total{channel=\"test\",channel_id=\"1\"}"
        ),
        10.0
    );
}

#[tokio::test(start_paused = true)]
async fn failed_dials_are_counted_by_reason() {
    let (_net, nodes) = network(1);
    let mut registry = Registry::default();
    nodes[0].router.register_metrics(&mut registry);
    // Nobody listens at this memory address.
    let ghost = p2p_router::PeerAddress::memory(NodeKey::from_seed([42; 32]).node_id());
    nodes[0].router.add_peer(ghost).await.unwrap();
    loop {
        let text = scrape(&registry);
        let unreachable = "p2p_dial_failures_total{transport=\"memory\",reason=\"unreachable\"}";
        if sample(&text, unreachable) >= 1.0 {
            break;
        }
        // The dial fails at once on the memory network; let it run.
        settle().await;
    }
}

#[tokio::test]
async fn a_stopped_router_exports_nothing() {
    let (_net, mut nodes) = network(1);
    let mut registry = Registry::default();
    let node = nodes.remove(0);
    node.router.register_metrics(&mut registry);
    node.router.shutdown().await;
    drop(node.tx);
    drop(node.rx);
    assert!(!scrape(&registry).contains("p2p_peers"));
}

/// Packet counters are counters: a closed connection's packets stay
/// counted (they used to be summed over open connections only, so the
/// series fell when a peer left). Real loopback QUIC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_packet_counters_keep_closed_connections_and_never_fall() {
    use p2p_router::{LocalNode, Router};
    use p2p_transport_quic::{QuicConfig, QuicTransport};
    use std::sync::Arc;

    let quic_node = |n: u64| {
        let node = LocalNode::new(key(n), TEST_NETWORK);
        let config = QuicConfig::new().listen_on("127.0.0.1:0".parse().unwrap());
        let transport = Arc::new(QuicTransport::bind(&node, config).unwrap());
        let addr = transport.local_addrs()[0];
        let mut builder = Router::builder(node);
        builder.transport(transport);
        builder
            .channel::<Text>(p2p_router::ChannelDescriptor::new(TEXT_CHANNEL, "test"))
            .unwrap();
        let router = builder.spawn().unwrap();
        let address: p2p_router::PeerAddress = format!("quic://{}@{addr}", key(n).node_id())
            .parse()
            .unwrap();
        (router, address)
    };
    let (a, _) = quic_node(61);
    let (b, b_address) = quic_node(62);
    let mut registry = Registry::default();
    a.register_metrics(&mut registry);
    let mut updates = a.subscribe_peer_updates();
    a.add_peer(b_address).await.unwrap();
    require_up(&mut updates, key(62).node_id()).await;
    let sent = "p2p_transport_sent_packets_total{transport=\"quic\"}";
    let while_open = sample(&scrape(&registry), sent);
    assert!(while_open > 0.0);
    b.shutdown().await;
    require_down(&mut updates, key(62).node_id()).await;
    let after_close = sample(&scrape(&registry), sent);
    assert!(after_close >= while_open, "{after_close} < {while_open}");
    a.shutdown().await;
}
