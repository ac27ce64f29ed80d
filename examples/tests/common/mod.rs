//! The node example as a child process, for the tests that run it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The node example binary, brought up to date once per test run (a
/// no-op when `cargo test` has just built it with the examples).
pub fn node_binary() -> PathBuf {
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

pub struct NodeProcess {
    pub child: Child,
    pub stdin: ChildStdin,
    pub lines: Lines<BufReader<ChildStdout>>,
    pub id: String,
    pub quic: String,
    pub metrics: Option<String>,
    pub known: BTreeSet<String>,
    /// Peers up, per the `peer up` / `peer down` lines read so far.
    pub up: BTreeSet<String>,
}

impl NodeProcess {
    pub async fn start(dir: &Path, extra: &[&str]) -> Self {
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

    pub async fn next_line(&mut self) -> String {
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
    pub async fn until(&mut self, mut f: impl FnMut(&str) -> bool) -> String {
        loop {
            let line = self.next_line().await;
            if f(&line) {
                return line;
            }
        }
    }

    pub async fn until_up(&mut self, peers: &[&str]) {
        while !peers.iter().all(|p| self.up.contains(*p)) {
            self.next_line().await;
        }
    }

    pub async fn say(&mut self, text: &str) {
        self.stdin
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// SIGTERM, then the exit status and the rest of the output.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
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
