//! What one TCP stream means for channels, and routers over mconn next to
//! QUIC.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use p2p_router::conformance;
use p2p_router::{
    Channel, ChannelDescriptor, ChannelId, Envelope, LocalNode, NodeKey, PeerAddress, PeerUpdate,
    Router, Transport,
};
use p2p_transport_mconn::{MconnConfig, MconnTransport};
use p2p_transport_quic::{QuicConfig, QuicTransport};
use tokio::sync::watch;

const PATIENCE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// MConnection's real behaviour: a channel nobody reads stalls every
/// channel of the connection (the reader cannot skip past its packets),
/// and everything flows again, in order and complete, once it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_channel_stalls_the_whole_connection_until_read() {
    let (ka, kb) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
    let mut config = MconnConfig::fast().listen_on("127.0.0.1:0".parse().unwrap());
    config.recv_queue_capacity = 1;
    config.send_queue_capacity = 4;
    let a = MconnTransport::bind(&ka, config.clone()).await.unwrap();
    let b = MconnTransport::bind(&kb, config).await.unwrap();
    let pair = conformance::connect(&a, &ka, &b, &kb).await;
    let (stalled, live) = (ChannelId(3), ChannelId(4));
    const COUNT: u32 = 200;

    // Flood the stalled channel, counting what the sender got rid of.
    let (progress_tx, mut progress) = watch::channel(0u32);
    let sender = pair.dialer.clone();
    let flood = tokio::spawn(async move {
        for n in 0..COUNT {
            let mut m = vec![0u8; 64 * 1024];
            m[..4].copy_from_slice(&n.to_be_bytes());
            sender.send(stalled, Bytes::from(m)).await.unwrap();
            progress_tx.send_replace(n + 1);
        }
    });
    // Once the writer has taken more messages than its queue holds, at
    // least three whole ones are on the wire ahead of anything sent now.
    within("flood progress", progress.wait_for(|&n| n >= 4 + 3))
        .await
        .unwrap();
    pair.dialer
        .send(live, Bytes::from_static(b"live"))
        .await
        .unwrap();
    // The receiver queued one stalled message and is blocked on the next:
    // the live message behind them cannot arrive.
    let blocked =
        tokio::time::timeout(Duration::from_millis(500), pair.acceptor.recv(live, 1024)).await;
    assert!(blocked.is_err(), "mconn has no per-channel flow control");
    assert!(!flood.is_finished());

    // Reading the stalled channel releases everything, in order.
    let reader = pair.acceptor.clone();
    let drain = tokio::spawn(async move {
        for n in 0..COUNT {
            let m = reader.recv(stalled, 1 << 20).await.unwrap();
            assert_eq!(m[..4], n.to_be_bytes());
        }
    });
    let got = within("live after drain", pair.acceptor.recv(live, 1024)).await;
    assert_eq!(got.unwrap(), Bytes::from_static(b"live"));
    within("drain", drain).await.unwrap();
    within("flood", flood).await.unwrap();
}

#[derive(Clone, PartialEq, prost::Message)]
struct Text {
    #[prost(string, tag = "1")]
    text: String,
}

/// A router over `transports` with the chat channel declared.
fn router(key: &NodeKey, transports: Vec<Arc<dyn Transport>>) -> (Router, Channel<Text>) {
    let mut builder = Router::builder(node(key));
    for t in transports {
        builder.transport(t);
    }
    let chat = builder
        .channel::<Text>(ChannelDescriptor::new(ChannelId(0x30), "chat"))
        .unwrap();
    (builder.spawn().unwrap(), chat)
}

fn node(key: &NodeKey) -> LocalNode {
    LocalNode::new(key.clone(), "mixed-chain")
}

async fn wait_up(
    updates: &mut tokio::sync::broadcast::Receiver<PeerUpdate>,
    peers: &[p2p_router::NodeId],
) {
    within("peers up", async {
        let mut missing: Vec<_> = peers.to_vec();
        while !missing.is_empty() {
            if let PeerUpdate::Up { peer, .. } = updates.recv().await.unwrap() {
                missing.retain(|p| *p != peer);
            }
        }
    })
    .await;
}

/// A node with QUIC and mconn side by side talks to an mconn-only node
/// (`mconn://` address) and a QUIC-only node in the same router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_use_mconn_and_quic_side_by_side() {
    let (kh, km, kq) = (
        NodeKey::from_seed([5; 32]),
        NodeKey::from_seed([6; 32]),
        NodeKey::from_seed([7; 32]),
    );
    let localhost = "127.0.0.1:0".parse().unwrap();
    let hub_mconn = Arc::new(
        MconnTransport::bind(&kh, MconnConfig::fast().listen_on(localhost))
            .await
            .unwrap(),
    );
    let hub_quic =
        Arc::new(QuicTransport::bind(&node(&kh), QuicConfig::new().listen_on(localhost)).unwrap());
    let hub_listen = hub_mconn.local_addrs()[0];
    let (hub, hub_chat) = router(&kh, vec![hub_mconn, hub_quic.clone()]);
    // Each transport's peers are told that transport's own address.
    let announced: Vec<_> = hub
        .node_infos()
        .into_iter()
        .map(|i| i.listen_addr)
        .collect();
    assert_eq!(
        announced,
        vec![
            hub_listen.to_string(),
            hub_quic.local_addrs()[0].to_string()
        ]
    );
    let m_transport = Arc::new(
        MconnTransport::bind(&km, MconnConfig::fast())
            .await
            .unwrap(),
    );
    let (m, m_chat) = router(&km, vec![m_transport]);
    let q_transport =
        Arc::new(QuicTransport::bind(&node(&kq), QuicConfig::new().listen_on(localhost)).unwrap());
    let (q, q_chat) = router(&kq, vec![q_transport]);
    let mut hub_updates = hub.subscribe_peer_updates();

    let to_hub_mconn: PeerAddress = format!("mconn://{}@{}", kh.node_id(), hub_listen)
        .parse()
        .unwrap();
    m.add_peer(to_hub_mconn).await.unwrap();
    let to_hub_quic: PeerAddress = format!("quic://{}@{}", kh.node_id(), hub_quic.local_addrs()[0])
        .parse()
        .unwrap();
    q.add_peer(to_hub_quic).await.unwrap();
    wait_up(&mut hub_updates, &[km.node_id(), kq.node_id()]).await;

    hub_chat
        .broadcast(Text {
            text: "to all".into(),
        })
        .await
        .unwrap();
    for chat in [&m_chat, &q_chat] {
        let got = within("broadcast", chat.recv()).await.unwrap();
        assert_eq!(
            (got.peer, got.message.text.as_str()),
            (kh.node_id(), "to all")
        );
    }
    m_chat
        .send(Envelope {
            peer: kh.node_id(),
            message: Text {
                text: "over mconn".into(),
            },
        })
        .await
        .unwrap();
    let got = within("from mconn", hub_chat.recv()).await.unwrap();
    assert_eq!(
        (got.peer, got.message.text.as_str()),
        (km.node_id(), "over mconn")
    );
    for r in [m, q, hub] {
        r.shutdown().await;
    }
}
