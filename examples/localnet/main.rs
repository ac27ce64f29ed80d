//! localnet: a small network in one process, forming itself by PEX and
//! running Tendermint consensus on it. The README's main job:
//!
//! ```sh
//! cargo run --release --example localnet
//! ```
//!
//! N nodes (default 8) start on loopback, each with its own key and
//! temporary data directory; only node 0's address is given to the others.
//! Once every node is connected to every other, every node runs a
//! validator (`--workload consensus`, the default): Malachite's Tendermint
//! core over the router's consensus, proposal and sync channels, deciding
//! blocks of `--block-size` synthetic bytes. With `--kill-one`, the last
//! validator is stopped a third of the way through and restarted at two
//! thirds; it catches up by sync. `--workload gossip` instead has each node
//! broadcast a small vote every few ms on a high-priority channel while a
//! rotating proposer broadcasts a block every second. The run stops after
//! the duration or on Ctrl-C, shuts every node down and prints a summary.
//! The exit code is 0 only if the network fully formed and, for consensus,
//! heights were decided and every validator agrees (and the restarted one
//! caught up); for gossip, no message was lost.

// An example binary: its modules are private however they are marked.
#![allow(unreachable_pub)]

mod consensus;
mod net;
mod report;
mod workload;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use consensus::Validators;
use net::{Node, TransportKind};
use report::{ChannelSummary, Live, Summary};
use workload::Workload;

/// Start a local network, run a workload on it, report.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Nodes to start.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=256))]
    nodes: u16,
    /// Most peers per node (0: every node connects to every other).
    #[arg(long, default_value_t = 0)]
    max_connected: usize,
    /// Peers each node dials towards when `--max-connected` is set
    /// (default: three quarters of it, so every node keeps room for
    /// newcomers). The network is formed once every node has this many.
    #[arg(long)]
    target_connected: Option<usize>,
    /// How long to run, from start to the end of the workload (e.g. 20s,
    /// 1500ms, 20).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// The transport every node uses.
    #[arg(long, value_enum, default_value_t = TransportKind::Quic)]
    transport: TransportKind,
    /// Time between two votes of one node.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    vote_interval: Duration,
    /// What the nodes do once the network is formed.
    #[arg(long, value_enum, default_value_t = WorkloadKind::Consensus)]
    workload: WorkloadKind,
    /// Consensus: stop the last validator a third of the way through the
    /// run and restart it at two thirds.
    #[arg(long)]
    kill_one: bool,
    /// Bytes per block.
    #[arg(long, default_value_t = 1 << 20)]
    block_size: usize,
    /// Also write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WorkloadKind {
    /// Every node a Tendermint validator.
    Consensus,
    /// Synthetic votes and blocks.
    Gossip,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("unknown unit in {s} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s}: {e}"))
}

