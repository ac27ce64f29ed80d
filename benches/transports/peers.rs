//! Scenarios with many peers (`idle_memory`, `fanout`): the hub lives in
//! this process, the peers in a second one (this binary started with
//! `--peers`), so the hub's memory and its share of CPU and file
//! descriptors are what a real node would see.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use p2p_router::PeerAddress;
use p2p_transport_memory::MemoryNetwork;
use tokio::io::AsyncBufReadExt;

use crate::nodes::{self, now_ns, Kind, Payload};
use crate::scenarios::Sample;

/// Fan-out messages broadcast per repetition.
const FANOUT_MESSAGES: usize = 20;

/// Resident set size of this process (Linux).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time (user and system) a process has used so far, µs, from
/// `/proc/<pid>/stat` (Linux; 0 elsewhere). Resolution: one clock tick.
fn cpu_us(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 12th and 13th of them.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // USER_HZ is 100 on every Linux this runs on.
    ticks * 10_000.0
}

struct Child {
    process: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    fn spawn(kind: Kind, count: usize, hub: &PeerAddress, mode: &str) -> Child {
        let exe = std::env::current_exe().expect("own path");
        let mut process = tokio::process::Command::new(exe)
            .args([
                "--peers",
                kind.name(),
                &count.to_string(),
                &hub.to_string(),
                mode,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("peer process");
        let stdout = process.stdout.take().expect("stdout");
        Child {
            process,
            lines: tokio::io::BufReader::new(stdout).lines(),
        }
    }

    async fn line(&mut self) -> String {
        self.lines
            .next_line()
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    async fn stop(mut self) {
        if let Some(mut stdin) = self.process.stdin.take() {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(b"stop\n").await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.process.wait()).await;
    }
}

async fn hub(kind: Kind, peers: usize) -> nodes::Node {
    let memory = MemoryNetwork::new();
    nodes::node(kind, 50_000, true, peers, &memory).await
}

async fn wait_all_up(hub: &mut nodes::Node, count: usize) {
    let mut up = std::collections::BTreeSet::new();
    while up.len() < count {
        match hub.updates.recv().await {
            Ok(p2p_router::PeerUpdate::Up { peer, .. }) => {
                up.insert(peer);
            }
            Ok(p2p_router::PeerUpdate::Down { peer }) => {
                up.remove(&peer);
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

/// RSS growth of the hub per connected idle peer, bytes. The hub runs in a
/// fresh process (this binary with `--idle-hub`), so memory freed by
/// earlier scenarios cannot hide the growth.
pub async fn idle_memory(kind: Kind, count: usize) -> Sample {
    let exe = std::env::current_exe().expect("own path");
    let out = tokio::process::Command::new(exe)
        .args(["--idle-hub", kind.name(), &count.to_string()])
        .kill_on_drop(true)
        .output()
        .await
        .expect("hub process");
    let text = String::from_utf8_lossy(&out.stdout);
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("bytes_per_peer "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    Sample {
        value,
        ..Sample::default()
    }
}

/// The hub process of `idle_memory`: `--idle-hub <kind> <count>`.
pub fn idle_hub_process(args: &[String]) {
    let [kind, count, ..] = args else {
        eprintln!("usage: --idle-hub <kind> <count>");
        std::process::exit(2);
    };
    let kind = Kind::parse(kind).expect("kind");
    let count: usize = count.parse().expect("count");
    let runtime = process_runtime();
    runtime.block_on(async move {
        let mut hub = hub(kind, count).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss_bytes();
        let child = Child::spawn(kind, count, &hub.address, "idle");
        wait_all_up(&mut hub, count).await;
        // A few keep-alive rounds, then measure.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = rss_bytes();
        println!(
            "bytes_per_peer {}",
            after.saturating_sub(before) as f64 / count as f64
        );
        child.stop().await;
        hub.router.shutdown().await;
    });
}

/// Delivery latency of 1 KiB broadcasts from the hub to every peer, µs;
/// the value is the CPU time both processes spent per delivered message
/// while the broadcasts ran, µs.
pub async fn fanout(kind: Kind, count: usize) -> Sample {
    let mut hub = hub(kind, count).await;
    let mut child = Child::spawn(kind, count, &hub.address, "fanout");
    wait_all_up(&mut hub, count).await;
    // The peers see the hub up too before anything is sent.
    let ready = child.line().await;
    assert_eq!(ready, "up", "peer process failed to connect");
    let data = Bytes::from(vec![0x42u8; 1024]);
    let peers_pid = child.process.id();
    let cpu_before = cpu_us(None) + cpu_us(peers_pid);
    for _ in 0..FANOUT_MESSAGES {
        let m = Payload {
            data: data.clone(),
            sent_ns: now_ns(),
        };
        hub.hi_tx.broadcast(m).await.expect("broadcast");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let report = child.line().await;
    let cpu = cpu_us(None) + cpu_us(peers_pid) - cpu_before;
    let latencies: Vec<f64> = report
        .strip_prefix("latencies ")
        .unwrap_or("")
        .split(',')
        .filter_map(|v| v.parse().ok())
        .collect();
    child.stop().await;
    hub.router.shutdown().await;
    Sample {
        value: cpu / latencies.len().max(1) as f64,
        latencies: crate::scenarios::Latencies::from_us(&latencies),
        side: None,
    }
}

/// The peer process: `--peers <kind> <count> <hub address> <mode>`.
pub fn peer_process(args: &[String]) {
    let [kind, count, hub, mode, ..] = args else {
        eprintln!("usage: --peers <kind> <count> <hub> <idle|fanout>");
        std::process::exit(2);
    };
    let kind = Kind::parse(kind).expect("kind");
    let count: usize = count.parse().expect("count");
    let hub: PeerAddress = hub.parse().expect("hub address");
    let fanout = mode == "fanout";
    let runtime = process_runtime();
    runtime.block_on(async move {
        let memory = MemoryNetwork::new();
        let mut nodes = Vec::with_capacity(count);
        for i in 0..count {
            let node = nodes::node(kind, 100_000 + i as u64, false, 2, &memory).await;
            node.router.add_peer(hub.clone()).await.expect("add");
            nodes.push(node);
        }
        for node in &mut nodes {
            nodes::wait_up(&mut node.updates, &[hub.node_id()]).await;
        }
        println!("up");
        let _ = std::io::stdout().flush();
        if fanout {
            let mut tasks = tokio::task::JoinSet::new();
            for node in &nodes {
                let rx = node.hi_rx.clone();
                tasks.spawn(async move {
                    let mut latencies = Vec::with_capacity(FANOUT_MESSAGES);
                    for _ in 0..FANOUT_MESSAGES {
                        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                            Ok(Some(e)) => latencies
                                .push(now_ns().saturating_sub(e.message.sent_ns) as f64 / 1e3),
                            _ => break,
                        }
                    }
                    latencies
                });
            }
            let mut all = Vec::new();
            while let Some(Ok(l)) = tasks.join_next().await {
                all.extend(l);
            }
            let text: Vec<String> = all.iter().map(|v| format!("{v:.1}")).collect();
            println!("latencies {}", text.join(","));
            let _ = std::io::stdout().flush();
        }
        // Stay connected until told to stop.
        let stdin = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
        });
        let _ = stdin.await;
        for node in nodes {
            drop(node.router);
        }
    });
    let _ = Command::new("true").status();
}

/// The runtime of a helper process, with the file limit raised for its
/// many sockets.
fn process_runtime() -> tokio::runtime::Runtime {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
