//! The transport conformance suite: one set of checks every transport's
//! tests run (enable the `test-utils` feature).
//!
//! ```ignore
//! p2p_router::conformance::run(|key| async move { Arc::new(make_transport(key)) as _ }, Expectations::default()).await;
//! ```

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use crate::channel::ChannelId;
use crate::identity::{NodeId, NodeKey};
use crate::node_info::NodeInfo;
use crate::transport::{AcceptError, Admission, Connection, ConnectionError, Transport};

/// What the suite may expect of a transport.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Expectations {
    /// Whether a stalled channel leaves the other channels flowing (true for
    /// transports with independent streams; false for one byte stream).
    pub channel_isolation: bool,
    /// Largest message the suite sends.
    pub large_message: usize,
    /// Concurrent connections to one listener in the "many" case. They all
    /// come from 127.0.0.1, so the listener must allow this many
    /// handshakes from one IP.
    pub many_connections: usize,
}

impl Default for Expectations {
    fn default() -> Self {
        Self {
            channel_isolation: true,
            large_message: 4 << 20,
            many_connections: 32,
        }
    }
}

/// A connected, handshaken pair of connections.
pub struct Pair {
    /// The dialing side.
    pub dialer: Arc<dyn Connection>,
    /// The accepting side.
    pub acceptor: Arc<dyn Connection>,
    /// The dialer's `NodeInfo` as the acceptor received it.
    pub dialer_info: NodeInfo,
    /// The acceptor's `NodeInfo` as the dialer received it.
    pub acceptor_info: NodeInfo,
}

/// A `NodeInfo` for `key` with channels 1 to 4.
pub fn node_info(key: &NodeKey) -> NodeInfo {
    let mut info = NodeInfo::new(key.node_id(), "conformance", "node");
    info.listen_addr = "127.0.0.1:1".into();
    info.channels = vec![1, 2, 3, 4];
    info
}

/// Dials `to` from `from`, accepts, handshakes both ways and admits.
pub async fn connect(
    from: &dyn Transport,
    from_key: &NodeKey,
    to: &dyn Transport,
    to_key: &NodeKey,
) -> Pair {
    let endpoint = to
        .listen_endpoints()
        .into_iter()
        .next()
        .expect("listener has an endpoint");
    let (dialed, accepted) = tokio::join!(from.dial(to_key.node_id(), &endpoint), to.accept());
    let dialer: Arc<dyn Connection> = Arc::from(dialed.expect("dial"));
    let acceptor: Arc<dyn Connection> = Arc::from(accepted.expect("accept"));
    let (a_info, b_info) = (node_info(from_key), node_info(to_key));
    let (acceptor_info, dialer_info) =
        tokio::join!(dialer.handshake(&a_info), acceptor.handshake(&b_info));
    let (sent, received) = tokio::join!(
        acceptor.send_admission(Admission::Accepted),
        dialer.recv_admission()
    );
    sent.expect("send admission");
    assert_eq!(received.expect("receive admission"), Admission::Accepted);
    Pair {
        dialer,
        acceptor,
        dialer_info: dialer_info.expect("acceptor handshake"),
        acceptor_info: acceptor_info.expect("dialer handshake"),
    }
}

fn message(channel: u8, n: u32, size: usize) -> Bytes {
    let mut v = vec![channel; size.max(4)];
    v[..4].copy_from_slice(&n.to_be_bytes());
    Bytes::from(v)
}

fn index(m: &Bytes) -> u32 {
    u32::from_be_bytes([m[0], m[1], m[2], m[3]])
}