/// Time allowed for in-flight messages to land after the workload stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for every node to shut down.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    p2p_examples::init_logging("warn");
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("localnet: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let n = args.nodes as usize;
    let target_connected = match (args.max_connected, args.target_connected) {
        (0, _) => 0,
        (max, None) => (max * 3 / 4).max(1),
        (max, Some(t)) if t > max => {
            return Err(format!("--target-connected {t} exceeds --max-connected {max}").into())
        }
        (_, Some(t)) => t,
    };
    if args.kill_one && args.workload != WorkloadKind::Consensus {
        return Err("--kill-one needs --workload consensus".into());
    }
    let consensus_config =
        (args.workload == WorkloadKind::Consensus).then(|| consensus::config(args.block_size));
    let shape = net::Shape {
        nodes: n,
        max_connected: args.max_connected,
        target_connected,
        block_size: args.block_size,
        consensus: consensus_config.clone(),
    };
    let root = tempfile::Builder::new().prefix("localnet-").tempdir()?;
    let node_dir = |i: usize| root.path().join(format!("node{i}"));
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    for i in 0..n {
        let dir = node_dir(i);
        std::fs::create_dir_all(&dir)?;
        let seed = nodes.first().map(|n0: &Node| n0.address.clone());
        nodes.push(net::start(i, &shape, args.transport, &dir, seed).await?);
    }
    eprintln!(
        "localnet: {n} nodes over {:?}, seed {}; data in {}",
        args.transport,
        nodes[0].address,
        root.path().display()
    );

    let mut work = Workload::new(n);
    work.receive(&nodes);
    let deadline = work.epoch + args.duration;
    let bar = live_bar();
    // Formation is checked often, so its time is measured to a few ms; the
    // live view is drawn every half second.
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut last_render = Instant::now();
    let target = target_peers(n, target_connected);
    let mut live = Live::new(n, target);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    let mut formed_at: Option<Duration> = None;
    let mut workload_started: Option<Instant> = None;
    let mut last_line = Instant::now();
    let mut validators: Option<Validators> = None;
    // `--kill-one`: the last node is stopped, then started again.
    let mut killed: Option<usize> = None;
    let mut restarted = false;

    // Formation, then the workload, until the deadline or Ctrl-C.
    loop {
        tokio::select! {
            _ = &mut ctrl_c => { interrupted = true; break; }
            () = tokio::time::sleep_until(deadline) => break,
            _ = tick.tick() => {}
        }
        if formed_at.is_none() && at_target(&nodes, target) {
            formed_at = Some(work.epoch.elapsed());
            workload_started = Some(Instant::now());
            match &consensus_config {
                Some(config) => validators = Some(Validators::start(&mut nodes, config.clone())),
                None => work.generate(&nodes, args.vote_interval, args.block_size),
            }
        }
        if let (Some(v), Some(started)) = (validators.as_mut(), workload_started) {
            let third = deadline.saturating_duration_since(started) / 3;
            if args.kill_one && killed.is_none() && !restarted && started.elapsed() >= third {
                let node = nodes
                    .pop()
                    .unwrap_or_else(|| unreachable!("two nodes at least"));
                v.stop(node.index).await;
                eprintln!("localnet: stopping node {}", node.index);
                killed = Some(node.index);
                node.router.shutdown().await;
            }
            if let Some(index) = killed.take_if(|_| started.elapsed() >= 2 * third) {
                eprintln!("localnet: restarting node {index}");
                let seed = Some(nodes[0].address.clone());
                let mut node =
                    net::start(index, &shape, args.transport, &node_dir(index), seed).await?;
                v.restart(&mut node);
                nodes.push(node);
                restarted = true;
            }
            v.check_catch_up();
        }
        if last_render.elapsed() < Duration::from_millis(500) {
            continue;
        }
        last_render = Instant::now();
        let phase = if formed_at.is_some() {
            "workload"
        } else {
            "forming"
        };
        let (table, line) = match validators.as_mut() {
            Some(v) => live.render_consensus(&nodes, &work, v, phase),
            None => live.render(&nodes, &work, phase),
        };
        if bar.is_hidden() {
            // Not a terminal: a line every few seconds instead of a table.
            if last_line.elapsed() >= Duration::from_secs(2) {
                eprintln!("{line}");
                last_line = Instant::now();
            }
        } else {
            bar.set_message(table);
        }
    }
    let workload_s = workload_started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    // Every counted broadcast complete, then let what is in flight land.
    bar.set_message("draining in-flight messages");
    let drain_until = Instant::now() + DRAIN_TIMEOUT;
    let stopped = work.stop_generating(DRAIN_TIMEOUT).await;
    while Instant::now() < drain_until && (work.votes.lost() > 0 || work.blocks.lost() > 0) {
        tokio::select! {
            _ = &mut ctrl_c => break,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    let connections: u64 = nodes.iter().map(Node::kept_peers).sum::<u64>() / 2;
    let fully = at_target(&nodes, target);
    let per_node: Vec<u64> = nodes.iter().map(Node::kept_peers).collect();
    let fewest_peers = per_node.iter().copied().min().unwrap_or(0);
    let most_peers = per_node.iter().copied().max().unwrap_or(0);
    let channels = match consensus_config {
        Some(_) => Vec::new(),
        None => vec![
            ChannelSummary::of("vote", &work.votes),
            ChannelSummary::of("block", &work.blocks),
        ],
    };
    let consensus = match validators {
        Some(v) => Some(v.finish().await),
        None => None,
    };
    bar.finish_and_clear();

    let stopping = Instant::now();
    work.receivers.abort_all();
    let shutdowns = nodes.into_iter().map(|node| async move {
        node.router.shutdown().await;
    });
    let clean = tokio::time::timeout(SHUTDOWN_TIMEOUT, futures::future::join_all(shutdowns))
        .await
        .is_ok();
    let shutdown_s = stopping.elapsed().as_secs_f64();

    let lost: u64 = channels.iter().map(|c| c.lost).sum();
    let delivered: u64 = channels.iter().map(|c| c.delivered).sum();
    let workload_ok = match &consensus {
        Some(c) => c.ok(args.kill_one),
        // Consensus never started: the network did not form.
        None if args.workload == WorkloadKind::Consensus => false,
        None => lost == 0 && delivered > 0,
    };
    let summary = Summary {
        nodes: n,
        workload: format!("{:?}", args.workload).to_lowercase(),
        transport: format!("{:?}", args.transport).to_lowercase(),
        formed_in_s: formed_at.map(|d| d.as_secs_f64()),
        workload_s,
        connections,
        connections_expected: (n * target as usize / 2) as u64,
        target_peers: target,
        fewest_peers,
        most_peers,
        fully_connected: fully && formed_at.is_some(),
        ok: fully && formed_at.is_some() && workload_ok && clean && stopped,
        channels,
        consensus,
        shutdown_s,
        interrupted,
    };
    summary.print();
    if !clean {
        println!("shutdown did not finish within {SHUTDOWN_TIMEOUT:?}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    if !stopped {
        println!("the workload did not stop within {DRAIN_TIMEOUT:?}");
    }
    // Gone before the temporary directories are removed.
    while work.receivers.join_next().await.is_some() {}
    Ok(summary.ok)
}

/// The peers each node must have for the network to be formed.
fn target_peers(nodes: usize, target_connected: usize) -> u64 {
    let everyone = nodes as u64 - 1;
    match target_connected {
        0 => everyone,
        m => everyone.min(m as u64),
    }
}

fn at_target(nodes: &[Node], target: u64) -> bool {
    nodes.iter().all(|n| n.kept_peers() >= target)
}

fn live_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
