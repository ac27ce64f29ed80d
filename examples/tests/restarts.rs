//! A router started and stopped 100 times in one process, over QUIC and
//! over MConnection, each time with a peer it exchanges a message with:
//! afterwards the runtime's live tasks and the process's file descriptors
//! are back at their baseline, the heap's live bytes (counted by this
//! binary's allocator: RSS also moves with the allocator's caching) have
//! not grown with the count, and the listen port was bound again at once
//! every time.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use p2p_router::test_utils::{
    connect_at, key, require_receive, text, TestNode, TestNodeBuilder, TEST_NETWORK,
};
use p2p_router::{LocalNode, NodeKey, PeerAddress, Protocol, Transport};
use p2p_transport_mconn::{MconnConfig, MconnTransport};
use p2p_transport_quic::{QuicConfig, QuicTransport};

/// Counts the heap's live bytes, to tell a leak from the allocator's
/// caching (which RSS cannot).
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

fn live_bytes() -> isize {
    ALLOCATOR.allocated() as isize
}

const ROUNDS: usize = 100;
const WARM_UP: usize = 20;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Quic,
    Mconn,
}

async fn transport(kind: Kind, key: &NodeKey, listen: SocketAddr) -> Arc<dyn Transport> {
    match kind {
        Kind::Quic => {
            let node = LocalNode::new(key.clone(), TEST_NETWORK);
            Arc::new(QuicTransport::bind(&node, QuicConfig::new().listen_on(listen)).unwrap())
        }
        Kind::Mconn => Arc::new(
            MconnTransport::bind(key, MconnConfig::fast().listen_on(listen))
                .await
                .unwrap(),
        ),
    }
}

async fn node(kind: Kind, n: u64, listen: SocketAddr) -> TestNode {
    let key = key(n);
    let transport = transport(kind, &key, listen).await;
    let at = transport.listen_endpoints()[0].socket_addr().unwrap();
    let scheme = match kind {
        Kind::Quic => Protocol::Quic,
        Kind::Mconn => Protocol::Mconn,
    };
    let address: PeerAddress = format!("{}://{}@{at}", scheme.scheme(), key.node_id())
        .parse()
        .unwrap();
    TestNodeBuilder::new(key).start(transport, address)
}

/// One round: the listener on `port`, a dialer, one message each way,
/// both stopped. Returns the port the listener had.
async fn round(kind: Kind, port: u16) -> u16 {
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut listener = node(kind, 1, listen).await;
    let bound = listener.address.clone();
    let mut dialer = node(kind, 2, "127.0.0.1:0".parse().unwrap()).await;
    connect_at(&mut dialer, &mut listener, bound.clone()).await;
    dialer.send_text(listener.id(), "ping").await;
    assert_eq!(require_receive(&listener.rx).await.message, text("ping"));
    listener.send_text(dialer.id(), "pong").await;
    assert_eq!(require_receive(&dialer.rx).await.message, text("pong"));
    let port = bound
        .to_string()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    dialer.router.shutdown().await;
    listener.router.shutdown().await;
    port
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// The live tasks once `baseline` is reached, or after 5 s: a task that a
/// shutdown cancelled is dropped on its worker's next turn, which on a
/// loaded machine can take a while. There is no event for a task count,
/// so this watches it between scheduler turns.
async fn settles_to(baseline: usize) -> usize {
    let settled = async {
        while alive_tasks() > baseline {
            tokio::task::yield_now().await;
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), settled).await;
    alive_tasks()
}

async fn restarts_leave_nothing_behind(kind: Kind) {
    // Warm-up rounds: lazily built state (TLS providers, DNS) and the
    // allocator's first caches are not a leak.
    let port = round(kind, 0).await;
    for _ in 0..WARM_UP {
        round(kind, port).await;
    }
    let tasks = settles_to(0).await;
    let fds = open_fds();
    let rss = p2p_router::test_utils::process_rss_bytes();
    let live = live_bytes();
    for _ in 0..ROUNDS {
        assert_eq!(round(kind, port).await, port, "the port is bound again");
    }
    let tasks_after = settles_to(tasks).await;
    let fds_after = open_fds();
    let rss_after = p2p_router::test_utils::process_rss_bytes();
    let live_after = live_bytes();
    println!(
        "{kind:?}: {ROUNDS} rounds: tasks {tasks} -> {tasks_after}, fds {fds} -> {fds_after}, \
         heap {} -> {} bytes, RSS {:.1} -> {:.1} MB",
        live,
        live_after,
        rss as f64 / 1e6,
        rss_after as f64 / 1e6
    );
    assert_eq!(tasks_after, tasks, "live tasks back at the baseline");
    assert!(fds_after <= fds, "file descriptors back at the baseline");
    // A leak of 1 kB a round would be 100 kB here.
    assert!(
        live_after - live < 100_000,
        "the heap grew by {} bytes",
        live_after - live
    );
}

/// One test for both transports: file descriptors and RSS are the
/// process's, so the two must not run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_restarted_a_hundred_times_leave_nothing_behind() {
    restarts_leave_nothing_behind(Kind::Quic).await;
    restarts_leave_nothing_behind(Kind::Mconn).await;
}
