//! The node example as real processes on loopback: three nodes (one the
//! seed) connect, chat flows, `/metrics` counts it, SIGTERM stops them
//! cleanly, and after a restart their peer stores list each other.
//!
//! Every wait is on a line the node prints; the overall deadline only
//! turns a hang into a failure.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const DEADLINE: Duration = Duration::from_secs(120);

/// The node example binary, brought up to date once per test run (a
/// no-op when `cargo test` has just built it with the examples).
fn node_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "--example", "node"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .unwrap();
            assert!(status.success(), "building the node example failed");
            // target/<profile>/deps/<test> → target/<profile>/examples/node
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().unwrap().parent().unwrap();
            profile_dir.join("examples").join("node")
        })
        .clone()
}

struct NodeProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    id: String,
    quic: String,
    metrics: Option<String>,
    known: BTreeSet<String>,
    /// Peers up, per the `peer up` / `peer down` lines read so far.
    up: BTreeSet<String>,
}

impl NodeProcess {
    async fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(node_binary())
            .arg("--data-dir")
            .arg(dir)
            .args(["--network", "node-test", "--listen", "quic://127.0.0.1:0"])
            .args(["--listen", "mconn://127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut node = NodeProcess {
            child,
            stdin,
            lines,
            id: String::new(),
            quic: String::new(),
            metrics: None,
            known: BTreeSet::new(),
            up: BTreeSet::new(),
        };
        // Start-up lines, up to `ready` (peer events may come before it;
        // `next_line` keeps track of them).
        loop {
            let line = node.next_line().await;
            if line == "ready" {
                break;
            }
            if let Some(id) = line.strip_prefix("node ") {
                node.id = id.to_owned();
            } else if let Some(a) = line.strip_prefix("listening quic://") {
                node.quic = format!("quic://{a}");
            } else if let Some(url) = line.strip_prefix("metrics ") {
                node.metrics = Some(url.to_owned());
            } else if let Some(id) = line.strip_prefix("known ") {
                node.known.insert(id.to_owned());
            }
        }
        node
    }

    async fn next_line(&mut self) -> String {
        let line = self
            .lines
            .next_line()
            .await
            .unwrap()
            .expect("the node closed its output");
        if let Some(p) = line.strip_prefix("peer up ") {
            self.up.insert(p.to_owned());
        } else if let Some(p) = line.strip_prefix("peer down ") {
            self.up.remove(p);
        }
        line
    }

    /// Reads lines until one satisfies `f`.
    async fn until(&mut self, mut f: impl FnMut(&str) -> bool) -> String {
        loop {
            let line = self.next_line().await;
            if f(&line) {
                return line;
            }
        }
    }

    async fn until_up(&mut self, peers: &[&str]) {
        while !peers.iter().all(|p| self.up.contains(*p)) {
            self.next_line().await;
        }
    }

    async fn say(&mut self, text: &str) {
        self.stdin
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// SIGTERM, then the exit status and the rest of the output.
    async fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().unwrap();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let mut rest = Vec::new();
        while let Some(line) = self.lines.next_line().await.unwrap() {
            rest.push(line);
        }
        (self.child.wait().await.unwrap(), rest)
    }
}

async fn scrape(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = TcpStream::connect(host).await.unwrap();
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_connect_chat_export_metrics_stop_and_remember_each_other() {
    tokio::time::timeout(DEADLINE, scenario())
        .await
        .expect("the scenario hung");
}

async fn scenario() {
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..3).map(|i| root.path().join(format!("n{i}"))).collect();

    let mut seed = NodeProcess::start(&dirs[0], &["--metrics", "127.0.0.1:0"]).await;
    let seed_addr = seed.quic.clone();
    let mut b = NodeProcess::start(&dirs[1], &["--seed", &seed_addr, "--echo"]).await;
    let mut c = NodeProcess::start(&dirs[2], &["--seed", &seed_addr]).await;
    let ids = [seed.id.clone(), b.id.clone(), c.id.clone()];

    eprintln!("started");
    // Everyone connects to everyone: b and c learn of each other by PEX.
    seed.until_up(&[&ids[1], &ids[2]]).await;
    b.until_up(&[&ids[0], &ids[2]]).await;
    c.until_up(&[&ids[0], &ids[1]]).await;

    eprintln!("connected");
    // A line typed into c reaches both others; b (--echo) answers it.
    c.say("hello from c").await;
    let want = format!("chat {}: hello from c", ids[2]);
    seed.until(|l| l == want).await;
    b.until(|l| l == want).await;
    let echo = format!("echo {}: hello from c", ids[1]);
    c.until(|l| l == echo).await;

    eprintln!("chatted");
    let metrics = scrape(seed.metrics.as_deref().unwrap()).await;
    let peers = sample(
        &metrics,
        "p2p_peers{transport=\"quic\",direction=\"inbound\"}",
    ) + sample(
        &metrics,
        "p2p_peers{transport=\"quic\",direction=\"outbound\"}",
    );
    assert_eq!(peers, 2.0, "{metrics}");
    assert!(
        sample(
            &metrics,
            "p2p_channel_received_messages_total{channel=\"chat\",channel_id=\"112\"}"
        ) >= 1.0
    );
    assert!(
        sample(
            &metrics,
            "p2p_channel_sent_messages_total{channel=\"pex\",channel_id=\"0\"}"
        ) >= 1.0
    );
    assert!(sample(&metrics, "p2p_known_peers ") >= 2.0);
    assert!(sample(&metrics, "p2p_handshake_duration_seconds_count") >= 2.0);
    assert!(
        sample(
            &metrics,
            "p2p_transport_rtt_seconds_count{transport=\"quic\"}"
        ) >= 2.0
    );
    assert!(
        sample(
            &metrics,
            "p2p_transport_sent_packets_total{transport=\"quic\"}"
        ) > 0.0
    );

    for node in [seed, b, c] {
        let (status, rest) = node.terminate().await;
        assert!(status.success(), "exit status {status}; output {rest:?}");
        assert_eq!(rest.last().map(String::as_str), Some("stopped"), "{rest:?}");
    }

    // Restarted with no seeds, each lists the other two from its store.
    for (i, dir) in dirs.iter().enumerate() {
        let node = NodeProcess::start(dir, &[]).await;
        assert_eq!(node.id, ids[i], "the key file keeps the identity");
        let others: BTreeSet<String> = ids.iter().filter(|id| **id != ids[i]).cloned().collect();
        assert_eq!(node.known, others, "node {i}");
        let (status, _) = node.terminate().await;
        assert!(status.success());
    }
}
