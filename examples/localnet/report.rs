//! What the demo shows: the live view (redrawn while running) and the
//! summary (a table, and JSON on request).

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use crate::consensus::{ConsensusSummary, Validators};
use crate::net::Node;
use crate::workload::{Flow, Workload};

/// Rates between two live-view ticks.
pub struct Live {
    last_at: Duration,
    last_votes: u64,
    last_vote_bytes: u64,
    last_blocks: u64,
    last_block_bytes: u64,
    last_per_node: Vec<(u64, u64)>,
    /// Connections when every node has its target.
    expected: u64,
}

impl Live {
    /// For `nodes` nodes that each want `target` peers.
    pub fn new(nodes: usize, target: u64) -> Self {
        Self {
            expected: nodes as u64 * target / 2,
            last_at: Duration::ZERO,
            last_votes: 0,
            last_vote_bytes: 0,
            last_blocks: 0,
            last_block_bytes: 0,
            last_per_node: vec![(0, 0); nodes],
        }
    }

    /// The consensus workload's live table (each node's peers and height)
    /// and its one-line form.
    pub fn render_consensus(
        &mut self,
        nodes: &[Node],
        work: &Workload,
        validators: &mut Validators,
        phase: &str,
    ) -> (String, String) {
        let at = work.epoch.elapsed().as_secs_f64();
        let mut table = format!("{phase} · {at:.1} s\nnode  peers  height\n");
        let mut connected = 0;
        for node in nodes {
            let peers = node.kept_peers();
            connected += peers;
            let height = validators.node_height(node.index);
            table += &format!(
                "{:<4}  {:>2}/{:<2}  {:>6}\n",
                node.index,
                peers,
                self.last_per_node.len() - 1,
                height.map_or("-".to_owned(), |h| h.to_string())
            );
        }
        let consensus = validators.live_line();
        let connections = format!("connections {}/{}", connected / 2, self.expected);
        table += &format!("{connections}\n{consensus}");
        (
            table,
            format!("{phase} {at:.1}s: {connections}; {consensus}"),
        )
    }

    /// The live table, and a one-line form of it for logs.
    pub fn render(&mut self, nodes: &[Node], work: &Workload, phase: &str) -> (String, String) {
        let at = work.epoch.elapsed();
        let dt = (at - self.last_at).as_secs_f64().max(1e-3);
        self.last_at = at;
        let n = nodes.len();
        let mut connected = 0;
        let mut table = format!("{phase} · {:.1} s\n", at.as_secs_f64());
        table += "node  peers   votes in/s  blocks in/s\n";
        for node in nodes {
            let peers = node.kept_peers();
            connected += peers;
            let counts = &work.per_node[node.index];
            let now = (
                counts.votes_in.load(Ordering::Relaxed),
                counts.blocks_in.load(Ordering::Relaxed),
            );
            let last = std::mem::replace(&mut self.last_per_node[node.index], now);
            table += &format!(
                "{:<4}  {:>2}/{:<2}   {:>10.0}  {:>11.1}\n",
                node.index,
                peers,
                n - 1,
                (now.0 - last.0) as f64 / dt,
                (now.1 - last.1) as f64 / dt,
            );
        }
        let rate = |flow: &Flow, last: &mut u64, last_bytes: &mut u64| {
            let m = flow.delivered.load(Ordering::Relaxed);
            let b = flow.delivered_bytes.load(Ordering::Relaxed);
            let r = ((m - *last) as f64 / dt, (b - *last_bytes) as f64 / dt / 1e6);
            (*last, *last_bytes) = (m, b);
            r
        };
        let (vote_rate, vote_mb) =
            rate(&work.votes, &mut self.last_votes, &mut self.last_vote_bytes);
        let (block_rate, block_mb) = rate(
            &work.blocks,
            &mut self.last_blocks,
            &mut self.last_block_bytes,
        );
        let vote_lat = lock(&work.votes).take_window(&[0.5, 0.99]);
        let block_lat = lock(&work.blocks).take_window(&[0.5, 0.99]);
        table += &format!(
            "connections {}/{}\nchannel  msgs/s    MB/s   p50 µs   p99 µs\n",
            connected / 2,
            self.expected
        );
        table += &format!(
            "vote     {vote_rate:>7.0} {vote_mb:>7.2} {:>8} {:>8}\nblock    {block_rate:>7.1} {block_mb:>7.2} {:>8} {:>8}",
            vote_lat[0], vote_lat[1], block_lat[0], block_lat[1]
        );
        let line = format!(
            "{phase} {:.1}s: connections {}/{}, vote {vote_rate:.0} msg/s p50 {} µs p99 {} µs, block {block_rate:.1} msg/s {block_mb:.2} MB/s",
            at.as_secs_f64(),
            connected / 2,
            self.expected,
            vote_lat[0],
            vote_lat[1],
        );
        (table, line)
    }
}

