//! Peer exchange over the memory transport, on paused tokio time: networks
//! that discover themselves from a few links, and peers that break the
//! rules.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use p2p_router::pex::{pex_channel_descriptor, PexAddress, PexMessage, PexSum, MAX_ADDRESSES};
use p2p_router::{Channel, Envelope, NodeId, PeerAddress};
use p2p_transport_memory::MemoryNetwork;

fn pex_node(net: &MemoryNetwork, n: u64) -> TestNode {
    TestNodeBuilder::new(key(n)).with_pex().start_on(net)
}

/// Waits until `node` knows exactly `want` (besides itself).
async fn knows_all(node: &TestNode, want: &BTreeSet<NodeId>) {
    let n = want.len() as u64;
    node.router.stats_when(|s| s.known_peers >= n).await;
    let known = node.known_set().await;
    assert_eq!(&known, want, "node {}", node.id());
}

async fn everyone_knows_everyone(nodes: &[TestNode]) {
    let ids: BTreeSet<NodeId> = nodes.iter().map(TestNode::id).collect();
    for node in nodes {
        let mut want = ids.clone();
        want.remove(&node.id());
        knows_all(node, &want).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_ring_learns_every_node() {
    let net = MemoryNetwork::new();
    let nodes: Vec<TestNode> = (1..=10).map(|i| pex_node(&net, i)).collect();
    for (i, node) in nodes.iter().enumerate() {
        let next = &nodes[(i + 1) % nodes.len()];
        node.router.add_peer(next.address()).await.unwrap();
    }
    everyone_knows_everyone(&nodes).await;
}

#[tokio::test(start_paused = true)]
async fn a_small_store_in_a_large_network_fills_to_ninety_percent() {
    let net = MemoryNetwork::new();
    let mut small = TestNodeBuilder::new(key(1)).with_pex();
    small.pm.max_peers = 10;
    small.pm.max_connected = 4;
    small.pm.max_connected_upgrade = 2;
    let small = small.start_on(&net);
    let others: Vec<TestNode> = (2..=41).map(|i| pex_node(&net, i)).collect();
    // The others form a chain; the small node knows only its head.
    for pair in others.windows(2) {
        pair[0].router.add_peer(pair[1].address()).await.unwrap();
    }
    small.router.add_peer(others[0].address()).await.unwrap();
    let stats = small.router.stats_when(|s| s.known_peers >= 9).await;
    assert!(stats.known_peers <= 10, "{stats:?}");
    assert_eq!(small.router.peer_store_capacity(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_growing_network_linked_through_one_node_learns_every_node() {
    let net = MemoryNetwork::new();
    let mut nodes: Vec<TestNode> = (1..=5).map(|i| pex_node(&net, i)).collect();
    for node in &nodes[1..] {
        node.router.add_peer(nodes[0].address()).await.unwrap();
    }
    everyone_knows_everyone(&nodes).await;

    for i in 6..=15 {
        let node = pex_node(&net, i);
        node.router.add_peer(nodes[0].address()).await.unwrap();
        nodes.push(node);
    }
    everyone_knows_everyone(&nodes).await;
}

/// A node that speaks PEX by hand, connected to a victim running PEX.
struct Hostile {
    node: TestNode,
    pex: Channel<PexMessage>,
}

async fn hostile_pair(net: &MemoryNetwork) -> (TestNode, Hostile) {
    let mut victim = pex_node(net, 1);
    let (mut node, pex) = TestNodeBuilder::new(key(2)).start_declaring_on(net, |b| {
        b.channel::<PexMessage>(pex_channel_descriptor()).unwrap()
    });
    node.router.add_peer(victim.address()).await.unwrap();
    require_up(&mut node.updates, victim.id()).await;
    require_up(&mut victim.updates, node.id()).await;
    (victim, Hostile { node, pex })
}

impl Hostile {
    async fn send(&self, to: NodeId, message: PexMessage) {
        self.pex.send(Envelope { peer: to, message }).await.unwrap();
    }

    /// Waits for the victim's request (it asks at once when we come up).
    async fn await_request(&self) {
        loop {
            let env = self.pex.recv().await.unwrap();
            if matches!(env.message.sum, Some(PexSum::Request(_))) {
                return;
            }
        }
    }
}

/// A response in our own dialect.
fn url_response(urls: impl IntoIterator<Item = String>) -> PexMessage {
    PexMessage::response(urls.into_iter().map(PexAddress::url))
}

fn memory_url(n: u64) -> String {
    PeerAddress::memory(key(n).node_id()).to_string()
}

async fn knows(node: &TestNode, n: u64) -> bool {
    node.router
        .known_peers()
        .await
        .unwrap()
        .contains(&key(n).node_id())
}

#[tokio::test(start_paused = true)]
async fn requests_sooner_than_the_interval_get_one_answer_and_a_disconnect() {
    let net = MemoryNetwork::new();
    let (mut victim, hostile) = hostile_pair(&net).await;
    for _ in 0..5 {
        hostile.send(victim.id(), PexMessage::request()).await;
    }
    victim.router.stats_when(|s| s.peer_errors >= 1).await;
    require_down(&mut victim.updates, hostile.node.id()).await;
    settle().await;
    let mut responses = 0;
    while let Some(env) = hostile.pex.try_recv() {
        if matches!(env.message.sum, Some(PexSum::Response(_))) {
            responses += 1;
        }
    }
    assert_eq!(responses, 1);
}

#[tokio::test(start_paused = true)]
async fn an_unsolicited_response_is_an_error_and_its_addresses_are_not_added() {
    let net = MemoryNetwork::new();
    let (mut victim, hostile) = hostile_pair(&net).await;
    hostile.await_request().await;
    hostile
        .send(victim.id(), url_response([memory_url(10)]))
        .await;
    hostile
        .send(victim.id(), url_response([memory_url(11)]))
        .await;
    victim.router.stats_when(|s| s.peer_errors >= 1).await;
    require_down(&mut victim.updates, hostile.node.id()).await;
    assert!(knows(&victim, 10).await, "the solicited answer counts");
    assert!(!knows(&victim, 11).await);
}

#[tokio::test(start_paused = true)]
async fn a_response_with_too_many_addresses_is_an_error_and_nothing_is_added() {
    let net = MemoryNetwork::new();
    let (mut victim, hostile) = hostile_pair(&net).await;
    hostile.await_request().await;
    let urls = (10..=(10 + MAX_ADDRESSES as u64)).map(memory_url);
    hostile.send(victim.id(), url_response(urls)).await;
    victim.router.stats_when(|s| s.peer_errors >= 1).await;
    require_down(&mut victim.updates, hostile.node.id()).await;
    assert!(!knows(&victim, 10).await);
    assert_eq!(
        victim.router.known_peers().await.unwrap(),
        vec![hostile.node.id()]
    );
}

#[tokio::test(start_paused = true)]
async fn a_response_with_an_unparsable_address_is_an_error_and_nothing_is_added() {
    let net = MemoryNetwork::new();
    let (mut victim, hostile) = hostile_pair(&net).await;
    hostile.await_request().await;
    let urls = [
        memory_url(10),
        "quic://not-a-node-id@127.0.0.1:1".to_owned(),
    ];
    hostile.send(victim.id(), url_response(urls)).await;
    victim.router.stats_when(|s| s.peer_errors >= 1).await;
    require_down(&mut victim.updates, hostile.node.id()).await;
    assert!(!knows(&victim, 10).await);
}

#[tokio::test(start_paused = true)]
async fn an_empty_message_is_an_error() {
    let net = MemoryNetwork::new();
    let (mut victim, hostile) = hostile_pair(&net).await;
    hostile.send(victim.id(), PexMessage { sum: None }).await;
    victim.router.stats_when(|s| s.peer_errors >= 1).await;
    require_down(&mut victim.updates, hostile.node.id()).await;
}

#[tokio::test(start_paused = true)]
async fn a_well_behaved_peer_is_answered_with_advertised_addresses() {
    let net = MemoryNetwork::new();
    let (victim, hostile) = hostile_pair(&net).await;
    victim
        .router
        .add_peer(PeerAddress::memory(key(20).node_id()))
        .await
        .unwrap();
    hostile.send(victim.id(), PexMessage::request()).await;
    let urls = loop {
        let env = hostile.pex.recv().await.unwrap();
        if let Some(PexSum::Response(r)) = env.message.sum {
            break r
                .addresses
                .into_iter()
                .map(|a| a.url)
                .collect::<BTreeSet<_>>();
        }
    };
    // Its own address first (advertised by configuration), and the peer
    // it knows; never the asker's own.
    let want: BTreeSet<String> = [victim.address().to_string(), memory_url(20)].into();
    assert_eq!(urls, want);
    assert_eq!(victim.router.stats().peer_errors, 0);
}
