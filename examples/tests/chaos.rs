//! Chaos test: 8 node processes (the node example with `--probe`), each in
//! its own network namespace, joined by a bridge in a ninth namespace on a
//! private subnet (10.199.0.0/24) that exists only inside them. QUIC and
//! MConnection both carry traffic: even nodes advertise their QUIC
//! address, odd ones their MConnection address.
//!
//! While every node sends sequence-numbered messages to every other and
//! latency probes, the test injects faults in cycles: 3 % random loss
//! (nftables input-hook drops in every namespace) while 1,000 messages
//! reach each node, a partition into two halves until a link across it
//! drops, a SIGKILL of a node and its restart on the same data directory,
//! a SIGSTOP of a node until a peer sees it down (QUIC's idle timeout),
//! and a peer (this binary again, in a ninth namespace) that hands out 200
//! addresses nobody can reach, which PEX spreads. Each fault lasts until
//! its effect is seen, never a fixed time.
//!
//! It asserts: no node reports a sequence violation (a duplicate, a
//! reordering, or a gap within one connection); after each heal, restart
//! or resume every node is connected to all others within
//! [`RECONNECT_BOUND`]; the restarted node's peer store opens with the
//! peers it knew; RSS, file descriptors and tasks of the nodes never
//! restarted stay within bounds; every node stops cleanly (exit 0).
//! Namespaces and processes are removed however the test ends.
//!
//! Needs root, `ip` and `nft` (installed with apt when missing); skipped
//! with a printed reason otherwise. Runs 3 minutes by default:
//! `cargo test -p p2p-examples --test chaos -- --minutes 10` runs longer.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::time::Instant;

