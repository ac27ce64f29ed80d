//! Measures how the per-stream receive window trades a small channel's
//! latency against bulk throughput on one QUIC connection, to choose
//! `QuicConfig::stream_receive_window`.
//!
//! Channel 1 carries a 100-byte message every millisecond; channel 2 is
//! saturated with 64 KiB messages; both flow on one connection over
//! loopback. For each window the run prints the small channel's one-way
//! latency (p50/p99) and the bulk rate.
//!
//! `cargo run --release -p p2p-transport-quic --example window_sweep [seconds]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2p_router::transport::Admission;
use p2p_router::{conformance, ChannelId, Connection, LocalNode, NodeKey, Transport};
use p2p_transport_quic::{QuicConfig, QuicTransport};

const SMALL: ChannelId = ChannelId(1);
const BULK: ChannelId = ChannelId(2);

struct Outcome {
    p50_us: f64,
    p99_us: f64,
    bulk_mb_s: f64,
}

async fn run(window: u32, seconds: f64) -> Result<Outcome, Box<dyn std::error::Error>> {
    let (ka, kb) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
    let config = |_: ()| {
        let mut c = QuicConfig::new().listen_on("127.0.0.1:0".parse().expect("addr"));
        c.stream_receive_window = window;
        c
    };
    let a = QuicTransport::bind(&LocalNode::new(ka.clone(), "sweep"), config(()))?;
    let b = QuicTransport::bind(&LocalNode::new(kb.clone(), "sweep"), config(()))?;
    let endpoint = b.listen_endpoints()[0].clone();
    let (dialed, accepted) = tokio::join!(a.dial(kb.node_id(), &endpoint), b.accept());
    let (tx, rx): (Arc<dyn Connection>, Arc<dyn Connection>) =
        (Arc::from(dialed?), Arc::from(accepted?));
    let (ia, ib) = (conformance::node_info(&ka), conformance::node_info(&kb));
    let (x, y) = tokio::join!(tx.handshake(&ia), rx.handshake(&ib));
    x?;
    y?;
    let (s, r) = tokio::join!(rx.send_admission(Admission::Accepted), tx.recv_admission());
    s?;
    r?;

    let epoch = Instant::now();
    let deadline = epoch + Duration::from_secs_f64(seconds);
    let bulk_tx = {
        let tx = tx.clone();
        tokio::spawn(async move {
            let chunk = Bytes::from(vec![0u8; 64 * 1024]);
            while Instant::now() < deadline {
                if tx.send(BULK, chunk.clone()).await.is_err() {
                    break;
                }
            }
        })
    };
    let bulk_rx = {
        let rx = rx.clone();
        tokio::spawn(async move {
            let mut bytes = 0usize;
            let start = Instant::now();
            while let Ok(m) = rx.recv(BULK, 1 << 20).await {
                bytes += m.len();
                if Instant::now() >= deadline {
                    break;
                }
            }
            bytes as f64 / start.elapsed().as_secs_f64() / 1e6
        })
    };
    let small_tx = {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while Instant::now() < deadline {
                tick.tick().await;
                let mut m = vec![0u8; 100];
                let sent = epoch.elapsed().as_nanos() as u64;
                m[..8].copy_from_slice(&sent.to_be_bytes());
                if tx.send(SMALL, Bytes::from(m)).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let Ok(Ok(m)) =
            tokio::time::timeout(Duration::from_millis(500), rx.recv(SMALL, 1024)).await
        else {
            break;
        };
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&m[..8]);
        let now = epoch.elapsed().as_nanos() as u64;
        latencies.push(now.saturating_sub(u64::from_be_bytes(sent)) as f64 / 1e3);
    }
    small_tx.abort();
    bulk_tx.abort();
    let bulk_mb_s = bulk_rx.await?;
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    tx.close(p2p_router::transport::CloseReason::Normal).await;
    a.close().await;
    b.close().await;
    Ok(Outcome {
        p50_us: pick(0.5),
        p99_us: pick(0.99),
        bulk_mb_s,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: f64 = std::env::args().nth(1).map_or(Ok(3.0), |s| s.parse())?;
    println!("| stream window | small p50 µs | small p99 µs | bulk MB/s |");
    println!("|---|---|---|---|");
    for window in [32 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20] {
        let o = run(window, seconds).await?;
        println!(
            "| {} KiB | {:.0} | {:.0} | {:.0} |",
            window >> 10,
            o.p50_us,
            o.p99_us,
            o.bulk_mb_s
        );
    }
    Ok(())
}