fn lock(flow: &Flow) -> std::sync::MutexGuard<'_, crate::workload::Latencies> {
    flow.latencies.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Serialize)]
pub struct ChannelSummary {
    pub channel: &'static str,
    pub broadcasts: u64,
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub delivered_bytes: u64,
    pub latency_us_p50: u32,
    pub latency_us_p90: u32,
    pub latency_us_p99: u32,
    pub latency_us_max: u32,
}

impl ChannelSummary {
    pub fn of(channel: &'static str, flow: &Flow) -> Self {
        let l = lock(flow).overall(&[0.5, 0.9, 0.99, 1.0]);
        Self {
            channel,
            broadcasts: flow.broadcasts.load(Ordering::Relaxed),
            sent: flow.expected.load(Ordering::Relaxed),
            delivered: flow.delivered.load(Ordering::Relaxed),
            lost: flow.lost(),
            delivered_bytes: flow.delivered_bytes.load(Ordering::Relaxed),
            latency_us_p50: l[0],
            latency_us_p90: l[1],
            latency_us_p99: l[2],
            latency_us_max: l[3],
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub nodes: usize,
    /// `consensus` or `gossip`.
    pub workload: String,
    pub transport: String,
    pub formed_in_s: Option<f64>,
    pub workload_s: f64,
    pub connections: u64,
    pub connections_expected: u64,
    /// Peers each node must have (every other node, or the target).
    pub target_peers: u64,
    /// Peers of the node with the fewest, and with the most, at the end.
    pub fewest_peers: u64,
    pub most_peers: u64,
    pub fully_connected: bool,
    /// The gossip workload's channels (empty for consensus).
    pub channels: Vec<ChannelSummary>,
    /// The consensus workload's figures.
    pub consensus: Option<ConsensusSummary>,
    pub shutdown_s: f64,
    pub interrupted: bool,
    pub ok: bool,
}

impl Summary {
    pub fn print(&self) {
        println!(
            "localnet: {} nodes over {}, network formed in {}, {} workload ran {:.1} s{}",
            self.nodes,
            self.transport,
            self.formed_in_s
                .map_or("(never)".to_owned(), |s| format!("{s:.2} s")),
            self.workload,
            self.workload_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
        );
        let everyone = self.target_peers + 1 == self.nodes as u64;
        let (c, e, t) = (
            self.connections,
            self.connections_expected,
            self.target_peers,
        );
        let (fewest, most) = (self.fewest_peers, self.most_peers);
        match (self.fully_connected, everyone) {
            (true, true) => println!("connections: {c} of {e} (every node to every other)"),
            (true, false) => println!(
                "connections: {c}, {e} at least (every node has its {t} peers: {fewest} to {most})"
            ),
            (false, _) => println!(
                "connections: {c} of {e} (INCOMPLETE: {fewest} to {most} peers per node, target {t})"
            ),
        }
        println!();
        if let Some(c) = &self.consensus {
            c.print();
        } else {
            self.print_channels();
        }
        println!();
        println!("shutdown: every node stopped in {:.2} s", self.shutdown_s);
        let success = match &self.consensus {
            Some(_) => "OK: every node connected to every other, consensus decided and all validators agree",
            None => "OK: every node connected to every other, no message lost",
        };
        println!("result: {}", if self.ok { success } else { "FAILED" });
    }

    fn print_channels(&self) {
        println!(
            "channel  broadcasts       sent  delivered  lost        MB   p50 µs   p90 µs   p99 µs   max µs"
        );
        for c in &self.channels {
            println!(
                "{:<7}  {:>10} {:>10} {:>10} {:>5} {:>9.1} {:>8} {:>8} {:>8} {:>8}",
                c.channel,
                c.broadcasts,
                c.sent,
                c.delivered,
                c.lost,
                c.delivered_bytes as f64 / 1e6,
                c.latency_us_p50,
                c.latency_us_p90,
                c.latency_us_p99,
                c.latency_us_max,
            );
        }
    }
}
