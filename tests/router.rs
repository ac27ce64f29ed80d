//! Router scenarios over the memory transport, on paused tokio time.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use p2p_router::transport::{Admission, RefusalReason};
use p2p_router::{
    ChannelDescriptor, ChannelError, ChannelId, ChannelReceiver, ChannelSender, Connection,
    Direction, FullPolicy, NodeInfo, PeerError, PeerErrorKind, PeerUpdate, Protocol, Severity,
};
use p2p_transport_memory::{MemoryConnection, MemoryNetwork};
use prost::Message;

#[tokio::test(start_paused = true)]
async fn eight_nodes_unicast_is_echoed_and_broadcast_arrives_once() {
    let (_net, mut nodes) = network(8);
    connect_all(&mut nodes).await;
    let ids: Vec<_> = nodes.iter().map(TestNode::id).collect();
    let (first, rest) = nodes.split_first().unwrap();

    let echoes: Vec<_> = rest.iter().map(spawn_echo).collect();
    for id in &ids[1..] {
        send_to(&first.tx, *id, text("hi")).await;
    }
    let mut from = BTreeSet::new();
    for _ in 1..ids.len() {
        let env = require_receive(&first.rx).await;
        assert_eq!(env.message, text("echo:hi"));
        from.insert(env.peer);
    }
    assert_eq!(from, ids[1..].iter().copied().collect());
    for e in echoes {
        e.abort();
    }
    settle().await;

    first.tx.broadcast(text("all")).await.unwrap();
    for n in rest {
        let env = require_receive(&n.rx).await;
        assert_eq!((env.peer, env.message), (first.id(), text("all")));
    }
    for n in rest {
        require_no_message(&n.rx).await;
    }
}

#[tokio::test(start_paused = true)]
async fn fatal_peer_error_gives_down_then_up_by_redial() {
    let (_net, mut a, b) = pair_after_report(Severity::Fatal).await;
    require_down(&mut a.updates, b.id()).await;
    require_up(&mut a.updates, b.id()).await;
    assert_eq!(a.router.stats().peer_errors, 1);
}

#[tokio::test(start_paused = true)]
async fn minor_peer_error_lowers_score_without_disconnecting() {
    let (_net, mut a, b) = pair_after_report(Severity::Minor).await;
    settle().await;
    assert!(a.updates.try_recv().is_err(), "no Down");
    assert_eq!(a.router.connected_peers().await.unwrap(), vec![b.id()]);
}

#[tokio::test(start_paused = true)]
async fn builder_channel_rejects_duplicates_and_every_transport_announces_the_channels() {
    let net = MemoryNetwork::new();
    let (node, ()) = TestNodeBuilder::new(key(1)).start_declaring_on(&net, |b| {
        let again = b.channel::<Text>(ChannelDescriptor::new(TEXT_CHANNEL, "dup"));
        assert_eq!(again.err(), Some(ChannelError::Duplicate(TEXT_CHANNEL)));
        b.channel::<Number>(ChannelDescriptor::new(ChannelId(9), "n"))
            .unwrap();
        let bad =
            b.channel::<Text>(ChannelDescriptor::new(ChannelId(10), "x").with_send_capacity(0));
        assert!(matches!(bad, Err(ChannelError::Descriptor(_))));
        for c in 11..=24 {
            b.channel::<Text>(ChannelDescriptor::new(ChannelId(c), "c"))
                .unwrap();
        }
        let over = b.channel::<Text>(ChannelDescriptor::new(ChannelId(25), "x"));
        assert_eq!(over.err(), Some(ChannelError::TooMany));
    });
    let infos = node.router.node_infos();
    assert_eq!(infos.len(), 1);
    let mut want = vec![TEXT_CHANNEL.0, 9];
    want.extend(11..=24);
    assert_eq!(infos[0].channels, want);
    assert_eq!(infos[0].listen_addr, node.address().to_string());
}

