//! Discovery at scale over the memory transport, on paused time: networks
//! that grow from one seed must form fully (every node connected to every
//! other) or, with a connection target, give every node its target.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use p2p_router::RouterStats;
use p2p_transport_memory::MemoryNetwork;
use tokio::time::Instant;

/// `n` PEX nodes, each knowing only node 1 (the seed), with at most
/// `max_connected` peers, dialing until they have `target` (0: the most).
async fn seeded_network(
    n: u64,
    max_connected: usize,
    target: usize,
) -> (MemoryNetwork, Vec<TestNode>) {
    let net = MemoryNetwork::new();
    let nodes: Vec<TestNode> = (1..=n)
        .map(|i| {
            let mut b = TestNodeBuilder::new(key(i)).with_pex();
            b.pm.max_connected = max_connected;
            b.pm.target_connected = target;
            b.pm.max_peers = 4 * n as usize;
            b.router = loopback_options(n as usize);
            b.start_on(&net)
        })
        .collect();
    let seed = nodes[0].address();
    for node in &nodes[1..] {
        node.router.add_peer(seed.clone()).await.unwrap();
    }
    (net, nodes)
}

/// The peers a node keeps: visits that hold no slot do not count.
fn kept(s: &RouterStats) -> u64 {
    s.connected_peers - s.transient_peers
}

/// Waits until every node keeps at least `want` peers at the same moment;
/// returns the (virtual) time it took, or fails after `bound`.
async fn formed(nodes: &[TestNode], want: u64, bound: Duration) -> Duration {
    let start = Instant::now();
    let all = async {
        loop {
            for node in nodes {
                node.router.stats_when(|s| kept(s) >= want).await;
            }
            if nodes.iter().all(|n| kept(&n.router.stats()) >= want) {
                return;
            }
        }
    };
    if tokio::time::timeout(bound, all).await.is_err() {
        let counts: Vec<u64> = nodes.iter().map(|n| kept(&n.router.stats())).collect();
        panic!("not formed within {bound:?}: peers kept per node {counts:?}");
    }
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn thirty_two_nodes_from_one_seed_reach_full_mesh() {
    let (_net, nodes) = seeded_network(32, 64, 0).await;
    let took = formed(&nodes, 31, Duration::from_secs(10)).await;
    println!("32 nodes: full mesh in {took:?} (virtual)");
}

/// 100 nodes with room for 20 peers each, dialing until they have 15:
/// every node reaches its target. (With the target at the maximum every
/// node would need 20 peers that still have room, a matching problem
/// that leaves the last few nodes a few slots short; the slots filled are
/// printed for comparison.)
#[tokio::test(start_paused = true)]
async fn a_hundred_nodes_with_twenty_slots_all_reach_a_target_of_fifteen() {
    let (_net, nodes) = seeded_network(100, 20, 15).await;
    let took = formed(&nodes, 15, Duration::from_secs(30)).await;
    let kept: Vec<u64> = nodes.iter().map(|n| kept(&n.router.stats())).collect();
    println!(
        "100 nodes, target 15 of 20: formed in {took:?} (virtual), {} of 2000 slots, {} to {} peers",
        kept.iter().sum::<u64>(),
        kept.iter().min().copied().unwrap_or(0),
        kept.iter().max().copied().unwrap_or(0),
    );
}
