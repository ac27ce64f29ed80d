//! The node example as real processes on loopback: three nodes (one the
//! seed) connect, chat flows, `/metrics` counts it, SIGTERM stops them
//! cleanly, and after a restart their peer stores list each other.
//!
//! Every wait is on a line the node prints; the overall deadline only
//! turns a hang into a failure.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::NodeProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(120);

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
