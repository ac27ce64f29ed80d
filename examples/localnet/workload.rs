//! The demo workload: votes (small, frequent, from every node, high
//! priority) and blocks (large, once a second, from a rotating proposer),
//! with delivery counts and latencies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use p2p_router::Channel;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::net::Node;

/// A consensus-style vote: small, signed-sized.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Vote {
    #[prost(uint32, tag = "1")]
    pub from: u32,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// Microseconds since the run's epoch (one process, one clock).
    #[prost(uint64, tag = "3")]
    pub sent_us: u64,
    /// Stands in for a signature.
    #[prost(bytes = "bytes", tag = "4")]
    pub signature: Bytes,
}

/// A block from the height's proposer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Block {
    #[prost(uint64, tag = "1")]
    pub height: u64,
    #[prost(uint32, tag = "2")]
    pub proposer: u32,
    #[prost(uint64, tag = "3")]
    pub sent_us: u64,
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
}

pub use p2p_examples::Latencies;

/// One channel's totals over all nodes.
#[derive(Debug, Default)]
pub struct Flow {
    /// Broadcasts made.
    pub broadcasts: AtomicU64,
    /// Copies expected: each broadcast times the peers it went to.
    pub expected: AtomicU64,
    pub delivered: AtomicU64,
    pub delivered_bytes: AtomicU64,
    pub latencies: Mutex<Latencies>,
}

impl Flow {
    fn delivered(&self, bytes: usize, sent_us: u64, now_us: u64) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.delivered_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        let mut l = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        l.record(now_us.saturating_sub(sent_us));
    }

    pub fn lost(&self) -> u64 {
        let expected = self.expected.load(Ordering::Relaxed);
        expected.saturating_sub(self.delivered.load(Ordering::Relaxed))
    }
}

/// Counts per node, for the live view.
#[derive(Debug, Default)]
pub struct NodeCounts {
    pub votes_in: AtomicU64,
    pub blocks_in: AtomicU64,
}

pub struct Workload {
    pub epoch: Instant,
    pub votes: Arc<Flow>,
    pub blocks: Arc<Flow>,
    pub per_node: Vec<Arc<NodeCounts>>,
    /// Stops the generators; receivers keep going until the nodes stop.
    pub generating: CancellationToken,
    pub generators: JoinSet<()>,
    pub receivers: JoinSet<()>,
}

fn since(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

impl Workload {
    pub fn new(nodes: usize) -> Self {
        Self {
            epoch: Instant::now(),
            votes: Arc::default(),
            blocks: Arc::default(),
            per_node: (0..nodes).map(|_| Arc::default()).collect(),
            generating: CancellationToken::new(),
            generators: JoinSet::new(),
            receivers: JoinSet::new(),
        }
    }

    /// Receivers for every node: they count and time what arrives.
    pub fn receive(&mut self, nodes: &[Node]) {
        for node in nodes {
            let counts = self.per_node[node.index].clone();
            let (votes, flow, epoch) = (node.votes.clone(), self.votes.clone(), self.epoch);
            let c = counts.clone();
            self.receivers.spawn(async move {
                while let Some(env) = votes.recv().await {
                    let size = prost::Message::encoded_len(&env.message);
                    flow.delivered(size, env.message.sent_us, since(epoch));
                    c.votes_in.fetch_add(1, Ordering::Relaxed);
                }
            });
            let (blocks, flow) = (node.blocks.clone(), self.blocks.clone());
            self.receivers.spawn(async move {
                while let Some(env) = blocks.recv().await {
                    let size = prost::Message::encoded_len(&env.message);
                    flow.delivered(size, env.message.sent_us, since(epoch));
                    counts.blocks_in.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }

    /// Stops the generators and waits until none is sending, so that
    /// every counted broadcast is complete; false if that took too long.
    pub async fn stop_generating(&mut self, timeout: Duration) -> bool {
        self.generating.cancel();
        let all = async { while self.generators.join_next().await.is_some() {} };
        let done = tokio::time::timeout(timeout, all).await.is_ok();
        self.generators.abort_all();
        done
    }

    /// Starts the generators: every node votes each `vote_interval`; the
    /// proposer of each height (rotating) broadcasts a block each second.
    pub fn generate(&mut self, nodes: &[Node], vote_interval: Duration, block_size: usize) {
        let peers = nodes.len() as u64 - 1;
        for node in nodes {
            let (votes, flow, epoch) = (node.votes.clone(), self.votes.clone(), self.epoch);
            let stop = self.generating.clone();
            let from = node.index as u32;
            self.generators.spawn(async move {
                let mut tick = tokio::time::interval(vote_interval);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let signature = Bytes::from(vec![0x5a; 64]);
                for seq in 0.. {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let vote = Vote {
                        from,
                        seq,
                        sent_us: since(epoch),
                        signature: signature.clone(),
                    };
                    if votes.broadcast(vote).await.is_err() {
                        return;
                    }
                    flow.broadcasts.fetch_add(1, Ordering::Relaxed);
                    flow.expected.fetch_add(peers, Ordering::Relaxed);
                }
            });
        }
        let senders: Vec<Channel<Block>> = nodes.iter().map(|n| n.blocks.clone()).collect();
        let (flow, epoch, stop) = (self.blocks.clone(), self.epoch, self.generating.clone());
        self.generators.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let data = Bytes::from(vec![0xb1; block_size]);
            for height in 1u64.. {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let proposer = (height % senders.len() as u64) as usize;
                let block = Block {
                    height,
                    proposer: proposer as u32,
                    sent_us: since(epoch),
                    data: data.clone(),
                };
                if senders[proposer].broadcast(block).await.is_err() {
                    return;
                }
                flow.broadcasts.fetch_add(1, Ordering::Relaxed);
                flow.expected.fetch_add(peers, Ordering::Relaxed);
            }
        });
    }
}