/// Runs every case. `make` builds a fresh listening transport for a key.
pub async fn run<F, Fut>(make: F, expect: Expectations)
where
    F: Fn(NodeKey) -> Fut,
    Fut: Future<Output = Arc<dyn Transport>>,
{
    let key = |n: u8| NodeKey::from_seed([n; 32]);
    let (ka, kb) = (key(1), key(2));
    let a = make(ka.clone()).await;
    let b = make(kb.clone()).await;

    // Channels before the handshake are the caller's mistake: a usage
    // error, never blamed on the peer.
    usage_before_handshake(&*a, &*b, &kb).await;

    // Dial, accept, handshake: each side learns the other's NodeInfo and key.
    let pair = connect(&*a, &ka, &*b, &kb).await;
    assert_eq!(pair.dialer.peer_key(), kb.public_key());
    assert_eq!(pair.acceptor.peer_key(), ka.public_key());
    assert_eq!(pair.acceptor_info, node_info(&kb));
    assert_eq!(pair.dialer_info, node_info(&ka));
    assert_eq!(
        NodeId::from_public_key(&pair.acceptor.peer_key()),
        ka.node_id()
    );

    ordering(&pair).await;
    batches(&pair).await;
    large_messages(&pair, expect.large_message).await;
    concurrent_channels(&pair).await;
    backpressure(&pair, expect.channel_isolation).await;
    backpressure(
        &Pair {
            dialer: pair.acceptor.clone(),
            acceptor: pair.dialer.clone(),
            dialer_info: pair.acceptor_info.clone(),
            acceptor_info: pair.dialer_info.clone(),
        },
        expect.channel_isolation,
    )
    .await;

    // Close from either side is seen by the other.
    pair.dialer
        .close(crate::transport::CloseReason::Normal)
        .await;
    pair.acceptor.closed().await;
    assert!(pair.acceptor.recv(ChannelId(1), 1024).await.is_err());
    let pair = connect(&*b, &kb, &*a, &ka).await;
    pair.acceptor
        .close(crate::transport::CloseReason::Normal)
        .await;
    pair.dialer.closed().await;
    assert!(
        pair.dialer
            .send(ChannelId(1), message(1, 0, 8))
            .await
            .is_err()
            || {
                // A send may be buffered before the close is noticed; a receive
                // cannot succeed.
                pair.dialer.recv(ChannelId(1), 1024).await.is_err()
            }
    );

    // Many concurrent connections to one listener.
    let dialers: Vec<_> = (10..10 + expect.many_connections)
        .map(|n| key(u8::try_from(n).unwrap_or(u8::MAX)))
        .collect();
    let mut transports = Vec::new();
    for k in &dialers {
        transports.push(make(k.clone()).await);
    }
    let endpoint = b.listen_endpoints()[0].clone();
    let dials =
        futures::future::join_all(transports.iter().map(|t| t.dial(kb.node_id(), &endpoint)));
    let accepts = async {
        let mut accepted = Vec::new();
        for _ in 0..dialers.len() {
            accepted.push(b.accept().await.expect("accept"));
        }
        accepted
    };
    // Bounded: a listener refusing some of them must fail the suite, not
    // hang it.
    let (dialed, accepted) = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        tokio::join!(dials, accepts)
    })
    .await
    .expect("every concurrent dial accepted within 60 s");
    assert!(dialed.iter().all(Result::is_ok));
    let mut keys: Vec<_> = accepted.iter().map(|c| c.peer_key().to_bytes()).collect();
    keys.sort();
    let mut want: Vec<_> = dialers.iter().map(|k| k.public_key().to_bytes()).collect();
    want.sort();
    assert_eq!(keys, want);
    futures::future::join_all(transports.iter().map(|t| t.close())).await;

    // Dialing a closed listener fails; accept on a closed transport returns.
    let closed_endpoint = a.listen_endpoints()[0].clone();
    a.close().await;
    assert!(matches!(a.accept().await, Err(AcceptError::Closed)));
    assert!(b.dial(ka.node_id(), &closed_endpoint).await.is_err());
    b.close().await;
}

async fn usage_before_handshake(from: &dyn Transport, to: &dyn Transport, to_key: &NodeKey) {
    let endpoint = to.listen_endpoints()[0].clone();
    let (dialed, accepted) = tokio::join!(from.dial(to_key.node_id(), &endpoint), to.accept());
    let (dialer, acceptor) = (dialed.expect("dial"), accepted.expect("accept"));
    let usage = ConnectionError::Usage(crate::transport::UsageError::BeforeHandshake);
    let sent = dialer.send(ChannelId(1), message(1, 0, 8)).await;
    assert_eq!(sent.err(), Some(usage.clone()), "send before the handshake");
    let received = acceptor.recv(ChannelId(1), 1024).await;
    assert_eq!(received.err(), Some(usage), "receive before the handshake");
    assert!(!usage_is_peer_fault(), "usage errors are not stream errors");
    dialer.close(crate::transport::CloseReason::Normal).await;
    acceptor.close(crate::transport::CloseReason::Normal).await;
}

