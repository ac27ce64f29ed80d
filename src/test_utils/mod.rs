//! Helpers for testing code built on the router, over any transport
//! (feature `test-utils`).
//!
//! [`TestNodeBuilder`] starts a router with one [`Text`] channel on the
//! transport it is given; [`connect`], [`connect_all`] and the `require_*`
//! functions wait on events, never on sleeps. The memory transport's
//! `p2p_transport_memory::test_utils::network(n)` builds on this for
//! whole in-process networks.
//!
//! Nothing here bounds a wait: under paused time a missing event surfaces
//! as the runtime's "every task idle" deadlock panic, and over real sockets
//! wrap a wait in [`within`].

pub mod attack;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::channel::{ChannelDescriptor, ChannelId};
use crate::identity::{NodeId, NodeKey};
use crate::peer_store::MemoryPeerStore;
use crate::pex::{Pex, PexOptions};
use crate::router::{ChannelReceiver, ChannelSender, Envelope, Router, RouterBuilder};
use crate::transport::Transport;
use crate::{LocalNode, PeerAddress, PeerManagerOptions, PeerUpdate, RouterOptions};

/// The network test nodes join unless told otherwise.
pub const TEST_NETWORK: &str = "test-network";

/// The channel of a test node's [`Text`] messages.
pub const TEXT_CHANNEL: ChannelId = ChannelId(0x01);

/// The message a test node's channel carries.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Text {
    /// The text.
    #[prost(string, tag = "1")]
    pub text: String,
}

/// A [`Text`] of `s`.
pub fn text(s: impl Into<String>) -> Text {
    Text { text: s.into() }
}

/// The key of test node `n`: the same for every `n` on every run.
pub fn key(n: u64) -> NodeKey {
    let mut seed = [7u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    NodeKey::from_seed(seed)
}

/// Peer-manager options for tests: retries within a second, no jitter, a
/// short cooldown, so reconnection scenarios run in little (virtual) time.
pub fn fast_retry_options() -> PeerManagerOptions {
    PeerManagerOptions {
        min_retry_time: Duration::from_millis(100),
        max_retry_time: Duration::from_secs(1),
        max_retry_time_persistent: Duration::from_secs(1),
        retry_time_jitter: Duration::ZERO,
        disconnect_cooldown: Duration::from_millis(100),
        ..PeerManagerOptions::default()
    }
}

/// Router options for `peers` nodes that all connect from one address
/// (loopback): the per-IP limits are lifted to fit them.
pub fn loopback_options(peers: usize) -> RouterOptions {
    let mut options = RouterOptions::default();
    options.single_source(peers);
    options
}

/// A running test node: its router, its [`Text`] channel and a
/// subscription to its peer updates taken before anything connected.
#[derive(Debug)]
#[non_exhaustive]
pub struct TestNode {
    /// The node's key.
    pub key: NodeKey,
    /// The router.
    pub router: Router,
    /// Sends on [`TEXT_CHANNEL`].
    pub tx: ChannelSender<Text>,
    /// Receives on [`TEXT_CHANNEL`].
    pub rx: ChannelReceiver<Text>,
    /// Peer updates since the router started.
    pub updates: broadcast::Receiver<PeerUpdate>,
    /// The node's peer store (shared with the router).
    pub store: MemoryPeerStore,
    /// Where other nodes dial this one.
    pub address: PeerAddress,
}

impl TestNode {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.key.node_id()
    }

    /// Where other nodes dial this one.
    pub fn address(&self) -> PeerAddress {
        self.address.clone()
    }

    /// Sends `message` as a [`Text`] to `peer`, failing the test if the
    /// router refuses it.
    pub async fn send_text(&self, peer: NodeId, message: impl Into<String>) {
        let envelope = Envelope {
            peer,
            message: text(message),
        };
        self.tx.send(envelope).await.expect("send");
    }

    /// Reports `error` about a peer on the node's channel, failing the test
    /// if the router refuses it.
    pub async fn report(&self, error: crate::PeerError) {
        self.tx.report(error).await.expect("report");
    }
}

