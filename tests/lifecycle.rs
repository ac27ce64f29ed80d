//! The router's lifecycle and the guarantees reactors rely on: what is
//! declared before the start, what ends with the router, and the order of
//! peer updates and messages. Memory transport, paused time unless a test
//! needs real threads.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use p2p_router::{
    ChannelDescriptor, ChannelId, Envelope, FullPolicy, LocalNode, PeerError, PeerErrorKind,
    PeerUpdate, Router, RouterOptions, RouterOptionsError, SendError, StartError,
};
use p2p_transport_memory::MemoryNetwork;

const EXTRA: ChannelId = ChannelId(0x40);

fn extra() -> ChannelDescriptor {
    ChannelDescriptor::new(EXTRA, "extra")
}

#[tokio::test(start_paused = true)]
async fn a_restarted_node_with_an_extra_channel_uses_it_with_both_peers() {
    let net = MemoryNetwork::new();
    // a and b know the extra channel from the start; c does not, yet.
    let (mut a, a_extra) = TestNodeBuilder::new(key(1))
        .start_declaring_on(&net, |r| r.channel::<Text>(extra()).unwrap());
    let (mut b, b_extra) = TestNodeBuilder::new(key(2))
        .start_declaring_on(&net, |r| r.channel::<Text>(extra()).unwrap());
    let mut c = TestNodeBuilder::new(key(3)).start_on(&net);
    connect(&mut a, &mut b).await;
    connect(&mut c, &mut a).await;
    connect(&mut c, &mut b).await;
    send_to(&a_extra, c.id(), text("not yet")).await;
    assert_eq!(a.router.stats().dropped_no_channel, 1);

    // c restarts with the extra channel and dials both again.
    let c_id = c.id();
    c.router.shutdown().await;
    require_down(&mut a.updates, c_id).await;
    require_down(&mut b.updates, c_id).await;
    let (mut c, c_extra) = TestNodeBuilder::new(key(3))
        .start_declaring_on(&net, |r| r.channel::<Text>(extra()).unwrap());
    connect(&mut c, &mut a).await;
    connect(&mut c, &mut b).await;
    for (from, name) in [(&a_extra, "a"), (&b_extra, "b")] {
        send_to(&from, c_id, text(name)).await;
        let got = c_extra.recv().await.unwrap();
        assert_eq!(got.message, text(name));
    }
    c_extra.broadcast(text("to both")).await.unwrap();
    assert_eq!(a_extra.recv().await.unwrap().message, text("to both"));
    assert_eq!(b_extra.recv().await.unwrap().message, text("to both"));
}

