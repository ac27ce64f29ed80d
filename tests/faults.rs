//! A router task that panics is cleaned up exactly like one that ended:
//! the peer is redialed and comes up again, and a sender waiting on it
//! never hangs. Panics are injected with `RouterBuilder::faults`
//! (`test-utils`). Memory transport, paused time.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use p2p_router::{ChannelDescriptor, ChannelId, Faults, FullPolicy};
use p2p_transport_memory::MemoryNetwork;

const WAIT: ChannelId = ChannelId(0x41);

/// A node whose test channel waits for room (the policy that would hang on
/// a leaked queue), with its fault injector armed by `arm` before the
/// router starts. With `persistent`, that peer is dialed and redialed after
/// any failure.
fn node(
    net: &MemoryNetwork,
    n: u64,
    persistent: Option<&TestNode>,
    arm: impl FnOnce(&Faults),
) -> (TestNode, Arc<Faults>) {
    let mut builder = TestNodeBuilder::new(key(n));
    builder.descriptor = ChannelDescriptor::new(WAIT, "wait")
        .with_send_capacity(2)
        .with_full_policy(FullPolicy::Wait);
    if let Some(peer) = persistent {
        builder.pm.persistent_peers = vec![peer.address()];
    }
    builder.start_declaring_on(net, |r| {
        let faults = r.faults();
        arm(&faults);
        faults
    })
}

/// Sends more than the queue holds and waits until b got them all: a
/// leaked route or queue would block here forever.
async fn exchange(a: &TestNode, b: &TestNode, count: usize) {
    for i in 0..count {
        a.send_text(b.id(), i.to_string()).await;
    }
    for i in 0..count {
        assert_eq!(require_receive(&b.rx).await.message, text(i.to_string()));
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_peer_task_is_cleaned_up_and_the_peer_redialed() {
    let (_net, mut a, mut b) = pair(|f| f.panic_peer_tasks(1), |_| ());
    // Up, then the task panics: Down, and the redial brings it back.
    require_up(&mut a.updates, b.id()).await;
    require_down(&mut a.updates, b.id()).await;
    require_up(&mut a.updates, b.id()).await;
    wait_until_up(&mut b.updates, &[a.id()].into()).await;
    assert_eq!(a.router.connected_peers().await.unwrap(), vec![b.id()]);
    exchange(&a, &b, 10).await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_dial_task_counts_as_a_failed_dial_and_is_retried() {
    let (_net, mut a, mut b) = pair(|f| f.panic_dials(2), |_| ());
    require_up(&mut a.updates, b.id()).await;
    require_up(&mut b.updates, a.id()).await;
    exchange(&a, &b, 10).await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inbound_handshake_frees_its_slot_and_the_dialer_retries() {
    let (_net, mut a, mut b) = pair(|_| (), |f| f.panic_handshakes(2));
    require_up(&mut a.updates, b.id()).await;
    require_up(&mut b.updates, a.id()).await;
    exchange(&a, &b, 10).await;
}

/// Node 2, then node 1 with node 2 as its persistent peer; each armed with
/// its own faults before it starts.
fn pair(
    arm_a: impl FnOnce(&Faults),
    arm_b: impl FnOnce(&Faults),
) -> (MemoryNetwork, TestNode, TestNode) {
    let net = MemoryNetwork::new();
    let (b, _) = node(&net, 2, None, arm_b);
    let (a, _) = node(&net, 1, Some(&b), arm_a);
    (net, a, b)
}