fn usage_is_peer_fault() -> bool {
    ConnectionError::Usage(crate::transport::UsageError::BeforeHandshake).is_stream_error()
}

async fn ordering(pair: &Pair) {
    let ch = ChannelId(1);
    let send = async {
        for n in 0..200 {
            pair.dialer.send(ch, message(1, n, 64)).await.expect("send");
        }
    };
    let recv = async {
        for n in 0..200 {
            let m = pair.acceptor.recv(ch, 1024).await.expect("recv");
            assert_eq!(index(&m), n, "in order");
        }
    };
    tokio::join!(send, recv);
}

/// `send_batch` and `recv_batch` keep order, and a receive takes at least
/// one and at most its limit.
async fn batches(pair: &Pair) {
    let ch = ChannelId(1);
    let sent: Vec<Bytes> = (0..100).map(|n| message(1, n, 64)).collect();
    // Concurrently: a transport may hold fewer than 100 unread messages.
    let send = async {
        pair.dialer
            .send_batch(ch, sent.clone())
            .await
            .expect("send batch");
    };
    let recv = async {
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let before = got.len();
            pair.acceptor
                .recv_batch(ch, 1024, 16, &mut got)
                .await
                .expect("recv batch");
            assert!((1..=16).contains(&(got.len() - before)), "batch size");
        }
        got
    };
    let ((), got) = tokio::join!(send, recv);
    assert_eq!(got, sent);
}

async fn large_messages(pair: &Pair, size: usize) {
    let ch = ChannelId(2);
    let big = message(2, 7, size);
    let (sent, got) = tokio::join!(
        pair.dialer.send(ch, big.clone()),
        pair.acceptor.recv(ch, size)
    );
    sent.expect("send large");
    assert_eq!(got.expect("recv large"), big);
    // One byte over the receiver's limit is refused, and the channel (or, for
    // one-stream transports, the connection) reports it as such.
    let (_, got) = tokio::join!(
        pair.dialer.send(ch, message(2, 8, 1025)),
        pair.acceptor.recv(ch, 1024)
    );
    assert!(
        matches!(got, Err(ConnectionError::Oversized { .. })),
        "oversized message refused: {got:?}"
    );
}

async fn concurrent_channels(pair: &Pair) {
    let lanes = [ChannelId(3), ChannelId(4)];
    let sends = futures::future::join_all(lanes.iter().map(|&ch| async move {
        for n in 0..100 {
            pair.dialer
                .send(ch, message(ch.0, n, 256))
                .await
                .expect("send");
        }
    }));
    let recvs = futures::future::join_all(lanes.iter().map(|&ch| async move {
        for n in 0..100 {
            let m = pair.acceptor.recv(ch, 1024).await.expect("recv");
            assert_eq!((m[4], index(&m)), (ch.0, n));
        }
    }));
    tokio::join!(sends, recvs);
}

/// Channel 3 is not read while its sender keeps sending; channel 4 must
/// keep flowing (if isolation is expected), and channel 3 then delivers
/// everything in order.
async fn backpressure(pair: &Pair, isolation: bool) {
    let (stalled, live) = (ChannelId(3), ChannelId(4));
    // Far more than any transport buffers (lanes, stream windows).
    const COUNT: u32 = 3000;
    let flood = async {
        for n in 0..COUNT {
            pair.dialer
                .send(stalled, message(3, n, 1024))
                .await
                .expect("flood send");
        }
    };
    let others = async {
        if isolation {
            // Both directions of the live channel keep flowing.
            let directions = [
                (&pair.dialer, &pair.acceptor),
                (&pair.acceptor, &pair.dialer),
            ];
            for (from, to) in directions {
                for n in 0..50 {
                    from.send(live, message(4, n, 64)).await.expect("live send");
                    let m = to.recv(live, 1024).await.expect("live recv");
                    assert_eq!(index(&m), n);
                }
            }
        }
        // Resume reading the stalled channel: nothing lost, in order.
        for n in 0..COUNT {
            let m = pair.acceptor.recv(stalled, 2048).await.expect("drain");
            assert_eq!(index(&m), n);
        }
    };
    tokio::join!(flood, others);
}