#[tokio::test(start_paused = true)]
async fn sends_to_unknown_self_and_departed_peers_are_dropped_and_counted() {
    let (_net, mut nodes) = network(3);
    connect_all(&mut nodes).await;
    let a = &nodes[0];
    let stranger = key(99).node_id();
    a.send_text(stranger, "?").await;
    a.send_text(a.id(), "me").await;
    let stats = a.router.stats();
    assert_eq!((stats.dropped_unknown_peer, stats.dropped_self), (1, 1));

    // Received envelopes carry the sender.
    a.send_text(nodes[1].id(), "x").await;
    let env = require_receive(&nodes[1].rx).await;
    assert_eq!(env.peer, a.id());

    // After a peer leaves, sends to it are dropped and broadcast skips it.
    let mut nodes = nodes;
    let c = nodes.pop().unwrap();
    let c_id = c.id();
    c.router.shutdown().await;
    require_down(&mut nodes[0].updates, c_id).await;
    send_to(&nodes[0].tx, c_id, text("gone")).await;
    assert_eq!(nodes[0].router.stats().dropped_unknown_peer, 2);
    nodes[0].tx.broadcast(text("still here")).await.unwrap();
    assert_eq!(
        require_receive(&nodes[1].rx).await.message,
        text("still here")
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_without_the_channel_is_never_sent_to() {
    let net = MemoryNetwork::new();
    let (mut a, (other_tx, _other_rx)) =
        TestNodeBuilder::new(key(1)).start_declaring_on(&net, |b| {
            b.channel::<Text>(ChannelDescriptor::new(ChannelId(7), "only-a"))
                .unwrap()
                .split()
        });
    let mut b = TestNodeBuilder::new(key(2)).start_on(&net);
    connect(&mut a, &mut b).await;
    send_to(&other_tx, b.id(), text("nope")).await;
    other_tx.broadcast(text("nope")).await.unwrap();
    assert_eq!(a.router.stats().dropped_no_channel, 1);
}

/// A reactor slower than its peer: the receive buffer fills, deliveries
/// wait for room in it (a few slots at a time) and every message still
/// arrives once, in order. Buffers of 1 and 8 slots.
#[tokio::test(start_paused = true)]
async fn a_slow_reactor_gets_every_message_in_order() {
    for capacity in [1, 8] {
        let net = MemoryNetwork::new();
        let slow = ChannelDescriptor::new(ChannelId(0x21), "slow")
            .with_receive_capacity(capacity)
            .with_full_policy(FullPolicy::Wait);
        let declare =
            |r: &mut p2p_router::RouterBuilder| r.channel::<Text>(slow.clone()).unwrap().split();
        let (mut a, (a_chan, _)) = TestNodeBuilder::new(key(1)).start_declaring_on(&net, declare);
        let (mut b, (_, b_chan)) = TestNodeBuilder::new(key(2)).start_declaring_on(&net, declare);
        connect(&mut a, &mut b).await;
        let to = b.id();
        let sender = tokio::spawn(async move {
            for i in 0..300 {
                let message = text(i.to_string());
                a_chan
                    .send(p2p_router::Envelope { peer: to, message })
                    .await
                    .unwrap();
            }
            a_chan
        });
        for i in 0..300 {
            // Slower than the sender: the buffer is full most of the time.
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            let got = require_receive(&b_chan).await;
            assert_eq!(got.message, text(i.to_string()), "capacity {capacity}");
        }
        sender.await.unwrap();
        assert_eq!(b.router.stats().dropped_no_receiver, 0);
    }
}

/// Node `a` sends `Number`s on channel 0x20, where node `b` (from
/// `b_builder`) reads `Text`: a's bytes (fixed64 on field 1) do not decode
/// as b's (a string). Connected.
async fn mismatched_pair(
    net: &MemoryNetwork,
    b_builder: TestNodeBuilder,
) -> (
    TestNode,
    ChannelSender<Number>,
    TestNode,
    ChannelReceiver<Text>,
) {
    let (mut a, raw_tx) = TestNodeBuilder::new(key(1)).start_declaring_on(net, |r| {
        r.channel::<Number>(ChannelDescriptor::new(ChannelId(0x20), "n"))
            .unwrap()
            .split()
            .0
    });
    let (mut b, (_bt, b_rx)) = b_builder.start_declaring_on(net, |r| {
        r.channel::<Text>(ChannelDescriptor::new(ChannelId(0x20), "t"))
            .unwrap()
            .split()
    });
    connect(&mut a, &mut b).await;
    (a, raw_tx, b, b_rx)
}

#[tokio::test(start_paused = true)]
async fn undecodable_message_is_a_peer_error_and_never_reaches_the_reactor() {
    let net = MemoryNetwork::new();
    let (a, raw_tx, b, b_rx) = mismatched_pair(&net, TestNodeBuilder::new(key(2))).await;
    send_to(&raw_tx, b.id(), Number { value: 7 }).await;
    settle().await;
    assert_eq!(b.router.stats().decode_failures, 1);
    assert!(b_rx.try_recv().is_none());
    // The connection survives a minor error.
    a.send_text(b.id(), "fine").await;
    assert_eq!(require_receive(&b.rx).await.message, text("fine"));
}

/// A peer that sends nothing but undecodable messages spends its budget of
/// minor errors and is disconnected, though the node has free slots; only
/// the first error of the window is logged (checked by the budget's unit
/// test), so the peer cannot flood the log either.
#[tokio::test(start_paused = true)]
async fn a_peer_that_keeps_sending_undecodable_messages_is_disconnected() {
    let net = MemoryNetwork::new();
    let mut builder = TestNodeBuilder::new(key(2));
    builder.router.peer_error_budget = 5;
    let (a, raw_tx, mut b, b_rx) = mismatched_pair(&net, builder).await;
    // From 1: a zero is encoded as nothing, which decodes as an empty Text.
    for value in 1..=5 {
        send_to(&raw_tx, b.id(), Number { value }).await;
    }
    settle().await;
    assert_eq!(b.router.stats().decode_failures, 5);
    assert!(
        b.router.connected_peers().await.unwrap().contains(&a.id()),
        "within the budget"
    );
    send_to(&raw_tx, b.id(), Number { value: 6 }).await;
    require_down(&mut b.updates, a.id()).await;
    assert!(b_rx.try_recv().is_none());
}

/// Dials the router's node from a raw memory connection, sends `info` as
/// the handshake and returns what the router answered.
async fn raw_handshake(
    net: &MemoryNetwork,
    from: &p2p_router::NodeKey,
    to: p2p_router::NodeId,
    info: Bytes,
) -> (MemoryConnection, Option<Admission>) {
    let t = net.transport(from);
    let conn = t
        .dial_memory(&p2p_router::Endpoint::memory(to))
        .await
        .unwrap();
    conn.send_raw_handshake(info).await.unwrap();
    // The router's NodeInfo arrives first, then its decision.
    let _theirs = conn.recv_raw_control().await;
    let admission = conn
        .recv_raw_control()
        .await
        .ok()
        .and_then(|b| (b.len() == 1).then(|| Admission::from_byte(b[0])));
    (conn, admission)
}

#[tokio::test(start_paused = true)]
async fn accept_side_refusals_close_the_connection_without_up() {
    let net = MemoryNetwork::new();
    let mut a = TestNodeBuilder::new(key(1)).start_on(&net);
    let peer = key(5);
    let good = {
        let mut i = NodeInfo::new(peer.node_id(), TEST_NETWORK, "p");
        i.listen_addr = format!("memory:{}", peer.node_id());
        i.channels = vec![TEXT_CHANNEL.0];
        i
    };
    let mut cases: Vec<(&str, NodeInfo)> = Vec::new();
    cases.push(("empty", NodeInfo::default()));
    let mut i = good.clone();
    i.node_id = key(6).node_id().to_string();
    cases.push(("key mismatch", i));
    let mut i = good.clone();
    i.node_id = i.node_id.to_uppercase();
    assert_ne!(i.node_id, good.node_id, "the id has hex letters");
    cases.push(("upper-case id", i));
    let mut i = good.clone();
    i.network = "elsewhere".into();
    cases.push(("other network", i));
    let mut i = good.clone();
    i.channels = vec![0x55];
    cases.push(("no common channel", i));
    for (name, info) in cases {
        let (conn, admission) =
            raw_handshake(&net, &peer, a.id(), Bytes::from(info.encode_to_vec())).await;
        assert_eq!(
            admission,
            Some(Admission::Refused(RefusalReason::Incompatible)),
            "{name}"
        );
        conn.closed().await;
    }
    // Garbage instead of a NodeInfo.
    let (conn, _) = raw_handshake(&net, &peer, a.id(), Bytes::from_static(b"\xff\xff\xff")).await;
    conn.closed().await;
    assert!(a.updates.try_recv().is_err(), "no Up for refused peers");
    assert_eq!(a.router.stats().handshake_failures, 6);
    // Still serving: a good peer connects.
    let mut b = TestNodeBuilder::new(key(2)).start_on(&net);
    connect(&mut b, &mut a).await;
}

#[tokio::test(start_paused = true)]
async fn dialing_a_peer_whose_key_does_not_match_the_address_fails() {
    let net = MemoryNetwork::new();
    let mut a = TestNodeBuilder::new(key(1)).start_on(&net);
    // TestNode 2's transport authenticates with node 3's key.
    let impostor = Arc::new(net.transport_claiming(&key(2), key(3).public_key()));
    let _b = TestNodeBuilder::new(key(2)).start_on_transport(impostor);
    dial_memory(&a, 2).await;
    settle().await;
    assert!(a.updates.try_recv().is_err());
    assert!(a.router.stats().handshake_failures >= 1);
}

#[tokio::test(start_paused = true)]
async fn other_network_peer_is_refused_and_marked_inactive() {
    let net = MemoryNetwork::new();
    let mut a = TestNodeBuilder::new(key(1)).start_on(&net);
    let mut builder = TestNodeBuilder::new(key(2));
    builder.network = "another".into();
    let _b = builder.start_on(&net);
    dial_memory(&a, 2).await;
    settle().await;
    assert!(a.updates.try_recv().is_err());
    // Inactive: adding its address again is a no-op.
    let again = p2p_router::PeerAddress::memory(key(2).node_id());
    assert_eq!(a.router.add_peer(again).await, Ok(false));
}

#[tokio::test(start_paused = true)]
async fn simultaneous_dial_ends_with_exactly_one_connection() {
    for _ in 0..5 {
        let (_net, mut nodes) = network(2);
        let (a_addr, b_addr) = (nodes[0].address(), nodes[1].address());
        let (ra, rb) = (&nodes[0].router, &nodes[1].router);
        let (x, y) = tokio::join!(ra.add_peer(b_addr), rb.add_peer(a_addr));
        x.unwrap();
        y.unwrap();
        let (a_id, b_id) = (nodes[0].id(), nodes[1].id());
        wait_until_up(&mut nodes[0].updates, &[b_id].into()).await;
        wait_until_up(&mut nodes[1].updates, &[a_id].into()).await;
        settle().await;
        assert_eq!(nodes[0].router.connected_peers().await.unwrap(), vec![b_id]);
        assert_eq!(nodes[1].router.connected_peers().await.unwrap(), vec![a_id]);
        // The surviving connection carries traffic both ways.
        send_to(&nodes[0].tx, b_id, text("x")).await;
        send_to(&nodes[1].tx, a_id, text("y")).await;
        assert_eq!(require_receive(&nodes[1].rx).await.message, text("x"));
        assert_eq!(require_receive(&nodes[0].rx).await.message, text("y"));
    }
}

#[tokio::test(start_paused = true)]
async fn restarted_peer_takes_over_its_stale_connection() {
    let net = MemoryNetwork::new();
    let mut a = TestNodeBuilder::new(key(1)).start_on(&net);
    let mut b = TestNodeBuilder::new(key(2)).start_on(&net);
    connect(&mut b, &mut a).await;
    // b "crashes": its router is gone, but a never saw the connection close.
    std::mem::forget(b.router);
    // Let the old connection age past the takeover window.
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let mut b2 = TestNodeBuilder::new(key(2)).start_on(&net);
    b2.router.add_peer(a.address()).await.unwrap();
    require_up(&mut b2.updates, a.id()).await;
    b2.send_text(a.id(), "back").await;
    assert_eq!(require_receive(&a.rx).await.message, text("back"));
}

#[tokio::test(start_paused = true)]
async fn slow_peer_does_not_delay_broadcast_to_others() {
    let net = MemoryNetwork::new();
    let mut builder = TestNodeBuilder::new(key(1));
    builder.descriptor = ChannelDescriptor::new(TEXT_CHANNEL, "blocks").with_send_capacity(2);
    let mut a = builder.start_on(&net);
    let mut fast = TestNodeBuilder::new(key(2)).start_on(&net);
    let mut slow = TestNodeBuilder::new(key(3)).start_on(&net);
    connect(&mut a, &mut fast).await;
    connect(&mut a, &mut slow).await;
    // `slow` never reads. Broadcast until a broadcast is stuck on its full
    // queue; `fast` must get every message, including the stuck one.
    let mut n = 0;
    loop {
        let message = text(format!("m{n}"));
        let broadcast = a.tx.broadcast(message.clone());
        tokio::pin!(broadcast);
        let stuck = tokio::select! {
            biased;
            r = &mut broadcast => { r.unwrap(); false }
            () = settle() => true,
        };
        assert_eq!(require_receive(&fast.rx).await.message, message);
        if stuck {
            // Delivered to `fast` while still waiting on `slow`.
            assert!(n > 2, "slow peer buffers filled after {n} messages");
            break;
        }
        n += 1;
    }
    let _ = &mut slow;
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_channel_never_waits_on_a_stalled_peer() {
    let net = MemoryNetwork::new();
    let mut builder = TestNodeBuilder::new(key(1));
    builder.descriptor = ChannelDescriptor::new(TEXT_CHANNEL, "votes")
        .with_send_capacity(4)
        .with_full_policy(FullPolicy::DropOldest);
    let mut a = builder.start_on(&net);
    let mut fast = TestNodeBuilder::new(key(2)).start_on(&net);
    let mut slow = TestNodeBuilder::new(key(3)).start_on(&net);
    connect(&mut a, &mut fast).await;
    connect(&mut a, &mut slow).await;
    for n in 0..2000 {
        a.tx.broadcast(text(format!("m{n}"))).await.unwrap();
        assert_eq!(
            require_receive(&fast.rx).await.message,
            text(format!("m{n}"))
        );
    }
    assert!(
        a.router.stats().dropped_full > 0,
        "the stalled peer's queue overflowed"
    );
}

#[tokio::test(start_paused = true)]
async fn eviction_closes_the_connection_and_gives_down() {
    let net = MemoryNetwork::new();
    let mut a = TestNodeBuilder::new(key(1));
    a.pm.disconnect_cooldown = std::time::Duration::from_secs(3600);
    let mut a = a.start_on(&net);
    let mut b = TestNodeBuilder::new(key(2)).start_on(&net);
    connect(&mut a, &mut b).await;
    a.report(PeerError::fatal(
        b.id(),
        PeerErrorKind::reactor(TEXT_CHANNEL, "evict me"),
    ))
    .await;
    require_down(&mut a.updates, b.id()).await;
    require_down(&mut b.updates, a.id()).await;
}

#[tokio::test(start_paused = true)]
async fn hanging_handshakes_do_not_delay_other_peers() {
    let net = MemoryNetwork::new();
    let mut a = TestNodeBuilder::new(key(1)).start_on(&net);
    // Three connections that never send a NodeInfo.
    let mut hung = Vec::new();
    for n in 10..13 {
        let t = net.transport(&key(n));
        hung.push(
            t.dial_memory(&p2p_router::Endpoint::memory(a.id()))
                .await
                .unwrap(),
        );
    }
    let mut b = TestNodeBuilder::new(key(2)).start_on(&net);
    connect(&mut b, &mut a).await;
    // Dials proceed too while a dial to a silent peer hangs.
    let silent = net.transport(&key(20));
    dial_memory(&a, 20).await;
    let mut c = TestNodeBuilder::new(key(3)).start_on(&net);
    connect(&mut a, &mut c).await;
    drop(silent);
    drop(hung);
}

#[tokio::test(start_paused = true)]
async fn shutdown_leaves_no_task_behind() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let (_net, mut nodes) = network(4);
    connect_all(&mut nodes).await;
    for n in nodes {
        n.router.shutdown().await;
    }
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        before
    );
}

#[tokio::test(start_paused = true)]
async fn peer_updates_carry_the_shared_channels() {
    let (_net, mut nodes) = network(2);
    let b_id = nodes[1].id();
    let b_addr = nodes[1].address();
    nodes[0].router.add_peer(b_addr).await.unwrap();
    match require_update(&mut nodes[0].updates).await {
        PeerUpdate::Up {
            peer,
            channels,
            protocol,
            direction,
            ..
        } => {
            assert_eq!(peer, b_id);
            assert_eq!(channels, vec![TEXT_CHANNEL]);
            assert_eq!(protocol, Protocol::Memory);
            assert_eq!(direction, Direction::Outbound);
        }
        other => panic!("expected Up, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_claiming_our_own_key_is_refused_as_self() {
    let net = MemoryNetwork::new();
    let a = TestNodeBuilder::new(key(1)).start_on(&net);
    let mirror = net.transport_claiming(&key(50), key(1).public_key());
    let conn = mirror
        .dial_memory(&p2p_router::Endpoint::memory(a.id()))
        .await
        .unwrap();
    let mut info = NodeInfo::new(a.id(), TEST_NETWORK, "mirror");
    info.listen_addr = format!("memory:{}", a.id());
    info.channels = vec![TEXT_CHANNEL.0];
    conn.send_raw_handshake(Bytes::from(info.encode_to_vec()))
        .await
        .unwrap();
    let _theirs = conn.recv_raw_control().await.unwrap();
    let admission = conn.recv_raw_control().await.unwrap();
    assert_eq!(
        Admission::from_byte(admission[0]),
        Admission::Refused(RefusalReason::Duplicate)
    );
    conn.closed().await;
}

#[tokio::test(start_paused = true)]
async fn oversized_inbound_message_is_a_peer_error_and_not_delivered() {
    let net = MemoryNetwork::new();
    let mut a = TestNodeBuilder::new(key(1)).start_on(&net);
    let mut small = TestNodeBuilder::new(key(2));
    small.descriptor = ChannelDescriptor::new(TEXT_CHANNEL, "small").with_max_message_size(100);
    let mut b = small.start_on(&net);
    connect(&mut a, &mut b).await;
    a.send_text(b.id(), "x".repeat(500)).await;
    a.send_text(b.id(), "small").await;
    assert_eq!(require_receive(&b.rx).await.message, text("small"));
    settle().await;
    let stats = b.router.stats();
    assert_eq!((stats.stream_errors, stats.peer_errors), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn inbound_connections_over_max_inbound_are_refused_and_freed_slots_are_reused() {
    let net = MemoryNetwork::new();
    let mut hub = TestNodeBuilder::new(key(1));
    hub.router.max_inbound = 1;
    let mut hub = hub.start_on(&net);
    let mut a = TestNodeBuilder::new(key(2)).start_on(&net);
    let mut b = TestNodeBuilder::new(key(3)).start_on(&net);

    connect(&mut a, &mut hub).await;
    // The one inbound slot is taken: b's connection is refused at accept.
    b.router.add_peer(hub.address()).await.unwrap();
    hub.router.stats_when(|s| s.refused_inbound >= 1).await;
    assert_eq!(hub.router.connected_peers().await.unwrap(), vec![a.id()]);

    // Once a leaves, b's retry gets the slot.
    a.router.shutdown().await;
    require_down(&mut hub.updates, key(2).node_id()).await;
    require_up(&mut hub.updates, b.id()).await;
    require_up(&mut b.updates, hub.id()).await;
}

#[tokio::test(start_paused = true)]
async fn an_upgrade_candidate_that_connects_inbound_while_dialed_is_admitted() {
    let net = MemoryNetwork::new();
    let (b_key, c_key) = (key(2), key(3));
    let mut builder = TestNodeBuilder::new(key(1));
    builder.pm.max_connected = 1;
    builder.pm.max_connected_upgrade = 2;
    // c, evicted, would come back as a visitor: not what this is about.
    builder.pm.max_transient = 0;
    builder
        .pm
        .peer_scores
        .insert(b_key.node_id(), p2p_router::PeerScore(10));
    let mut a = builder.start_on(&net);
    let b = TestNodeBuilder::new(b_key).start_on(&net);
    let mut c = TestNodeBuilder::new(c_key).start_on(&net);
    connect(&mut c, &mut a).await;
    // a dials b as an upgrade over c while b dials a.
    let (x, y) = tokio::join!(
        a.router.add_peer(b.address()),
        b.router.add_peer(a.address())
    );
    x.unwrap();
    y.unwrap();
    // c goes, b comes (in either order).
    let (mut b_up, mut c_down) = (false, false);
    while !(b_up && c_down) {
        match require_update(&mut a.updates).await {
            PeerUpdate::Up { peer, .. } if peer == b.id() => b_up = true,
            PeerUpdate::Down { peer } if peer == c.id() => c_down = true,
            _ => {}
        }
    }
    // b's own dial is refused only as the loser of the simultaneous dial
    // (when a's id is the larger, a keeps its own), never as Full.
    if b.id() > a.id() {
        assert_eq!(b.router.stats().handshake_failures, 0);
    }
    // Whatever churn follows (the two connections between a and b settle,
    // c redials a now that a knows its address), b ends up a's one peer.
    let want: std::collections::BTreeSet<_> = [b.id()].into();
    within(
        std::time::Duration::from_secs(60),
        "b as a's one peer",
        async {
            while a.connected_set().await != want {
                require_update(&mut a.updates).await;
            }
        },
    )
    .await;
}

/// A connected pair in which A has reported B for a reactor error of
/// `severity`.
async fn pair_after_report(severity: Severity) -> (MemoryNetwork, TestNode, TestNode) {
    let (net, a, b) = connected_pair().await;
    let kind = PeerErrorKind::reactor(TEXT_CHANNEL, "misbehaved");
    a.report(PeerError::new(b.id(), severity, kind)).await;
    (net, a, b)
}

/// A full node admits a newcomer for a visit (admission 0x10): it serves
/// PEX and hangs up, and neither side counts the visit among its peers.
#[tokio::test(start_paused = true)]
async fn a_full_node_admits_a_visit_that_neither_side_counts_as_a_peer() {
    let net = MemoryNetwork::new();
    let mut builder = TestNodeBuilder::new(key(1)).with_pex();
    builder.pm.max_connected = 1;
    builder.pm.max_connected_upgrade = 0;
    let mut full = builder.start_on(&net);
    let mut first = TestNodeBuilder::new(key(2)).with_pex().start_on(&net);
    connect(&mut first, &mut full).await;
    let mut visitor = TestNodeBuilder::new(key(3)).with_pex().start_on(&net);
    visitor.router.add_peer(full.address()).await.unwrap();
    require_up(&mut visitor.updates, full.id()).await;
    // (It may already be dialing, or connected to, the peers it learned.)
    let visiting = visitor.router.stats_when(|s| s.transient_peers == 1);
    within(
        std::time::Duration::from_secs(1),
        "the visit counted",
        visiting,
    )
    .await;
    let host = full.router.stats_when(|s| s.connected_peers == 2).await;
    assert_eq!(host.transient_peers, 1, "the visitor holds no slot");
    // Served, it is sent on its way; the first peer keeps its slot, and the
    // visitor learned about it.
    require_down(&mut visitor.updates, full.id()).await;
    require_down(&mut full.updates, visitor.id()).await;
    assert_eq!(full.connected_set().await, [first.id()].into());
    assert!(visitor.known_set().await.contains(&first.id()));
    let after = visitor.router.stats_when(|s| s.transient_peers == 0).await;
    assert_eq!(after.transient_peers, 0);
}

/// A peer that restarted on another port dials us while we still dial its
/// old address (which never answers): it is admitted at once, not refused
/// as the loser of a simultaneous dial until our stale dial times out.
/// Real loopback QUIC, where a dial to a silent port hangs; both id orders,
/// so that ours would win the simultaneous-dial tie in one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_dial_does_not_hold_off_the_peer_dialing_us() {
    use p2p_router::{LocalNode, PeerAddress};
    use p2p_transport_quic::{QuicConfig, QuicTransport};
    use std::time::Duration;

    for (ours, theirs) in [(141, 142), (142, 141)] {
        let start = |n: u64, builder: TestNodeBuilder| {
            let local = LocalNode::new(key(n), builder.network.clone());
            let mut config = QuicConfig::new().listen_on("127.0.0.1:0".parse().unwrap());
            // The stale dial then lasts far longer than the test's patience.
            config.idle_timeout = Duration::from_secs(300);
            config.listener.handshake_timeout = Duration::from_secs(300);
            let transport = Arc::new(QuicTransport::bind(&local, config).unwrap());
            let addr = transport.local_addrs()[0];
            let address: PeerAddress = format!("quic://{}@{addr}", key(n).node_id())
                .parse()
                .unwrap();
            builder.start(transport, address)
        };
        let mut builder = TestNodeBuilder::new(key(ours));
        // Our stale dial would otherwise end within the test's patience.
        builder.router.dial_timeout = Duration::from_secs(300);
        let mut a = start(ours, builder);
        let mut b = start(theirs, TestNodeBuilder::new(key(theirs)));
        // Its old address: a socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let stale: PeerAddress = format!(
            "quic://{}@{}",
            key(theirs).node_id(),
            silent.local_addr().unwrap()
        )
        .parse()
        .unwrap();
        a.router.add_peer(stale).await.unwrap();
        b.router.add_peer(a.address()).await.unwrap();
        let patience = Duration::from_secs(60);
        within(patience, "admitted", require_up(&mut a.updates, b.id())).await;
        within(patience, "admitted", require_up(&mut b.updates, a.id())).await;
        a.router.shutdown().await;
        b.router.shutdown().await;
    }
}
