//! Starting the nodes: each with its own key, temporary data directory
//! (peer store), transport on loopback, router, PEX, and the channels of
//! its workload (the gossip channels, or the consensus ones).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use p2p_consensus::{ConsensusChannels, ConsensusConfig};
use p2p_router::pex::{Pex, PexOptions};
use p2p_router::{
    Channel, ChannelDescriptor, ChannelId, FullPolicy, LocalNode, NodeKey, PeerAddress,
    PeerManagerOptions, RedbPeerStore, Router, RouterOptions, Transport,
};
use p2p_transport_mconn::{MconnConfig, MconnTransport};
use p2p_transport_quic::{QuicConfig, QuicTransport};

use crate::workload::{Block, Vote};

pub const NETWORK: &str = "localnet";
pub const VOTE: ChannelId = ChannelId(0x20);
pub const BLOCK: ChannelId = ChannelId(0x21);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    Quic,
    Mconn,
}

pub struct Node {
    pub index: usize,
    pub router: Router,
    pub votes: Channel<Vote>,
    pub blocks: Channel<Block>,
    /// The consensus channels, until a validator takes them.
    pub consensus: Option<ConsensusChannels>,
    pub address: PeerAddress,
}

impl Node {
    /// The peers this node keeps: its connections, less visits that hold
    /// no slot (a full node's visitors, its own visits to full nodes).
    pub fn kept_peers(&self) -> u64 {
        let stats = self.router.stats();
        stats.connected_peers.saturating_sub(stats.transient_peers)
    }
}

/// A transport on loopback for one of `nodes` nodes.
pub async fn transport(
    kind: TransportKind,
    node: &LocalNode,
    nodes: usize,
) -> Result<Arc<dyn Transport>, Box<dyn std::error::Error>> {
    let loopback = "127.0.0.1:0".parse()?;
    Ok(match kind {
        TransportKind::Quic => {
            let mut config = QuicConfig::new().listen_on(loopback);
            // Every peer comes from 127.0.0.1.
            config.listener.single_source(nodes);
            Arc::new(QuicTransport::bind(node, config)?)
        }
        TransportKind::Mconn => {
            // No rate limit and no flush delay: a local demo, not CometBFT
            // defaults.
            let mut config = MconnConfig::fast().listen_on(loopback);
            config.listener.single_source(nodes);
            Arc::new(MconnTransport::bind(node.key(), config).await?)
        }
    })
}

/// The network every node is started into.
pub struct Shape {
    pub nodes: usize,
    /// Most peers per node; 0: every other node.
    pub max_connected: usize,
    /// Peers each node dials towards; 0: `max_connected`.
    pub target_connected: usize,
    pub block_size: usize,
    /// The consensus workload's settings; `None` for the gossip workload.
    pub consensus: Option<ConsensusConfig>,
}

/// Starts node `index` with its data in `dir`; nodes other than 0 get node
/// 0's address as their only seed.
pub async fn start(
    index: usize,
    shape: &Shape,
    kind: TransportKind,
    dir: &Path,
    seed: Option<PeerAddress>,
) -> Result<Node, Box<dyn std::error::Error>> {
    let (nodes, block_size) = (shape.nodes, shape.block_size);
    let key = NodeKey::load_or_generate(dir.join("node_key.json"))?;
    let node = LocalNode::new(key, NETWORK);
    let transport = transport(kind, &node, nodes).await?;
    let endpoint = transport
        .listen_endpoints()
        .into_iter()
        .next()
        .ok_or("transport has no listen address")?;
    let address = endpoint.peer_address(node.node_id());

    let mut pm = PeerManagerOptions::default();
    pm.self_address = Some(address.clone());
    pm.max_connected = match shape.max_connected {
        0 => nodes + 4,
        m => m,
    };
    pm.target_connected = shape.target_connected;
    pm.max_peers = pm.max_peers.max(2 * nodes);
    pm.min_retry_time = Duration::from_millis(100);
    pm.retry_time_jitter = Duration::from_millis(200);

    // Every peer comes from 127.0.0.1: lift the per-IP limits.
    let mut options = RouterOptions::default();
    options.single_source(nodes);
    let mut builder = Router::builder(node);
    builder
        .transport(transport)
        .options(options)
        .peer_manager(pm)
        .peer_store(RedbPeerStore::open(dir.join("peers.redb"))?)
        .moniker(format!("node{index}"));
    Pex::register(&mut builder, PexOptions::default())?;
    // Both channels are reliable: a full queue makes the sender wait.
    let votes = builder.channel::<Vote>(
        ChannelDescriptor::new(VOTE, "vote")
            .with_priority(10)
            .with_send_capacity(4096)
            .with_receive_capacity(4096)
            .with_full_policy(FullPolicy::Wait),
    )?;
    let blocks = builder.channel::<Block>(
        ChannelDescriptor::new(BLOCK, "block")
            .with_priority(1)
            .with_send_capacity(4)
            .with_receive_capacity(4)
            .with_max_message_size(block_size + 1024)
            .with_full_policy(FullPolicy::Wait),
    )?;
    let consensus = match &shape.consensus {
        Some(config) => Some(ConsensusChannels::declare(&mut builder, config)?),
        None => None,
    };
    let router = builder.spawn()?;
    if let Some(seed) = seed {
        router.add_peer(seed).await?;
    }
    Ok(Node {
        index,
        router,
        votes,
        blocks,
        consensus,
        address,
    })
}