/// How a [`TestNode`] is started; every field has a test default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TestNodeBuilder {
    /// The node's key.
    pub key: NodeKey,
    /// The network it joins ([`TEST_NETWORK`]).
    pub network: String,
    /// Peer-manager options ([`fast_retry_options`]).
    pub pm: PeerManagerOptions,
    /// Router options (defaults).
    pub router: RouterOptions,
    /// The [`Text`] channel's descriptor.
    pub descriptor: ChannelDescriptor,
    /// The peer store (a fresh in-memory one).
    pub store: MemoryPeerStore,
    /// PEX options, when the node runs PEX.
    pub pex: Option<PexOptions>,
}

impl TestNodeBuilder {
    /// Test defaults for the node with `key`.
    pub fn new(key: NodeKey) -> Self {
        Self {
            key,
            network: TEST_NETWORK.to_owned(),
            pm: fast_retry_options(),
            router: RouterOptions::default(),
            descriptor: ChannelDescriptor::new(TEXT_CHANNEL, "test"),
            store: MemoryPeerStore::new(),
            pex: None,
        }
    }

    /// Runs PEX with default options.
    pub fn with_pex(mut self) -> Self {
        self.pex = Some(PexOptions::default());
        self
    }

    /// Starts the node on `transport`; `address` is where others dial it.
    pub fn start(self, transport: Arc<dyn Transport>, address: PeerAddress) -> TestNode {
        self.start_declaring(transport, address, |_| ()).0
    }

    /// Starts the node, letting `declare` add channels, reactors or
    /// anything else to the router builder first; returns what it returned.
    /// With PEX on, the node advertises `address` as its own.
    pub fn start_declaring<T>(
        mut self,
        transport: Arc<dyn Transport>,
        address: PeerAddress,
        declare: impl FnOnce(&mut RouterBuilder) -> T,
    ) -> (TestNode, T) {
        let id = self.key.node_id();
        if self.pex.is_some() && self.pm.self_address.is_none() {
            self.pm.self_address = Some(address.clone());
        }
        let mut builder = Router::builder(LocalNode::new(self.key.clone(), self.network));
        builder
            .transport(transport)
            .options(self.router)
            .peer_manager(self.pm)
            .peer_store(self.store.clone())
            .rng_seed(1)
            .moniker(format!("node-{}", &id.to_string()[..6]));
        let (tx, rx) = builder
            .channel::<Text>(self.descriptor)
            .expect("the test channel is valid")
            .split();
        let declared = declare(&mut builder);
        if let Some(options) = self.pex {
            Pex::register(&mut builder, options).expect("PEX registers once");
        }
        let router = builder.spawn().expect("test router starts");
        let updates = router.subscribe_peer_updates();
        let node = TestNode {
            key: self.key,
            router,
            tx,
            rx,
            updates,
            store: self.store,
            address,
        };
        (node, declared)
    }
}

/// Sends `message` to `peer` on `tx`, failing the test if the router
/// refuses it.
pub async fn send_to<M: prost::Message>(
    tx: &impl AsRef<ChannelSender<M>>,
    peer: NodeId,
    message: M,
) {
    let envelope = Envelope { peer, message };
    tx.as_ref().send(envelope).await.expect("send");
}

impl TestNode {
    /// The peers the router has connected, as a set.
    pub async fn connected_set(&self) -> BTreeSet<NodeId> {
        let peers = self.router.connected_peers().await.expect("router runs");
        peers.into_iter().collect()
    }

    /// The peers the router knows of, as a set.
    pub async fn known_set(&self) -> BTreeSet<NodeId> {
        let peers = self.router.known_peers().await.expect("router runs");
        peers.into_iter().collect()
    }
}

