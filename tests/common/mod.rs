//! Test helpers for router scenarios over the memory transport: build a
//! network of nodes, connect them, and wait on events (never on sleeps).

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use p2p_router::pex::{Pex, PexOptions};
use p2p_router::{
    ChannelDescriptor, ChannelId, ChannelReceiver, ChannelSender, Envelope, LocalNode,
    MemoryPeerStore, NodeId, NodeKey, PeerAddress, PeerManagerOptions, PeerUpdate, Router,
    RouterBuilder, RouterOptions,
};
use p2p_transport_memory::{MemoryNetwork, MemoryTransport};
use tokio::sync::broadcast;

/// The message every test channel carries.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Text {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// A message of another type, to provoke decode failures.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Number {
    #[prost(fixed64, tag = "1")]
    pub value: u64,
}

pub const CHANNEL: ChannelId = ChannelId(0x01);
pub const NETWORK: &str = "test-network";

pub fn text(s: &str) -> Text {
    Text { text: s.to_owned() }
}

pub fn key(n: u8) -> NodeKey {
    NodeKey::from_seed([n; 32])
}

pub fn pm_options() -> PeerManagerOptions {
    let mut o = PeerManagerOptions::default();
    o.min_retry_time = Duration::from_millis(100);
    o.max_retry_time = Duration::from_secs(1);
    o.max_retry_time_persistent = Duration::from_secs(1);
    o.retry_time_jitter = Duration::ZERO;
    o.disconnect_cooldown = Duration::from_millis(100);
    o
}

pub struct Node {
    pub key: NodeKey,
    pub router: Router,
    pub tx: ChannelSender<Text>,
    pub rx: ChannelReceiver<Text>,
    pub updates: broadcast::Receiver<PeerUpdate>,
    pub store: MemoryPeerStore,
}

impl Node {
    pub fn id(&self) -> NodeId {
        self.key.node_id()
    }

    pub fn address(&self) -> PeerAddress {
        PeerAddress::memory(self.id())
    }
}

pub struct NodeBuilder {
    pub key: NodeKey,
    pub network: String,
    pub pm: PeerManagerOptions,
    pub router: RouterOptions,
    pub descriptor: ChannelDescriptor,
    pub store: MemoryPeerStore,
    /// Runs a PEX reactor (and advertises the node's own address) when set.
    pub pex: Option<PexOptions>,
}

impl NodeBuilder {
    pub fn new(key: NodeKey) -> Self {
        Self {
            key,
            network: NETWORK.to_owned(),
            pm: pm_options(),
            router: RouterOptions::default(),
            descriptor: ChannelDescriptor::new(CHANNEL, "test"),
            store: MemoryPeerStore::new(),
            pex: None,
        }
    }

    /// With PEX running and our own address advertised.
    pub fn with_pex(mut self) -> Self {
        self.pm.self_address = Some(PeerAddress::memory(self.key.node_id()));
        self.pex = Some(PexOptions::default());
        self
    }

    pub fn start(self, net: &MemoryNetwork) -> Node {
        let transport = Arc::new(net.transport(&self.key));
        self.start_with(transport)
    }

    pub fn start_with(self, transport: Arc<MemoryTransport>) -> Node {
        self.start_with_declaring(transport, |_| ()).0
    }

    /// Starts on `net`, letting `declare` add channels (or anything else)
    /// to the router builder first; returns what it returned.
    pub fn start_declaring<T>(
        self,
        net: &MemoryNetwork,
        declare: impl FnOnce(&mut RouterBuilder) -> T,
    ) -> (Node, T) {
        let transport = Arc::new(net.transport(&self.key));
        self.start_with_declaring(transport, declare)
    }

    pub fn start_with_declaring<T>(
        self,
        transport: Arc<MemoryTransport>,
        declare: impl FnOnce(&mut RouterBuilder) -> T,
    ) -> (Node, T) {
        let id = self.key.node_id();
        let mut builder = Router::builder(LocalNode::new(self.key.clone(), self.network));
        builder
            .transport(transport)
            .options(self.router)
            .peer_manager(self.pm)
            .peer_store(self.store.clone())
            .rng_seed(1)
            .moniker(format!("node-{}", &id.to_string()[..6]));
        let (tx, rx) = builder.channel::<Text>(self.descriptor).unwrap().split();
        let declared = declare(&mut builder);
        if let Some(options) = self.pex {
            Pex::register(&mut builder, options).unwrap();
        }
        let router = builder.spawn().unwrap();
        let updates = router.subscribe_peer_updates();
        let node = Node {
            key: self.key,
            router,
            tx,
            rx,
            updates,
            store: self.store,
        };
        (node, declared)
    }
}