const NODES: usize = 8;
const PREFIX: &str = "p2pchaos";
const QUIC_PORT: u16 = 26656;
const MCONN_PORT: u16 = 26657;
/// How long a full mesh may take to come back after a fault ends.
const RECONNECT_BOUND: Duration = Duration::from_secs(60);
/// Sequence messages every node must receive while the loss lasts (about
/// 7 s of traffic).
const LOSS_MESSAGES: u64 = 1_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--burst") {
        // This binary again, inside the ninth namespace (see `burst`).
        return burst(args.get(i + 1).expect("--burst takes the seed's address"));
    }
    let minutes = parse_minutes();
    if let Some(reason) = missing_prerequisite() {
        println!("chaos: skipped: {reason}");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lab = Lab::create();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(run(&lab, Duration::from_secs_f64(minutes * 60.0)))
    }));
    // Processes first (dropping the runtime's children kills them), then
    // the namespaces.
    drop(runtime);
    if result.is_err() {
        // The nodes' logs, for the post-mortem.
        let kept = std::env::temp_dir().join(format!("{PREFIX}-failed"));
        let _ = std::fs::remove_dir_all(&kept);
        if std::fs::rename(&lab.dir, &kept).is_ok() {
            println!("chaos: the nodes' logs are in {}", kept.display());
        }
    }
    drop(lab);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn parse_minutes() -> f64 {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--minutes") {
        Some(i) => args
            .get(i + 1)
            .and_then(|m| m.parse().ok())
            .expect("--minutes takes a number"),
        None => 3.0,
    }
}

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let uid = std::process::Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("needs root (network namespaces)".into());
    }
    if !runs("ip", &["netns", "list"]) {
        return Some("`ip` (iproute2) is not available".into());
    }
    if !runs("nft", &["--version"]) {
        println!("chaos: installing nftables");
        let installed = std::process::Command::new("apt-get")
            .args(["install", "-y", "-q", "nftables"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed || !runs("nft", &["--version"]) {
            return Some("`nft` is not available and apt-get could not install it".into());
        }
    }
    // A container may give root without the right to make namespaces or
    // load nftables rules.
    let probe = format!("{PREFIX}-probe");
    let _ = runs("ip", &["netns", "del", &probe]);
    let usable = runs("ip", &["netns", "add", &probe])
        && runs(
            "ip",
            &["netns", "exec", &probe, "nft", "add table inet chaos_probe"],
        );
    let _ = runs("ip", &["netns", "del", &probe]);
    if !usable {
        return Some("cannot create a network namespace with nftables rules here".into());
    }
    None
}

fn runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `ip`/`nft`/`kill`, failing the test if it fails.
fn sh(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ns(i: usize) -> String {
    format!("{PREFIX}-n{i}")
}

fn ip(i: usize) -> String {
    format!("10.199.0.{}", 10 + i)
}

/// The namespaces, bridge and data directories; removed on drop.
struct Lab {
    dir: PathBuf,
}

impl Lab {
    fn create() -> Self {
        Self::remove_namespaces();
        let hub = format!("{PREFIX}-hub");
        sh("ip", &["netns", "add", &hub]);
        sh("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        sh("ip", &["-n", &hub, "link", "set", "br0", "up"]);
        // The nodes, and one more for the PEX burst.
        for i in 0..=NODES {
            let n = ns(i);
            let veth = format!("v{i}");
            sh("ip", &["netns", "add", &n]);
            sh(
                "ip",
                &[
                    "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                    "netns", &n,
                ],
            );
            sh(
                "ip",
                &["-n", &hub, "link", "set", &veth, "master", "br0", "up"],
            );
            sh(
                "ip",
                &[
                    "-n",
                    &n,
                    "addr",
                    "add",
                    &format!("{}/24", ip(i)),
                    "dev",
                    "eth0",
                ],
            );
            sh("ip", &["-n", &n, "link", "set", "eth0", "up"]);
            sh("ip", &["-n", &n, "link", "set", "lo", "up"]);
            // An empty input chain, for the faults' rules.
            let nft = |rule: &str| {
                sh(
                    "ip",
                    &["netns", "exec", &n, "sh", "-c", &format!("nft '{rule}'")],
                );
            };
            nft("add table inet chaos");
            nft("add chain inet chaos input { type filter hook input priority 0; policy accept; }");
        }
        let dir = std::env::temp_dir().join(format!("{PREFIX}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    fn remove_namespaces() {
        let list = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&list.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(PREFIX) {
                let _ = runs("ip", &["netns", "del", name]);
            }
        }
    }

    /// Replaces node `i`'s input rules with `rules` (none heals it).
    fn set_rules(&self, i: usize, rules: &[String]) {
        let n = ns(i);
        sh(
            "ip",
            &["netns", "exec", &n, "nft", "flush chain inet chaos input"],
        );
        for rule in rules {
            let command = format!("nft 'add rule inet chaos input {rule}'");
            sh("ip", &["netns", "exec", &n, "sh", "-c", &command]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        Self::remove_namespaces();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one node process has said.
#[derive(Debug, Default)]
struct Seen {
    id: String,
    ready: bool,
    up: BTreeSet<String>,
    known: BTreeSet<String>,
    violations: Vec<String>,
    stats: Option<Stats>,
    stopped: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    known: u64,
    seq: u64,
    gaps: u64,
    rtt_p50_us: u64,
    rtt_p99_us: u64,
    rss: u64,
    fds: u64,
    tasks: u64,
}

impl Stats {
    fn parse(line: &str) -> Option<Self> {
        let fields: BTreeMap<&str, u64> = line
            .split_whitespace()
            .filter_map(|f| f.split_once('='))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        Some(Self {
            known: *fields.get("known")?,
            seq: *fields.get("seq")?,
            gaps: *fields.get("gaps")?,
            rtt_p50_us: *fields.get("rtt_p50_us")?,
            rtt_p99_us: *fields.get("rtt_p99_us")?,
            rss: *fields.get("rss")?,
            fds: *fields.get("fds")?,
            tasks: *fields.get("tasks")?,
        })
    }
}

struct Node {
    index: usize,
    child: Child,
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
}

impl Node {
    async fn start(index: usize, dir: &Path, seed: Option<&str>) -> Self {
        let data = dir.join(format!("n{index}"));
        let mut listen = [
            format!("quic://{}:{QUIC_PORT}", ip(index)),
            format!("mconn://{}:{MCONN_PORT}", ip(index)),
        ];
        // The first listen address is the one a node advertises.
        if index % 2 == 1 {
            listen.reverse();
        }
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &ns(index)])
            .arg(common::node_binary())
            .arg("--data-dir")
            .arg(&data)
            .args(["--network", "chaos", "--probe"])
            .args(["--listen", &listen[0], "--listen", &listen[1]]);
        if let Some(seed) = seed {
            command.args(["--seed", seed]);
        }
        let stderr = std::fs::File::create(dir.join(format!("n{index}.log"))).unwrap();
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changed = Arc::new(Notify::new());
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (s, c) = (seen.clone(), changed.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                {
                    let mut seen = s.lock().unwrap();
                    if let Some(id) = line.strip_prefix("node ") {
                        seen.id = id.to_owned();
                    } else if line == "ready" {
                        seen.ready = true;
                    } else if let Some(p) = line.strip_prefix("peer up ") {
                        seen.up.insert(p.to_owned());
                    } else if let Some(p) = line.strip_prefix("peer down ") {
                        seen.up.remove(p);
                    } else if let Some(p) = line.strip_prefix("known ") {
                        seen.known.insert(p.to_owned());
                    } else if line.starts_with("violation ") {
                        println!("n{index}: {line}");
                        seen.violations.push(line.clone());
                    } else if line.starts_with("stats ") {
                        seen.stats = Stats::parse(&line);
                    } else if line == "stopped" {
                        seen.stopped = true;
                    }
                }
                c.notify_waiters();
            }
            c.notify_waiters();
        });
        let node = Self {
            index,
            child,
            seen,
            changed,
        };
        node.wait("ready", Duration::from_secs(60), |s| s.ready)
            .await;
        node
    }

    fn id(&self) -> String {
        self.seen.lock().unwrap().id.clone()
    }

    fn pid(&self) -> String {
        self.child.id().expect("running").to_string()
    }

    /// Waits until `f` holds for what the node has said.
    async fn wait(&self, what: &str, bound: Duration, f: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + bound;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if f(&self.seen.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("n{}: not {what} within {bound:?}", self.index);
            }
        }
    }

    fn stats(&self) -> Stats {
        self.seen.lock().unwrap().stats.unwrap_or_default()
    }

    /// SIGTERM; the node must stop cleanly.
    async fn stop(mut self) {
        sh("kill", &["-TERM", &self.pid()]);
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("stops within 30 s")
            .unwrap();
        assert!(status.success(), "n{} exited with {status}", self.index);
        self.wait("stopped", Duration::from_secs(5), |s| s.stopped)
            .await;
    }
}

/// Addresses in the burst, on a subnet no namespace routes: dialing one
/// fails at once and sends nothing.
const BURST: u64 = 200;

/// The burst peer: a router with PEX at the ninth namespace's address that
/// knows [`BURST`] addresses nobody can reach, connects to `seed` and
/// serves peer exchange until it is killed.
fn burst(seed: &str) {
    use p2p_router::test_utils::{key, TestNodeBuilder};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let k = key(9_000);
        let local = p2p_router::LocalNode::new(k.clone(), "chaos");
        let listen = format!("{}:{QUIC_PORT}", ip(NODES)).parse().unwrap();
        let config = p2p_transport_quic::QuicConfig::new().listen_on(listen);
        let transport = Arc::new(p2p_transport_quic::QuicTransport::bind(&local, config).unwrap());
        let address = format!("quic://{}@{listen}", k.node_id()).parse().unwrap();
        let mut builder = TestNodeBuilder::new(k);
        builder.network = "chaos".into();
        builder.pex = Some(p2p_router::pex::PexOptions::default());
        let mut node = builder.start(transport, address);
        let seed: p2p_router::PeerAddress = seed.parse().unwrap();
        let seed_id = seed.node_id();
        node.router.add_peer(seed).await.unwrap();
        p2p_router::test_utils::require_up(&mut node.updates, seed_id).await;
        // Known only once connected: dials to them take their whole
        // timeout and would hold the dial slots the seed needs.
        for n in 0..BURST {
            let fake = format!(
                "quic://{}@10.199.1.{}:{}",
                key(10_000 + n).node_id(),
                1 + n % 250,
                QUIC_PORT
            );
            node.router.add_peer(fake.parse().unwrap()).await.unwrap();
        }
        println!("burst up");
        std::future::pending::<()>().await;
    });
}

/// Waits until every node is connected to all the others; returns how long
/// it took.
async fn full_mesh(nodes: &[Node], after: &str) -> Duration {
    let start = Instant::now();
    let ids: Vec<String> = nodes.iter().map(Node::id).collect();
    for node in nodes {
        let others: BTreeSet<String> = ids.iter().filter(|id| **id != node.id()).cloned().collect();
        node.wait(
            &format!("connected to all after {after}"),
            RECONNECT_BOUND,
            |s| others.is_subset(&s.up),
        )
        .await;
    }
    start.elapsed()
}

/// Every node's sequence count grows: messages flow.
async fn flowing(nodes: &[Node], what: &str) {
    for node in nodes {
        let before = node.stats().seq;
        node.wait(
            &format!("receiving during {what}"),
            Duration::from_secs(30),
            |s| s.stats.is_some_and(|st| st.seq > before),
        )
        .await;
    }
}

/// Keeps a fault in place until every node received `count` more
/// sequence messages under it.
async fn through(nodes: &[Node], count: u64, what: &str) {
    for node in nodes {
        let before = node.stats().seq;
        node.wait(&format!("receiving during {what}"), RECONNECT_BOUND, |s| {
            s.stats.is_some_and(|st| st.seq >= before + count)
        })
        .await;
    }
}

/// Keeps a fault in place until one of `observers` has seen one of
/// `peers` go down: the fault has had its effect.
async fn until_one_down(nodes: &[Node], observers: &[usize], peers: &[usize], what: &str) {
    let ids: BTreeSet<String> = peers.iter().map(|&p| nodes[p].id()).collect();
    let deadline = Instant::now() + RECONNECT_BOUND;
    loop {
        let waits: Vec<_> = observers
            .iter()
            .map(|&o| Box::pin(nodes[o].changed.notified()))
            .collect();
        let lost = observers.iter().any(|&o| {
            let seen = nodes[o].seen.lock().unwrap();
            ids.iter().any(|id| !seen.up.contains(id))
        });
        if lost {
            return;
        }
        let changed = futures::future::select_all(waits);
        assert!(
            tokio::time::timeout_at(deadline, changed).await.is_ok(),
            "no node saw a peer go down within {RECONNECT_BOUND:?} of {what}"
        );
    }
}

#[derive(Default)]
struct Report {
    rows: Vec<(String, Duration)>,
    faults: BTreeMap<&'static str, u32>,
}

impl Report {
    fn fault(&mut self, what: &'static str, reconnect: Duration) {
        *self.faults.entry(what).or_default() += 1;
        println!(
            "chaos: {what}: full mesh again after {:.2} s",
            reconnect.as_secs_f64()
        );
        self.rows.push((what.to_owned(), reconnect));
    }
}

async fn run(lab: &Lab, total: Duration) {
    let started = Instant::now();
    let node_binary = common::node_binary();
    assert!(node_binary.exists());
    let mut nodes = vec![Node::start(0, &lab.dir, None).await];
    let first = nodes[0].id();
    for i in 1..NODES {
        let seed = if i % 2 == 0 {
            format!("quic://{first}@{}:{QUIC_PORT}", ip(0))
        } else {
            format!("mconn://{first}@{}:{MCONN_PORT}", ip(0))
        };
        nodes.push(Node::start(i, &lab.dir, Some(&seed)).await);
    }
    let formed = full_mesh(&nodes, "start").await;
    println!(
        "chaos: {NODES} nodes formed a full mesh in {:.2} s",
        formed.as_secs_f64()
    );
    flowing(&nodes, "the start").await;
    // The baseline for the resource bounds, per node never restarted.
    let baseline: Vec<Stats> = nodes.iter().map(Node::stats).collect();
    let mut report = Report::default();
    let mut restarted = BTreeSet::new();

    let mut cycle = 0;
    let mut cycle_length = Duration::ZERO;
    // At least one cycle; another while one more fits in the time.
    while cycle == 0 || started.elapsed() + cycle_length < total {
        cycle += 1;
        let cycle_start = Instant::now();
        println!("chaos: cycle {cycle}");

        for i in 0..NODES {
            lab.set_rules(i, &["numgen random mod 100 < 3 drop".to_owned()]);
        }
        through(&nodes, LOSS_MESSAGES, "3 % loss").await;
        for i in 0..NODES {
            lab.set_rules(i, &[]);
        }
        report.fault(
            "3 % loss (1,000 messages per node)",
            full_mesh(&nodes, "loss").await,
        );

        let half = |range: std::ops::Range<usize>| {
            let ips: Vec<String> = range.map(ip).collect();
            vec![format!("ip saddr {{ {} }} drop", ips.join(", "))]
        };
        for i in 0..NODES {
            let other = if i < NODES / 2 {
                half(NODES / 2..NODES)
            } else {
                half(0..NODES / 2)
            };
            lab.set_rules(i, &other);
        }
        let (left, right): (Vec<usize>, Vec<usize>) =
            ((0..NODES / 2).collect(), (NODES / 2..NODES).collect());
        until_one_down(&nodes, &left, &right, "the partition").await;
        for i in 0..NODES {
            lab.set_rules(i, &[]);
        }
        report.fault(
            "partition in halves until a link drops",
            full_mesh(&nodes, "the partition").await,
        );

        // An odd node (advertising MConnection) is killed, an even one
        // (QUIC, whose peers notice a silent node after the 10 s idle
        // timeout) is stopped.
        let victim = [5, 3, 7, 1][cycle % 4];
        let known_before = nodes[victim].seen.lock().unwrap().up.clone();
        let mut old = nodes.remove(victim);
        old.child.kill().await.unwrap();
        let seed = format!("quic://{first}@{}:{QUIC_PORT}", ip(0));
        let node = Node::start(victim, &lab.dir, Some(&seed)).await;
        // Its store opened and still lists the peers it had.
        let known = node.seen.lock().unwrap().known.clone();
        assert!(
            known_before.is_subset(&known),
            "n{victim} lost peers from its store: had {known_before:?}, knows {known:?}"
        );
        nodes.insert(victim, node);
        restarted.insert(victim);
        report.fault(
            "SIGKILL and restart",
            full_mesh(&nodes, "the restart").await,
        );

        let sleeper = [2, 4, 6][cycle % 3];
        sh("kill", &["-STOP", &nodes[sleeper].pid()]);
        let others: Vec<usize> = (0..NODES).filter(|&i| i != sleeper).collect();
        until_one_down(&nodes, &others, &[sleeper], "SIGSTOP").await;
        sh("kill", &["-CONT", &nodes[sleeper].pid()]);
        report.fault(
            "SIGSTOP until a peer sees it down",
            full_mesh(&nodes, "SIGCONT").await,
        );

        // A peer tells node 0 of 200 addresses nobody can reach; PEX
        // spreads them to every node, which tries them all.
        let seed = format!("quic://{first}@{}:{QUIC_PORT}", ip(0));
        let mut burster = Command::new("ip")
            .args(["netns", "exec", &ns(NODES)])
            .arg(std::env::current_exe().unwrap())
            .args(["--burst", &seed])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(burster.stdout.take().unwrap()).lines();
        let up = tokio::time::timeout(RECONNECT_BOUND, lines.next_line()).await;
        assert!(
            matches!(&up, Ok(Ok(Some(l))) if l == "burst up"),
            "the burst peer did not connect: {up:?}"
        );
        // Node 0 asks the burst peer directly (a response carries at most
        // 100 addresses). The others learn them second hand at PEX's own
        // pace, and only over QUIC: MConnection peers speak CometBFT's
        // dialect, which carries no QUIC address.
        let learned = Instant::now();
        nodes[0]
            .wait("told of the burst", RECONNECT_BOUND, |s| {
                s.stats.is_some_and(|st| st.known >= BURST / 2)
            })
            .await;
        let known: Vec<u64> = nodes.iter().map(|n| n.stats().known).collect();
        println!(
            "chaos: burst spread in {:.2} s; peers known per node: {known:?}",
            learned.elapsed().as_secs_f64()
        );
        burster.kill().await.unwrap();
        flowing(&nodes, "the burst").await;
        report.fault(
            "a burst of 200 PEX-learned addresses",
            full_mesh(&nodes, "the burst").await,
        );
        cycle_length = cycle_start.elapsed();
        flowing(&nodes, "the end of the cycle").await;
    }

    let mut violations = Vec::new();
    println!("| node | seq received | gaps (across reconnections) | rtt p50 / p99 (last 2 s) | RSS start → end | fds | tasks |");
    println!("|---|---|---|---|---|---|---|");
    for node in &nodes {
        let (start, end) = (baseline[node.index], node.stats());
        println!(
            "| n{} | {} | {} | {:.1} / {:.1} ms | {:.1} → {:.1} MB | {} → {} | {} → {} |",
            node.index,
            end.seq,
            end.gaps,
            end.rtt_p50_us as f64 / 1e3,
            end.rtt_p99_us as f64 / 1e3,
            start.rss as f64 / 1e6,
            end.rss as f64 / 1e6,
            start.fds,
            end.fds,
            start.tasks,
            end.tasks
        );
        violations.extend(node.seen.lock().unwrap().violations.clone());
        if !restarted.contains(&node.index) {
            // Bounded growth: a leak grows without bound over the cycles.
            for (what, before, after, limit) in [
                ("RSS", start.rss, end.rss, start.rss * 2 + (32 << 20)),
                ("fds", start.fds, end.fds, start.fds + 16),
                ("tasks", start.tasks, end.tasks, start.tasks + 64),
            ] {
                let n = node.index;
                assert!(after <= limit, "n{n}: {what} grew from {before} to {after}");
            }
        }
    }
    for (what, n) in &report.faults {
        let times: Vec<String> = report
            .rows
            .iter()
            .filter(|(w, _)| w == what)
            .map(|(_, t)| format!("{:.2} s", t.as_secs_f64()))
            .collect();
        println!(
            "chaos: {what}: {n} time(s), full mesh again after {}",
            times.join(", ")
        );
    }
    assert!(
        violations.is_empty(),
        "sequence violations: {violations:#?}"
    );
    for node in nodes {
        node.stop().await;
    }
    println!(
        "chaos: passed in {:.0} s, {cycle} cycle(s)",
        started.elapsed().as_secs_f64()
    );
}
