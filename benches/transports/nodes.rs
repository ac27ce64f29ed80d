//! Router nodes for the benchmark: the same two channels over each
//! transport.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use p2p_router::{
    ChannelDescriptor, ChannelId, ChannelReceiver, ChannelSender, LocalNode, NodeId, NodeKey,
    PeerAddress, PeerManagerOptions, PeerUpdate, Router, RouterOptions, Transport,
};
use p2p_transport_mconn::{MconnConfig, MconnTransport};
use p2p_transport_memory::MemoryNetwork;
use p2p_transport_quic::{QuicConfig, QuicTransport, SessionCache};
use tokio::sync::broadcast;

use crate::wan::{self, Side};

pub const NETWORK: &str = "bench";
pub const BULK: ChannelId = ChannelId(1);
pub const HI: ChannelId = ChannelId(2);

/// What every benchmark channel carries: bytes and a send timestamp.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
    /// Wall-clock send time, ns since the Unix epoch (comparable across
    /// processes on one machine).
    #[prost(fixed64, tag = "2")]
    pub sent_ns: u64,
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The transports measured through the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Quic,
    MconnDefault,
    MconnFast,
    Memory,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Quic,
        Kind::MconnDefault,
        Kind::MconnFast,
        Kind::Memory,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Quic => "quic",
            Kind::MconnDefault => "mconn-default",
            Kind::MconnFast => "mconn-fast",
            Kind::Memory => "memory",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether peers can live in another process.
    pub fn crosses_processes(self) -> bool {
        self != Kind::Memory
    }
}

pub struct Node {
    pub key: NodeKey,
    pub router: Router,
    pub bulk_tx: ChannelSender<Payload>,
    pub bulk_rx: ChannelReceiver<Payload>,
    pub hi_tx: ChannelSender<Payload>,
    pub hi_rx: ChannelReceiver<Payload>,
    pub updates: broadcast::Receiver<PeerUpdate>,
    pub address: PeerAddress,
    /// Open but unused channels (kept so they stay open).
    pub _idle: Vec<p2p_router::Channel<Payload>>,
}

impl Node {
    pub fn id(&self) -> NodeId {
        self.key.node_id()
    }
}

pub use p2p_router::test_utils::key;

/// Options for benchmark nodes: every peer comes from 127.0.0.1, and
/// thousands of them may connect.
pub fn router_options(peers: usize) -> RouterOptions {
    let mut o = p2p_router::test_utils::loopback_options(peers);
    o.max_inbound_handshakes = 256;
    o.max_handshakes_per_ip = o.max_inbound_handshakes;
    o.dial_concurrency = 64;
    o
}

pub fn pm_options(peers: usize) -> PeerManagerOptions {
    let mut o = PeerManagerOptions::default();
    o.max_connected = peers + 16;
    o.max_outgoing = peers + 16;
    o.max_peers = o.max_peers.max(2 * peers + 64);
    o.min_retry_time = Duration::from_millis(100);
    o
}

pub async fn transport(
    kind: Kind,
    key: &NodeKey,
    listen: bool,
    memory: &MemoryNetwork,
) -> Arc<dyn Transport> {
    transport_on(kind, key, listen, memory, Side::A, None).await
}

/// A transport whose sockets are `side`'s (see [`wan`]); QUIC keeps its
/// session tickets in `sessions` when given.
async fn transport_on(
    kind: Kind,
    key: &NodeKey,
    listen: bool,
    memory: &MemoryNetwork,
    side: Side,
    sessions: Option<&SessionCache>,
) -> Arc<dyn Transport> {
    let any = SocketAddr::new(wan::bind_ip(side), 0);
    match kind {
        Kind::Quic => {
            let mut c = QuicConfig::new();
            if listen {
                c = c.listen_on(any);
            }
            c.listener.max_connections = 8192;
            c.listener.max_incoming_handshakes = 256;
            // Every peer comes from 127.0.0.1.
            c.listener.single_source(8192);
            if let Some(windows) = wan::windows() {
                c.stream_receive_window = windows.stream;
                c.max_congestion_window = Some(windows.congestion);
            }
            if let Some(sessions) = sessions {
                c.session_cache = sessions.clone();
            }
            let node = LocalNode::new(key.clone(), NETWORK);
            Arc::new(wan::on_side(side, || QuicTransport::bind(&node, c)).expect("quic"))
        }
        Kind::MconnDefault | Kind::MconnFast => {
            let mut c = if kind == Kind::MconnFast {
                MconnConfig::fast()
            } else {
                MconnConfig::new()
            };
            if listen {
                c = c.listen_on(any);
            }
            c.listener.max_connections = 8192;
            c.listener.max_incoming_handshakes = 256;
            // Every peer comes from 127.0.0.1.
            c.listener.single_source(8192);
            Arc::new(
                wan::on_side_async(side, MconnTransport::bind(key, c))
                    .await
                    .expect("mconn"),
            )
        }
        Kind::Memory => Arc::new(memory.transport(key)),
    }
}

