//! The consensus workload: every node is a Tendermint validator
//! (Malachite's core through `p2p-consensus`), deciding blocks of
//! synthetic transactions; optionally one validator is stopped mid-run and
//! restarted later, and catches up by sync.

use std::time::Duration;

use p2p_consensus::{
    check_agreement, spawn_validator, ConsensusChannels, ConsensusConfig, Decisions, Validator,
    ValidatorHandle, ValidatorSet,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::net::Node;

/// Validator `index`'s secret key. It is not the node key: a validator key
/// signs what the chain depends on and is kept apart from the network
/// identity (see the `p2p-consensus` crate docs).
fn validator_secret(index: usize) -> [u8; 32] {
    Sha256::digest(format!("localnet validator {index}")).into()
}

/// The consensus settings of the demo: blocks of `block_size` bytes, and
/// round timeouts short enough that a stopped proposer costs about a
/// second.
pub fn config(block_size: usize) -> ConsensusConfig {
    let mut c = ConsensusConfig::default();
    c.block_size = block_size;
    c.max_block_size = c.max_block_size.max(block_size + (1 << 20));
    c.timeouts.propose = Duration::from_secs(1);
    c.timeouts.prevote = Duration::from_millis(500);
    c.timeouts.precommit = Duration::from_millis(500);
    c
}

/// The validators of the run, one per node.
pub struct Validators {
    set: ValidatorSet,
    config: ConsensusConfig,
    running: Vec<Option<ValidatorHandle>>,
    /// Every validator's decisions, a restarted one's included.
    pub logs: Vec<Decisions>,
    started: Instant,
    /// Heights decided and when, for the live rate.
    last: (Instant, u64),
    /// The restart: which node, when, the height it had to reach, and how
    /// long catching up took.
    restart: Option<Restart>,
}

struct Restart {
    index: usize,
    at: Instant,
    caught_up: Option<Duration>,
}

impl Validators {
    /// Starts a validator on every node (their channels are taken).
    pub fn start(nodes: &mut [Node], config: ConsensusConfig) -> Self {
        let set = ValidatorSet::new(
            (0..nodes.len())
                .map(|i| Validator::from_secret(validator_secret(i), 1))
                .collect(),
        );
        let mut v = Self {
            set,
            config,
            running: Vec::new(),
            logs: Vec::new(),
            started: Instant::now(),
            last: (Instant::now(), 0),
            restart: None,
        };
        for node in nodes {
            let handle = v.spawn(node);
            v.logs.push(handle.decisions.clone());
            v.running.push(Some(handle));
        }
        v
    }

    fn spawn(&self, node: &mut Node) -> ValidatorHandle {
        let channels: ConsensusChannels = node
            .consensus
            .take()
            .unwrap_or_else(|| unreachable!("every localnet node declares the channels"));
        spawn_validator(
            node.router.handle(),
            channels,
            validator_secret(node.index),
            self.set.clone(),
            self.config.clone(),
        )
    }

    /// Stops validator `index` (its node is stopped by the caller).
    pub async fn stop(&mut self, index: usize) {
        if let Some(handle) = self.running[index].take() {
            handle.shutdown().await;
        }
    }

    /// Starts validator `index` again on its restarted `node`, from height
    /// 1 with nothing stored: it catches up by sync.
    pub fn restart(&mut self, node: &mut Node) {
        let handle = self.spawn(node);
        self.logs.push(handle.decisions.clone());
        self.running[node.index] = Some(handle);
        self.restart = Some(Restart {
            index: node.index,
            at: Instant::now(),
            caught_up: None,
        });
    }

    /// The highest height any validator has decided.
    pub fn height(&self) -> u64 {
        self.logs.iter().map(Decisions::height).max().unwrap_or(0)
    }

    /// Notes when the restarted validator has reached the others' height.
    pub fn check_catch_up(&mut self) {
        let live = self
            .running
            .iter()
            .enumerate()
            .filter(|(i, _)| self.restart.as_ref().is_none_or(|r| r.index != *i))
            .filter_map(|(_, h)| h.as_ref().map(|h| h.decisions.height()))
            .min()
            .unwrap_or(0);
        if let Some(r) = &mut self.restart {
            let own = self.running[r.index]
                .as_ref()
                .map_or(0, |h| h.decisions.height());
            if r.caught_up.is_none() && own > 0 && own >= live {
                r.caught_up = Some(r.at.elapsed());
            }
        }
    }

    /// Node `index`'s decided height, while its validator runs.
    pub fn node_height(&self, index: usize) -> Option<u64> {
        self.running
            .get(index)?
            .as_ref()
            .map(|h| h.decisions.height())
    }

    /// One line for the live view: the height and the rate since the last
    /// call, with the commit latencies of the last heights.
    pub fn live_line(&mut self) -> String {
        let height = self.height();
        let (at, before) = std::mem::replace(&mut self.last, (Instant::now(), height));
        let rate = (height - before) as f64 / at.elapsed().as_secs_f64().max(1e-3);
        let CommitLatency { p50_us, p99_us } = self.commit_latency(20);
        let (p50, p99) = (p50_us as f64 / 1e3, p99_us as f64 / 1e3);
        format!("consensus: height {height}, {rate:.1} heights/s, commit p50 {p50:.1} ms p99 {p99:.1} ms")
    }

    /// The commit latencies of each validator's last `last` heights.
    fn commit_latency(&self, last: usize) -> CommitLatency {
        let mut latencies = p2p_examples::Latencies::default();
        for log in &self.logs {
            for d in log.all().iter().rev().take(last) {
                if let Some(l) = d.latency {
                    latencies.record(l.as_micros() as u64);
                }
            }
        }
        let l = latencies.overall(&[0.5, 0.99]);
        CommitLatency {
            p50_us: l[0],
            p99_us: l[1],
        }
    }

    /// Stops every validator and sums the run up.
    pub async fn finish(mut self) -> ConsensusSummary {
        for i in 0..self.running.len() {
            self.stop(i).await;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let agreement = check_agreement(&self.logs);
        let heights = self.height();
        ConsensusSummary {
            validators: self.set.validators().len(),
            heights,
            heights_per_s: heights as f64 / elapsed.max(1e-3),
            commit_latency: self.commit_latency(usize::MAX),
            agreement: AgreementSummary {
                agree: agreement.is_ok(),
                shared_heights: agreement.as_ref().map_or(0, |a| a.shared_heights),
                disagreement: agreement.err().map(|d| d.to_string()),
            },
            restart: self.restart.as_ref().map(|r| RestartSummary {
                node: r.index,
                catch_up_s: r.caught_up.map(|d| d.as_secs_f64()),
            }),
        }
    }
}

/// What the consensus workload did.
#[derive(Debug, Serialize)]
pub struct ConsensusSummary {
    pub validators: usize,
    /// The highest height decided.
    pub heights: u64,
    pub heights_per_s: f64,
    /// First proposal part seen to decided, over every validator and height.
    pub commit_latency: CommitLatency,
    pub agreement: AgreementSummary,
    /// The validator stopped and restarted (`--kill-one`).
    pub restart: Option<RestartSummary>,
}

/// Commit latency percentiles, in microseconds.
#[derive(Debug, Serialize)]
pub struct CommitLatency {
    pub p50_us: u32,
    pub p99_us: u32,
}

/// Whether every height two validators decided was decided alike.
#[derive(Debug, Serialize)]
pub struct AgreementSummary {
    pub agree: bool,
    /// Heights decided by two validators or more.
    pub shared_heights: u64,
    /// The first height decided differently, and how.
    pub disagreement: Option<String>,
}

/// `--kill-one`: the validator stopped and restarted, and how long it
/// took to catch up (`None`: it did not).
#[derive(Debug, Serialize)]
pub struct RestartSummary {
    pub node: usize,
    pub catch_up_s: Option<f64>,
}

impl ConsensusSummary {
    pub fn ok(&self, kill_one: bool) -> bool {
        let caught_up = self
            .restart
            .as_ref()
            .is_some_and(|r| r.catch_up_s.is_some());
        self.agreement.agree && self.heights > 0 && (!kill_one || caught_up)
    }

    pub fn print(&self) {
        let Self {
            heights,
            validators,
            heights_per_s,
            ..
        } = self;
        let CommitLatency { p50_us, p99_us } = self.commit_latency;
        let (p50, p99) = (p50_us as f64 / 1e3, p99_us as f64 / 1e3);
        println!(
            "consensus: {heights} heights by {validators} validators ({heights_per_s:.1} heights/s), commit latency p50 {p50:.1} ms, p99 {p99:.1} ms"
        );
        let shared = self.agreement.shared_heights;
        match &self.agreement.disagreement {
            None => println!(
                "agreement: all validators agree ({shared} heights decided by two or more)"
            ),
            Some(d) => println!("agreement: FAILED: {d}"),
        }
        if let Some(RestartSummary {
            node: i,
            catch_up_s,
        }) = &self.restart
        {
            match catch_up_s {
                Some(s) => println!(
                    "restart: node {i} stopped and restarted, caught up by sync in {s:.2} s"
                ),
                None => println!("restart: node {i} restarted and did NOT catch up"),
            }
        }
    }
}