#[tokio::test(start_paused = true)]
async fn after_shutdown_receivers_drain_then_end_and_sends_fail() {
    let (_net, a, b) = connected_pair().await;
    a.send_text(b.id(), "last").await;
    // Let it reach b's receive buffer, then stop b.
    settle().await;
    assert_eq!(b.router.channel_stats()[0].received_messages, 1);
    let (tx, rx) = (b.tx.clone(), b.rx.clone());
    b.router.shutdown().await;
    assert_eq!(rx.recv().await.map(|e| e.message), Some(text("last")));
    assert_eq!(
        rx.recv().await,
        None,
        "the router stopped: no more messages"
    );
    let sent = tx
        .send(Envelope {
            peer: a.id(),
            message: text("too late"),
        })
        .await;
    assert_eq!(sent, Err(SendError::RouterStopped));
    assert_eq!(
        tx.broadcast(text("too late")).await,
        Err(SendError::RouterStopped)
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_only_when_pex_and_every_reactor_have_stopped() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let net = MemoryNetwork::new();
    let finished = Arc::new(AtomicBool::new(false));
    let done = finished.clone();
    // The reactor's clean-up lasts until the test releases it.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (node, ()) = TestNodeBuilder::new(key(1))
        .with_pex()
        .start_declaring_on(&net, |r| {
            r.reactor("slow", move |cx| async move {
                cx.shutdown.cancelled().await;
                let _ = released.await;
                done.store(true, Ordering::SeqCst);
            });
        });
    let mut peer = TestNodeBuilder::new(key(2)).with_pex().start_on(&net);
    let mut node = node;
    connect(&mut peer, &mut node).await;
    assert!(metrics.num_alive_tasks() > baseline);
    let stopping = tokio::spawn(node.router.shutdown());
    settle().await;
    assert!(!stopping.is_finished(), "shutdown waits for the reactor");
    release.send(()).unwrap();
    stopping.await.unwrap();
    assert!(finished.load(Ordering::SeqCst));
    peer.router.shutdown().await;
    // PEX, both actors, every peer task and reactor: all gone.
    assert_eq!(metrics.num_alive_tasks(), baseline);
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "reactor bug")]
async fn a_reactor_panic_is_raised_again_by_shutdown() {
    let net = MemoryNetwork::new();
    let (node, ()) = TestNodeBuilder::new(key(1)).start_declaring_on(&net, |r| {
        r.reactor("buggy", |_cx| async { panic!("reactor bug") });
    });
    settle().await;
    // The router kept running meanwhile.
    assert_eq!(node.router.connected_peers().await.unwrap(), vec![]);
    node.router.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn invalid_options_are_a_typed_error_at_spawn() {
    let mut builder = Router::builder(LocalNode::new(key(1), TEST_NETWORK));
    let mut options = RouterOptions::default();
    options.dial_concurrency = 0;
    builder.options(options);
    match builder.spawn() {
        Err(StartError::Options(e)) => {
            assert_eq!(e, RouterOptionsError::Zero("dial_concurrency"))
        }
        other => panic!("expected an options error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn messages_still_queued_when_a_peer_goes_down_are_dropped_and_counted() {
    let net = MemoryNetwork::new();
    // b reads nothing and buffers one message: the transport stalls, and
    // a's queue for b fills up.
    let stalled = ChannelDescriptor::new(EXTRA, "stalled")
        .with_send_capacity(8)
        .with_receive_capacity(1)
        .with_full_policy(FullPolicy::DropNewest);
    let (mut a, a_tx) = TestNodeBuilder::new(key(1))
        .start_declaring_on(&net, |r| r.channel::<Text>(stalled.clone()).unwrap());
    let (mut b, _b_rx) = TestNodeBuilder::new(key(2))
        .start_declaring_on(&net, |r| r.channel::<Text>(stalled.clone()).unwrap());
    connect(&mut a, &mut b).await;
    // In rounds, so that a's sender takes what the lane to b still holds.
    for round in 0..10 {
        for i in 0..20 {
            let message = text(format!("{round}.{i}"));
            a_tx.send(Envelope {
                peer: b.id(),
                message,
            })
            .await
            .unwrap();
        }
        settle().await;
    }
    let queued = a.router.channel_stats()[1].queued;
    assert!(queued > 0, "the queue to b is backed up");
    let kind = PeerErrorKind::reactor(EXTRA, "go away");
    a.router
        .report(PeerError::fatal(b.id(), kind))
        .await
        .unwrap();
    require_down(&mut a.updates, b.id()).await;
    settle().await;
    let stats = a.router.channel_stats()[1].clone();
    assert_eq!(stats.queued, 0);
    assert_eq!(stats.dropped_disconnected, queued);
    assert_eq!(a.router.stats().dropped_disconnected, queued);
}

/// Up is published before any message of the peer reaches a receive
/// buffer: a reactor that gets a message has already been told of its
/// sender. Real threads, repeated, so a reordering would show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_up_is_published_before_its_first_message_is_delivered() {
    for round in 0..20u8 {
        let net = MemoryNetwork::new();
        let mut a = TestNodeBuilder::new(key(1)).start_on(&net);
        let b = TestNodeBuilder::new(key(2)).start_on(&net);
        let mut b_updates = b.router.subscribe_peer_updates();
        // a sends the moment it sees b up; b checks its updates the moment
        // the message arrives.
        a.router.add_peer(b.address()).await.unwrap();
        require_up(&mut a.updates, b.id()).await;
        a.send_text(b.id(), "first").await;
        let got = b.rx.recv().await.unwrap();
        assert_eq!(got.peer, a.id());
        match b_updates.try_recv() {
            Ok(PeerUpdate::Up { peer, .. }) => assert_eq!(peer, a.id()),
            other => panic!("round {round}: message before Up ({other:?})"),
        }
        a.router.shutdown().await;
        b.router.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn reactors_hold_a_handle_and_see_every_up_from_the_start() {
    let net = MemoryNetwork::new();
    let (tx, mut seen) = tokio::sync::mpsc::channel(4);
    let (mut a, ()) = TestNodeBuilder::new(key(1)).start_declaring_on(&net, |r| {
        r.reactor("watcher", move |mut cx| async move {
            loop {
                tokio::select! {
                    () = cx.shutdown.cancelled() => return,
                    update = cx.peer_updates.recv() => {
                        if let Ok(PeerUpdate::Up { peer, .. }) = update {
                            let known = cx.router.known_peers().await.unwrap_or_default();
                            let _ = tx.send((peer, known.contains(&peer))).await;
                        }
                    }
                }
            }
        });
    });
    let mut b = TestNodeBuilder::new(key(2)).start_on(&net);
    connect(&mut b, &mut a).await;
    assert_eq!(seen.recv().await, Some((b.id(), true)));
}

#[tokio::test(start_paused = true)]
async fn failed_store_writes_are_retried_off_the_actor_and_nothing_is_lost() {
    use p2p_router::peer_store::PeerStore;
    use p2p_router::MemoryPeerStore;
    let net = MemoryNetwork::new();
    let store = MemoryPeerStore::new();
    store.fail_next_writes(3);
    let mut builder = TestNodeBuilder::new(key(1));
    builder.store = store.clone();
    let mut a = builder.start_on(&net);
    let mut b = TestNodeBuilder::new(key(2)).start_on(&net);
    connect(&mut a, &mut b).await;
    // The router serves while its writes fail.
    a.send_text(b.id(), "still working").await;
    assert_eq!(require_receive(&b.rx).await.message, text("still working"));
    // The retries run on the paused clock until a write succeeds.
    settle().await;
    assert!(store.successful_writes() >= 1, "a retry succeeded");
    a.router.shutdown().await;
    let loaded = store.clone().load().unwrap();
    let known: Vec<_> = loaded.peers.iter().map(|r| r.node_id).collect();
    assert!(known.contains(&b.id()), "{known:?}");
}