/// `a` dials `b` at `b.address` and both see each other up.
pub async fn connect(a: &mut TestNode, b: &mut TestNode) {
    connect_at(a, b, b.address()).await
}

/// `a` dials `b` at `address` and both see each other up.
pub async fn connect_at(a: &mut TestNode, b: &mut TestNode, address: PeerAddress) {
    a.router.add_peer(address).await.expect("add_peer");
    require_up(&mut a.updates, b.id()).await;
    require_up(&mut b.updates, a.id()).await;
}

/// Tells every node about every other and waits until each sees all the
/// others up.
pub async fn connect_all(nodes: &mut [TestNode]) {
    let addresses: Vec<_> = nodes.iter().map(TestNode::address).collect();
    for node in nodes.iter() {
        for a in &addresses {
            if a.node_id() != node.id() {
                node.router.add_peer(a.clone()).await.expect("add_peer");
            }
        }
    }
    let ids: Vec<_> = nodes.iter().map(TestNode::id).collect();
    for node in nodes.iter_mut() {
        let want: BTreeSet<_> = ids.iter().copied().filter(|i| *i != node.id()).collect();
        wait_until_up(&mut node.updates, &want).await;
    }
}

/// Follows Up and Down events until exactly `want` are up.
pub async fn wait_until_up(updates: &mut broadcast::Receiver<PeerUpdate>, want: &BTreeSet<NodeId>) {
    let mut up = BTreeSet::new();
    while &up != want {
        match require_update(updates).await {
            PeerUpdate::Up { peer, .. } => {
                up.insert(peer);
            }
            PeerUpdate::Down { peer } => {
                up.remove(&peer);
            }
        }
    }
}

/// The next peer update.
pub async fn require_update(updates: &mut broadcast::Receiver<PeerUpdate>) -> PeerUpdate {
    updates.recv().await.expect("peer updates continue")
}

/// Waits for `peer` to come up.
pub async fn require_up(updates: &mut broadcast::Receiver<PeerUpdate>, peer: NodeId) {
    loop {
        if let PeerUpdate::Up { peer: p, .. } = require_update(updates).await {
            if p == peer {
                return;
            }
        }
    }
}

/// Waits for `peer` to go down.
pub async fn require_down(updates: &mut broadcast::Receiver<PeerUpdate>, peer: NodeId) {
    loop {
        if let PeerUpdate::Down { peer: p } = require_update(updates).await {
            if p == peer {
                return;
            }
        }
    }
}

/// The next message on `rx`.
pub async fn require_receive<M>(rx: &ChannelReceiver<M>) -> Envelope<M> {
    rx.recv().await.expect("a message")
}

/// Checks that nothing arrives on `rx` once every task has gone idle
/// (paused time only: see [`settle`]).
pub async fn require_no_message<M: std::fmt::Debug>(rx: &ChannelReceiver<M>) {
    settle().await;
    let got = rx.try_recv();
    assert!(got.is_none(), "unexpected message: {got:?}");
}

/// Lets every task run until all wait. Under paused time the runtime
/// advances the clock only when every task is idle, so this returns once
/// the system is quiescent, at no real cost. Not for real-time tests.
pub async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Awaits `f`, failing the test with `what` if it takes longer than
/// `patience`: turns a hang over real sockets into a failure.
pub async fn within<T>(patience: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(patience, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {patience:?} waiting for {what}"))
}

/// Echoes every [`Text`] the node receives back to its sender, prefixed
/// with `echo:`.
pub fn spawn_echo(node: &TestNode) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = (node.tx.clone(), node.rx.clone());
    tokio::spawn(async move {
        while let Some(env) = rx.recv().await {
            let reply = Envelope {
                peer: env.peer,
                message: text(format!("echo:{}", env.message.text)),
            };
            if tx.send(reply).await.is_err() {
                return;
            }
        }
    })
}

/// This process's resident memory, in bytes (Linux; 0 elsewhere), for
/// tests that bound memory under load or across restarts.
pub fn process_rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