/// A router node of `kind`, its two channels open.
pub async fn node(
    kind: Kind,
    seed: u64,
    listen: bool,
    peers: usize,
    memory: &MemoryNetwork,
) -> Node {
    node_on(kind, seed, listen, peers, memory, Side::A, None).await
}

/// A node that keeps its QUIC session tickets in `sessions`, as a node
/// restarted in the same process would.
pub async fn node_with_sessions(
    kind: Kind,
    seed: u64,
    memory: &MemoryNetwork,
    sessions: &SessionCache,
) -> Node {
    node_on(kind, seed, true, 4, memory, Side::A, Some(sessions)).await
}

async fn node_on(
    kind: Kind,
    seed: u64,
    listen: bool,
    peers: usize,
    memory: &MemoryNetwork,
    side: Side,
    sessions: Option<&SessionCache>,
) -> Node {
    let key = key(seed);
    let transport = transport_on(kind, &key, listen, memory, side, sessions).await;
    let id = key.node_id();
    let address = match transport.listen_endpoints().into_iter().next() {
        Some(e) => e.peer_address(id),
        None => PeerAddress::memory(id),
    };
    let mut builder = Router::builder(LocalNode::new(key.clone(), NETWORK));
    builder
        .transport(transport)
        .options(router_options(peers))
        .peer_manager(pm_options(peers))
        .rng_seed(seed)
        .moniker("bench");
    let bulk = ChannelDescriptor::new(BULK, "bulk")
        .with_priority(1)
        .with_max_message_size(2 << 20)
        .with_send_capacity(64)
        .with_receive_capacity(64);
    let hi = ChannelDescriptor::new(HI, "hi")
        .with_priority(10)
        .with_send_capacity(1024)
        .with_receive_capacity(1024);
    let (bulk_tx, bulk_rx) = builder.channel::<Payload>(bulk).expect("bulk").split();
    let (hi_tx, hi_rx) = builder.channel::<Payload>(hi).expect("hi").split();
    // Fourteen more, idle: every node has 16 channels open, as a real
    // node does (and as `idle_memory` must count).
    let idle = (3..=16u8)
        .map(|c| {
            builder
                .channel::<Payload>(ChannelDescriptor::new(ChannelId(c), "idle"))
                .expect("idle channel")
        })
        .collect();
    let router = builder.spawn().expect("router");
    let updates = router.subscribe_peer_updates();
    Node {
        key,
        router,
        bulk_tx,
        bulk_rx,
        hi_tx,
        hi_rx,
        updates,
        address,
        _idle: idle,
    }
}

/// Waits until `peer` is down on `updates`.
pub async fn wait_down(updates: &mut broadcast::Receiver<PeerUpdate>, peer: NodeId) {
    loop {
        match updates.recv().await {
            Ok(PeerUpdate::Down { peer: p, .. }) if p == peer => return,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Waits until every id in `peers` is up on `updates`.
pub async fn wait_up(updates: &mut broadcast::Receiver<PeerUpdate>, peers: &[NodeId]) {
    let mut missing: std::collections::BTreeSet<NodeId> = peers.iter().copied().collect();
    while !missing.is_empty() {
        match updates.recv().await {
            Ok(PeerUpdate::Up { peer, .. }) => {
                missing.remove(&peer);
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Two connected nodes (A dialed B); over the WAN link when this process
/// runs on it.
pub async fn pair(kind: Kind) -> (Node, Node, MemoryNetwork) {
    let memory = MemoryNetwork::new();
    let mut a = node_on(kind, 1, true, 4, &memory, Side::A, None).await;
    let mut b = node_on(kind, 2, true, 4, &memory, Side::B, None).await;
    a.router.add_peer(b.address.clone()).await.expect("add");
    wait_up(&mut a.updates, &[b.id()]).await;
    wait_up(&mut b.updates, &[a.id()]).await;
    (a, b, memory)
}
