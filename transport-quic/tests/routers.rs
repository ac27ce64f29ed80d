//! Routers over real loopback QUIC: addressing by DNS name and IPv6
//! literal, unicast, broadcast, peer updates, channel isolation, large
//! messages, restarts and closes.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::*;
use p2p_router::transport::Admission;
use p2p_router::{conformance, ChannelDescriptor, Connection, Envelope, NodeInfo, PeerUpdate};
use p2p_transport_quic::QuicTransport;

async fn recv_text(node: &mut QuicNode) -> Envelope<Text> {
    within("chat message", node.rx.recv()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_routers_by_localhost_and_ipv6_literal() {
    let mut a = NodeBuilder::new(key(1)).start();
    let mut b = NodeBuilder::new(key(2)).listen(&["[::1]:0"]).start();
    let mut c = NodeBuilder::new(key(3))
        .listen(&["127.0.0.1:0", "[::1]:0"])
        .start();
    // DNS at dial time: `localhost`.
    let to_c = c.localhost_address();
    connect(&mut a, &mut c, to_c).await;
    // IPv6 literals, from an IPv4-only node and from a dual-stack one.
    let to_b = b.address();
    assert!(to_b.to_string().contains("[::1]"));
    connect(&mut a, &mut b, to_b.clone()).await;
    let c_to_b = to_b;
    c.router.add_peer(c_to_b).await.unwrap();
    require_up(&mut c.updates, b.id()).await;
    require_up(&mut b.updates, c.id()).await;

    for node in [&a, &b, &c] {
        let peers = node.connected_set().await;
        let want: BTreeSet<_> = [a.id(), b.id(), c.id()]
            .into_iter()
            .filter(|id| *id != node.id())
            .collect();
        assert_eq!(peers, want);
    }

    // Unicast.
    a.send_text(b.id(), "to b").await;
    let got = recv_text(&mut b).await;
    assert_eq!((got.peer, got.message), (a.id(), text("to b")));

    // Broadcast reaches every peer once.
    c.tx.broadcast(text("from c")).await.unwrap();
    for node in [&mut a, &mut b] {
        let got = recv_text(node).await;
        assert_eq!((got.peer, got.message.text.as_str()), (c.id(), "from c"));
    }

    // Peer updates: C leaves, both others see it Down.
    c.node.router.shutdown().await;
    require_down(&mut a.updates, key(3).node_id()).await;
    require_down(&mut b.updates, key(3).node_id()).await;
    a.node.router.shutdown().await;
    b.node.router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_channel_never_blocks_the_other_and_loses_nothing() {
    let mut a = NodeBuilder::new(key(4)).start();
    let mut b = NodeBuilder::new(key(5)).start();
    let to_b = b.address();
    connect(&mut a, &mut b, to_b).await;
    const COUNT: usize = 3000;
    let (bulk, b_id) = (a.bulk.clone(), b.id());
    // B does not read its bulk channel while A floods it: A's sends block
    // on stream flow control once B's queue and window are full.
    let flood = tokio::spawn(async move {
        for n in 0..COUNT {
            let mut data = vec![0u8; 1024];
            data[..8].copy_from_slice(&(n as u64).to_be_bytes());
            send_to(&bulk, b_id, Blob { data }).await;
        }
    });
    for n in 0..50 {
        a.send_text(b.id(), format!("a{n}")).await;
        assert_eq!(recv_text(&mut b).await.message, text(format!("a{n}")));
        b.send_text(a.id(), format!("b{n}")).await;
        assert_eq!(recv_text(&mut a).await.message, text(format!("b{n}")));
    }
    assert!(
        !flood.is_finished(),
        "the flood should be blocked by flow control"
    );
    // Resume reading: everything arrives, in order.
    for n in 0..COUNT {
        let got = within("bulk", b.bulk_rx.recv()).await.unwrap();
        assert_eq!(
            got.message.data[..8],
            (n as u64).to_be_bytes(),
            "message {n}"
        );
    }
    within("flood", flood).await.unwrap();
}

/// Blob whose encoding is exactly `size` bytes (for sizes of 2^21..2^28).
fn blob_encoding_to(size: usize) -> Blob {
    Blob {
        data: vec![0xab; size - 5],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mebibytes_arrive_intact_and_one_byte_more_is_refused() {
    const MAX: usize = 16 << 20;
    let mut a = NodeBuilder::new(key(6)).start();
    let mut builder = NodeBuilder::new(key(7));
    builder.bulk = ChannelDescriptor::new(BULK, "bulk").with_max_message_size(MAX);
    let mut b = builder.start();
    let to_b = b.address();
    connect(&mut a, &mut b, to_b).await;

    let mut big = blob_encoding_to(MAX);
    let n = big.data.len();
    big.data[n - 1] = 0xcd;
    assert_eq!(prost::Message::encoded_len(&big), MAX);
    send_to(&a.bulk, b.id(), big.clone()).await;
    let got = within("16 MiB", b.bulk_rx.recv()).await.unwrap();
    assert!(got.message == big, "16 MiB message corrupted");

    let over = blob_encoding_to(MAX + 1);
    send_to(&a.bulk, b.id(), over).await;
    wait_for_stats(&b.router, "oversized refused", |s| s.stream_errors >= 1).await;
    // B refused the stream and queued STOP_SENDING before anything it
    // sends next; once A has B's next message, A knows the stream is
    // stopped, and its next bulk message goes out on a new stream.
    b.send_text(a.id(), "after the refusal").await;
    assert_eq!(recv_text(&mut a).await.message, text("after the refusal"));
    send_to(&a.bulk, b.id(), Blob { data: vec![1] }).await;
    let got = within("recovery", b.bulk_rx.recv()).await.unwrap();
    assert_eq!(got.message.data.len(), 1);
    assert_eq!(b.router.connected_peers().await.unwrap(), vec![a.id()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_on_a_new_port_replaces_its_stale_connection() {
    let mut a = NodeBuilder::new(key(8)).start();
    let proxy = UdpProxy::start(a.addrs[0]).await;
    let mut b1 = NodeBuilder::new(key(9)).start();
    let via_proxy = format!("quic://{}@{}", a.id(), proxy.addr).parse().unwrap();
    b1.router.add_peer(via_proxy).await.unwrap();
    require_up(&mut b1.updates, a.id()).await;
    require_up(&mut a.updates, b1.id()).await;

    // B vanishes without a word (its packets can no longer reach A), then
    // comes back with the same key on a new port.
    proxy.kill().await;
    drop(b1);
    let mut b2 = NodeBuilder::new(key(9)).start();
    let to_a = a.address();
    b2.router.add_peer(to_a).await.unwrap();
    require_up(&mut b2.updates, a.id()).await;

    // A swaps the stale connection for the new one: Down, then Up.
    let b_id = b2.id();
    require_down(&mut a.updates, b_id).await;
    require_up(&mut a.updates, b_id).await;

    // Traffic continues both ways over the new connection.
    a.send_text(b_id, "hello again").await;
    assert_eq!(recv_text(&mut b2).await.message, text("hello again"));
    b2.send_text(a.id(), "from b2").await;
    assert_eq!(recv_text(&mut a).await.message, text("from b2"));
    assert_eq!(a.router.connected_peers().await.unwrap(), vec![b_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_router_is_seen_as_down_by_its_peers() {
    let mut a = NodeBuilder::new(key(10)).start();
    let mut b = NodeBuilder::new(key(11)).start();
    let mut c = NodeBuilder::new(key(12)).start();
    let (to_a, to_c) = (a.address(), c.address());
    connect(&mut b, &mut a, to_a).await;
    connect(&mut b, &mut c, to_c).await;
    let started = std::time::Instant::now();
    b.node.router.shutdown().await;
    require_down(&mut a.updates, key(11).node_id()).await;
    require_down(&mut c.updates, key(11).node_id()).await;
    // A close frame, not the idle timeout, told them.
    assert!(started.elapsed() < p2p_transport_quic::QuicConfig::new().idle_timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_opening_a_stream_for_an_unknown_channel_is_reported() {
    let mut node = NodeBuilder::new(key(13)).start();
    let hostile_key = key(14);
    let hostile =
        QuicTransport::bind(&common::node(&hostile_key), quic_config("127.0.0.1:0")).unwrap();
    let conn = hostile.dial_quic(node.id(), node.addrs[0]).await.unwrap();
    let mut info = NodeInfo::new(hostile_key.node_id(), NETWORK, "hostile");
    info.listen_addr = hostile.local_addrs()[0].to_string();
    info.channels = vec![CHAT.0, BULK.0];
    conn.handshake(&info).await.unwrap();
    assert_eq!(conn.recv_admission().await.unwrap(), Admission::Accepted);
    require_up(&mut node.updates, hostile_key.node_id()).await;

    let mut s = conn.quinn().open_uni().await.unwrap();
    s.write_all(&[77, 0, 1, 0]).await.unwrap();
    wait_for_stats(&node.router, "peer error", |s| {
        s.stream_errors >= 1 && s.peer_errors >= 1
    })
    .await;
    // A minor error: the peer stays connected and its channels work.
    conn.send(
        CHAT,
        Bytes::from(prost::Message::encode_to_vec(&text("still ok"))),
    )
    .await
    .unwrap();
    let got = recv_text(&mut node).await;
    assert_eq!(got.message, text("still ok"));
    assert!(matches!(
        node.updates.try_recv(),
        Err(_) | Ok(PeerUpdate::Up { .. })
    ));
    let _ = conformance::node_info;
}

#[tokio::test]
async fn a_peer_dropped_for_misbehaving_is_told_so_in_the_close_code() {
    let mut node = NodeBuilder::new(key(15)).start();
    let peer_key = key(16);
    let peer = QuicTransport::bind(&common::node(&peer_key), quic_config("127.0.0.1:0")).unwrap();
    let conn = peer.dial_quic(node.id(), node.addrs[0]).await.unwrap();
    let mut info = NodeInfo::new(peer_key.node_id(), NETWORK, "misbehaving");
    info.listen_addr = peer.local_addrs()[0].to_string();
    info.channels = vec![CHAT.0];
    conn.handshake(&info).await.unwrap();
    assert_eq!(conn.recv_admission().await.unwrap(), Admission::Accepted);
    require_up(&mut node.updates, peer_key.node_id()).await;

    // A reactor judges the peer's behaviour fatal: the router drops it
    // with the PeerError code (docs/PROTOCOL.md), not a plain close.
    node.tx
        .report(p2p_router::PeerError::fatal(
            peer_key.node_id(),
            p2p_router::PeerErrorKind::reactor(CHAT, "bad votes"),
        ))
        .await
        .unwrap();
    let closed = within("close", conn.quinn().closed()).await;
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(0x02), "{close:?}");
        }
        other => panic!("expected an application close, got {other:?}"),
    }
}
