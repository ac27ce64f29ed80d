//! Measures the memory an idle QUIC peer costs: one hub router and N peer
//! routers (default 200) in this process, every router with 16 channels
//! open; each peer dials the hub. Prints the resident-set growth per
//! connection (both ends, routers included) once all are up and idle.
//!
//! `cargo run --release -p p2p-transport-quic --example idle_memory [peers]`

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use p2p_router::{
    ChannelDescriptor, ChannelId, LocalNode, NodeKey, PeerAddress, PeerManagerOptions, PeerUpdate,
    Router, RouterOptions,
};
use p2p_transport_quic::{QuicConfig, QuicTransport};

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

/// Resident set size of this process, from /proc (Linux).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn router(
    key: &NodeKey,
    peers: usize,
) -> Result<(Router, Vec<std::net::SocketAddr>), Box<dyn std::error::Error>> {
    let node = LocalNode::new(key.clone(), "idle");
    let mut config = QuicConfig::new().listen_on("127.0.0.1:0".parse()?);
    // Every peer comes from 127.0.0.1.
    config.listener.single_source(peers);
    let transport = Arc::new(QuicTransport::bind(&node, config)?);
    let addrs = transport.local_addrs();
    let mut pm = PeerManagerOptions::default();
    pm.max_connected = peers + 8;
    pm.max_outgoing = peers + 8;
    let mut options = RouterOptions::default();
    // Every peer comes from 127.0.0.1.
    options.single_source(peers);
    let mut builder = Router::builder(node);
    builder
        .transport(transport)
        .options(options)
        .peer_manager(pm);
    for c in 1..=16u8 {
        // Channels are declared before the start; nobody reads them here.
        builder.channel::<Empty>(ChannelDescriptor::new(ChannelId(c), "c"))?;
    }
    Ok((builder.spawn()?, addrs))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let peers: usize = std::env::args().nth(1).map_or(Ok(200), |s| s.parse())?;
    let hub_key = NodeKey::from_seed([0; 32]);
    let (hub, hub_addrs) = router(&hub_key, peers)?;
    let mut updates = hub.subscribe_peer_updates();
    let mut nodes = Vec::new();
    for n in 0..peers {
        let mut seed = [1u8; 32];
        seed[..8].copy_from_slice(&(n as u64).to_le_bytes());
        let key = NodeKey::from_seed(seed);
        let (r, _) = router(&key, 4)?;
        nodes.push((key, r));
    }
    // Let allocations from start-up settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_bytes();
    let hub_address: PeerAddress =
        format!("quic://{}@{}", hub_key.node_id(), hub_addrs[0]).parse()?;
    let mut want = BTreeSet::new();
    for (key, r) in &nodes {
        r.add_peer(hub_address.clone()).await?;
        want.insert(key.node_id());
    }
    let mut up = BTreeSet::new();
    while up != want {
        match updates.recv().await? {
            PeerUpdate::Up { peer, .. } => {
                up.insert(peer);
            }
            PeerUpdate::Down { peer } => {
                up.remove(&peer);
            }
            _ => {}
        }
    }
    // Idle for a few keep-alive rounds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_bytes();
    let per = after.saturating_sub(before) as f64 / peers as f64;
    println!(
        "{peers} idle peers, 16 channels each: RSS {:.1} MiB -> {:.1} MiB, {:.1} KiB per connection (both ends, routers included)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        per / 1024.0
    );
    for (_, r) in nodes {
        r.shutdown().await;
    }
    hub.shutdown().await;
    Ok(())
}
