//! Validators over the memory transport, on a paused clock: they decide,
//! agree, survive a stopped validator and catch a restarted one up.

use std::time::Duration;

use p2p_consensus::{
    check_agreement, spawn_validator, ConsensusChannels, ConsensusConfig, Decisions, Validator,
    ValidatorHandle, ValidatorSet,
};
use p2p_router::test_utils::{connect_all, key, within, TestNode, TestNodeBuilder};
use p2p_transport_memory::test_utils::StartOnMemory;
use p2p_transport_memory::MemoryNetwork;

/// Plenty for 20 heights on a paused clock; a stall fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(600);

fn secret(i: u64) -> [u8; 32] {
    [0x50 + i as u8; 32]
}

fn validator_set(n: u64) -> ValidatorSet {
    ValidatorSet::new(
        (1..=n)
            .map(|i| Validator::from_secret(secret(i), 1))
            .collect(),
    )
}

fn config() -> ConsensusConfig {
    let mut c = ConsensusConfig::default();
    c.block_size = 200 << 10;
    c.part_size = 32 << 10;
    c
}

fn start(net: &MemoryNetwork, i: u64, set: &ValidatorSet) -> (TestNode, ValidatorHandle) {
    let (node, channels) = TestNodeBuilder::new(key(i)).start_declaring_on(net, |b| {
        ConsensusChannels::declare(b, &config()).expect("channels declare")
    });
    let handle = spawn_validator(
        node.router.handle(),
        channels,
        secret(i),
        set.clone(),
        config(),
    );
    (node, handle)
}

async fn all_reach(validators: &[&Decisions], height: u64) {
    for d in validators {
        within(PATIENCE, "height", d.reached(height)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn four_validators_decide_twenty_heights_and_agree() {
    let net = MemoryNetwork::new();
    let set = validator_set(4);
    let (mut nodes, handles): (Vec<_>, Vec<_>) = (1..=4).map(|i| start(&net, i, &set)).unzip();
    connect_all(&mut nodes).await;
    let decisions: Vec<Decisions> = handles.iter().map(|h| h.decisions.clone()).collect();
    all_reach(&decisions.iter().collect::<Vec<_>>(), 20).await;
    let agreement = check_agreement(&decisions).expect("no two validators disagree");
    assert!(agreement.shared_heights >= 20, "{agreement:?}");
    // Every height was decided with a quorum's precommits and timed.
    for d in decisions[0].all().iter().take(20) {
        assert!(d.signers >= 3, "{d:?}");
        assert!(d.latency.is_some(), "{d:?}");
    }
    for h in handles {
        h.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn three_of_four_keep_deciding_and_a_restarted_one_catches_up() {
    let net = MemoryNetwork::new();
    let set = validator_set(4);
    let (mut nodes, mut handles): (Vec<_>, Vec<_>) = (1..=4).map(|i| start(&net, i, &set)).unzip();
    connect_all(&mut nodes).await;
    let decisions: Vec<Decisions> = handles.iter().map(|h| h.decisions.clone()).collect();
    all_reach(&decisions.iter().collect::<Vec<_>>(), 3).await;

    // Stop validator 4 and its node.
    let stopped = handles.pop().unwrap();
    let stopped_at = stopped.decisions.height();
    stopped.shutdown().await;
    nodes.pop().unwrap().router.shutdown().await;
    let live: Vec<&Decisions> = decisions[..3].iter().collect();
    let target = stopped_at + 10;
    all_reach(&live, target).await;

    // Restarted from scratch (no store), it catches up by sync.
    let (restarted, handle) = start(&net, 4, &set);
    for node in &nodes {
        node.router.add_peer(restarted.address()).await.unwrap();
    }
    let live_height = decisions[0].height();
    within(PATIENCE, "catch up", handle.decisions.reached(live_height)).await;
    let synced = handle.decisions.all();
    assert!(
        synced.first().is_some_and(|d| d.height == 1),
        "from height 1"
    );
    assert!(
        synced.iter().any(|d| d.latency.is_none()),
        "some heights came by sync"
    );
    let mut all = decisions[..3].to_vec();
    all.push(handle.decisions.clone());
    check_agreement(&all).expect("the restarted validator agrees");
    handle.shutdown().await;
    for h in handles {
        h.shutdown().await;
    }
}
