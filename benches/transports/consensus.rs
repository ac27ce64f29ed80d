//! The consensus scenario: 4 validators (tasks in this process, each with
//! its own router and transport) run Tendermint on 1 MiB blocks; heights
//! decided per second and commit latency (first proposal part seen to
//! decided) over each transport.

use std::time::Duration;

use p2p_consensus::{spawn_validator, ConsensusChannels, ConsensusConfig, Validator, ValidatorSet};
use p2p_router::{LocalNode, PeerAddress, Router};
use p2p_transport_memory::MemoryNetwork;
use tokio::time::Instant;

use crate::nodes::{key, pm_options, router_options, transport, wait_up, Kind, NETWORK};
use crate::scenarios::{Latencies, Sample};

const VALIDATORS: u64 = 4;
const BLOCK_SIZE: usize = 1 << 20;

/// Runs the validators for `duration` after the first height; the sample's
/// value is heights per second, its latencies the commit latencies of
/// every validator.
pub async fn consensus(kind: Kind, duration: Duration) -> Sample {
    let memory = MemoryNetwork::new();
    let secret = |i: u64| [0x90 + i as u8; 32];
    let set = ValidatorSet::new(
        (1..=VALIDATORS)
            .map(|i| Validator::from_secret(secret(i), 1))
            .collect(),
    );
    let mut config = ConsensusConfig::default();
    config.block_size = BLOCK_SIZE;
    let mut routers: Vec<(Router, PeerAddress)> = Vec::new();
    let mut channels = Vec::new();
    for i in 1..=VALIDATORS {
        let key = key(100 + i);
        let transport = transport(kind, &key, true, &memory).await;
        let address = match transport.listen_endpoints().into_iter().next() {
            Some(e) => e.peer_address(key.node_id()),
            None => PeerAddress::memory(key.node_id()),
        };
        let mut builder = Router::builder(LocalNode::new(key, NETWORK));
        builder
            .transport(transport)
            .options(router_options(8))
            .peer_manager(pm_options(8));
        channels.push(ConsensusChannels::declare(&mut builder, &config).expect("channels"));
        routers.push((builder.spawn().expect("router"), address));
    }
    let ids: Vec<_> = routers.iter().map(|(r, _)| r.node_id()).collect();
    let mut updates: Vec<_> = routers
        .iter()
        .map(|(r, _)| r.subscribe_peer_updates())
        .collect();
    // Each dials the ones after it: a full mesh.
    for (i, (router, _)) in routers.iter().enumerate() {
        for (_, address) in &routers[i + 1..] {
            router.add_peer(address.clone()).await.expect("add peer");
        }
    }
    for (i, u) in updates.iter_mut().enumerate() {
        let others: Vec<_> = ids.iter().copied().filter(|id| *id != ids[i]).collect();
        wait_up(u, &others).await;
    }
    let handles: Vec<_> = routers
        .iter()
        .zip(channels)
        .zip(1..=VALIDATORS)
        .map(|(((router, _), channels), i)| {
            spawn_validator(
                router.handle(),
                channels,
                secret(i),
                set.clone(),
                config.clone(),
            )
        })
        .collect();
    // Timed from the first decision, so start-up is not counted.
    handles[0].decisions.reached(1).await;
    let (start, from) = (Instant::now(), handles[0].decisions.height());
    tokio::time::sleep(duration).await;
    let heights = handles[0].decisions.height() - from;
    let elapsed = start.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let logs: Vec<_> = handles.iter().map(|h| h.decisions.clone()).collect();
    for log in &logs {
        latencies.extend(
            log.all()
                .iter()
                .filter(|d| d.height > from)
                .filter_map(|d| d.latency.map(|l| l.as_micros() as f64)),
        );
    }
    if let Err(d) = p2p_consensus::check_agreement(&logs) {
        panic!("consensus over {}: {d}", kind.name());
    }
    for h in handles {
        h.shutdown().await;
    }
    for (router, _) in routers {
        router.shutdown().await;
    }
    Sample {
        value: heights as f64 / elapsed,
        latencies: Latencies::from_us(&latencies),
        side: None,
    }
}
