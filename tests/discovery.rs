//! Discovery at scale over the memory transport, on paused time: networks
//! that grow from one seed must form fully (every node connected to every
//! other) or, with a connection target, give every node its target.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use p2p_transport_memory::MemoryNetwork;
use tokio::time::Instant;

/// `n` PEX nodes, each knowing only node 1 (the seed), with at most
/// `max_connected` peers.
async fn seeded_network(n: u64, max_connected: usize) -> (MemoryNetwork, Vec<TestNode>) {
    let net = MemoryNetwork::new();
    let nodes: Vec<TestNode> = (1..=n)
        .map(|i| {
            let mut b = TestNodeBuilder::new(key(i)).with_pex();
            b.pm.max_connected = max_connected;
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

/// Waits until every node has at least `want` connected peers; returns the
/// (virtual) time it took, or fails after `bound`.
async fn formed(nodes: &[TestNode], want: u64, bound: Duration) -> Duration {
    let start = Instant::now();
    let all = async {
        for node in nodes {
            node.router.stats_when(|s| s.connected_peers >= want).await;
        }
    };
    if tokio::time::timeout(bound, all).await.is_err() {
        let counts: Vec<u64> = nodes
            .iter()
            .map(|n| n.router.stats().connected_peers)
            .collect();
        panic!("not formed within {bound:?}: connected peers per node {counts:?}");
    }
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn thirty_two_nodes_from_one_seed_reach_full_mesh() {
    let (_net, nodes) = seeded_network(32, 64).await;
    let took = formed(&nodes, 31, Duration::from_secs(10)).await;
    println!("32 nodes: full mesh in {took:?} (virtual)");
}

#[tokio::test(start_paused = true)]
async fn a_hundred_nodes_with_a_target_of_twenty_all_reach_it() {
    let (_net, nodes) = seeded_network(100, 20).await;
    let took = formed(&nodes, 20, Duration::from_secs(30)).await;
    println!("100 nodes, target 20: formed in {took:?} (virtual)");
}