/// `n` nodes with keys 1..=n on one memory network.
pub fn network(n: u8) -> (MemoryNetwork, Vec<Node>) {
    let net = MemoryNetwork::new();
    let nodes = (1..=n)
        .map(|i| NodeBuilder::new(key(i)).start(&net))
        .collect();
    (net, nodes)
}

/// Tells every node about every other and waits until each sees all others
/// up.
pub async fn connect_all(nodes: &mut [Node]) {
    let addresses: Vec<_> = nodes.iter().map(Node::address).collect();
    for node in nodes.iter() {
        for a in &addresses {
            if a.node_id() != node.id() {
                node.router.add_peer(a.clone()).await.unwrap();
            }
        }
    }
    let ids: Vec<_> = nodes.iter().map(Node::id).collect();
    for node in nodes.iter_mut() {
        let want: BTreeSet<_> = ids.iter().copied().filter(|i| *i != node.id()).collect();
        wait_until_up(&mut node.updates, &want).await;
    }
}

/// Two nodes, the first having dialed the second, both seeing Up.
pub async fn connected_pair() -> (MemoryNetwork, Node, Node) {
    let net = MemoryNetwork::new();
    let mut a = NodeBuilder::new(key(1)).start(&net);
    let mut b = NodeBuilder::new(key(2)).start(&net);
    connect(&mut a, &mut b).await;
    (net, a, b)
}

/// Connects `a` to `b` (a dials) and waits for both to see Up.
pub async fn connect(a: &mut Node, b: &mut Node) {
    a.router.add_peer(b.address()).await.unwrap();
    require_up(&mut a.updates, b.id()).await;
    require_up(&mut b.updates, a.id()).await;
}

/// Tracks Up/Down events until exactly `want` are up.
pub async fn wait_until_up(updates: &mut broadcast::Receiver<PeerUpdate>, want: &BTreeSet<NodeId>) {
    let mut up = BTreeSet::new();
    while &up != want {
        match updates.recv().await.expect("peer updates") {
            PeerUpdate::Up { peer, .. } => {
                up.insert(peer);
            }
            PeerUpdate::Down { peer } => {
                up.remove(&peer);
            }
            _ => {}
        }
    }
}

pub async fn require_update(updates: &mut broadcast::Receiver<PeerUpdate>) -> PeerUpdate {
    updates.recv().await.expect("peer update")
}

pub async fn require_up(updates: &mut broadcast::Receiver<PeerUpdate>, peer: NodeId) {
    loop {
        if let PeerUpdate::Up { peer: p, .. } = require_update(updates).await {
            if p == peer {
                return;
            }
        }
    }
}

pub async fn require_down(updates: &mut broadcast::Receiver<PeerUpdate>, peer: NodeId) {
    loop {
        if let PeerUpdate::Down { peer: p } = require_update(updates).await {
            if p == peer {
                return;
            }
        }
    }
}

pub async fn require_receive(rx: &ChannelReceiver<Text>) -> Envelope<Text> {
    rx.recv().await.expect("a message")
}

/// Nothing arrives: lets every task run to idle (time is paused, so the
/// runtime advances the clock only when all tasks wait), then checks.
pub async fn require_no_message(rx: &ChannelReceiver<Text>) {
    settle().await;
    let got = rx.try_recv();
    assert!(got.is_none(), "unexpected message: {got:?}");
}

/// Lets every task run until all wait. Time is paused: the runtime only
/// advances the clock when every task is idle, so this returns once the
/// system is quiescent, at no real cost.
pub async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Echoes every message on `channel` back to its sender.
pub fn spawn_echo(node: &Node) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = (node.tx.clone(), node.rx.clone());
    tokio::spawn(async move {
        while let Some(env) = rx.recv().await {
            let reply = Envelope {
                peer: env.peer,
                message: text(&format!("echo:{}", env.message.text)),
            };
            if tx.send(reply).await.is_err() {
                return;
            }
        }
    })
}
