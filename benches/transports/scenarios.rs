//! The scenarios, run through the full router.

use std::time::{Duration, Instant};

use bytes::Bytes;
use p2p_router::Envelope;
use p2p_transport_memory::MemoryNetwork;

use crate::nodes::{self, now_ns, pair, Kind, Payload};
pub use p2p_bench::Latencies;

/// One repetition's outcome.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// The headline figure (MB/s, msg/s, bytes per peer).
    pub value: f64,
    /// Latencies, when the scenario measures them.
    pub latencies: Latencies,
    /// A secondary figure (bulk MB/s during `hol`).
    pub side: Option<f64>,
}

/// Sends `data` to `to` on `tx` as fast as the router takes it, until
/// aborted.
fn saturate(
    tx: &p2p_router::ChannelSender<Payload>,
    to: p2p_router::NodeId,
    data: Bytes,
) -> tokio::task::JoinHandle<()> {
    let tx = tx.clone();
    tokio::spawn(async move {
        loop {
            let message = Payload {
                data: data.clone(),
                sent_ns: 0,
            };
            if tx.send(Envelope { peer: to, message }).await.is_err() {
                return;
            }
            // Once the peer is gone sends return at once: stay abortable.
            tokio::task::consume_budget().await;
        }
    })
}

/// 64 KiB messages on one channel as fast as the router takes them.
pub async fn bulk(kind: Kind, duration: Duration) -> Sample {
    let (a, b, _m) = pair(kind).await;

    let sender = saturate(&a.bulk_tx, b.id(), Bytes::from(vec![0xb5u8; 64 * 1024]));
    let rate = count(&b.bulk_rx, duration, |p| p.data.len()).await;
    sender.abort();
    shutdown(a, b).await;
    Sample {
        value: rate / 1e6,
        ..Sample::default()
    }
}

/// 100-byte messages on one channel.
pub async fn small(kind: Kind, duration: Duration) -> Sample {
    let (a, b, _m) = pair(kind).await;
    let sender = saturate(&a.bulk_tx, b.id(), Bytes::from(vec![0x5au8; 100]));
    let rate = count(&b.bulk_rx, duration, |_| 1).await;
    sender.abort();
    shutdown(a, b).await;
    Sample {
        value: rate,
        ..Sample::default()
    }
}

/// Units per second received on `rx` over `duration`, after a short warm-up.
async fn count(
    rx: &p2p_router::ChannelReceiver<Payload>,
    duration: Duration,
    units: impl Fn(&Payload) -> usize,
) -> f64 {
    let warmup = Instant::now() + duration / 5;
    while Instant::now() < warmup {
        if rx.recv().await.is_none() {
            return 0.0;
        }
    }
    let start = Instant::now();
    // One timer for the whole window (a timeout per message would cost
    // more than the router does).
    let end = tokio::time::sleep(duration);
    tokio::pin!(end);
    let mut total = 0usize;
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(e) => total += units(&e.message),
                None => break,
            },
            () = &mut end => break,
        }
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Ping-pong of a 64-byte message; latencies are round trips.
pub async fn rtt(kind: Kind, rounds: usize) -> Sample {
    let (a, b, _m) = pair(kind).await;
    let (b_rx, b_tx) = (b.hi_rx.clone(), b.hi_tx.clone());
    let echo = tokio::spawn(async move {
        while let Some(e) = b_rx.recv().await {
            let back = Envelope {
                peer: e.peer,
                message: e.message,
            };
            if b_tx.send(back).await.is_err() {
                return;
            }
        }
    });
    let data = Bytes::from(vec![1u8; 64]);
    let mut latencies = Vec::with_capacity(rounds);
    for i in 0..rounds + rounds / 10 {
        let t = Instant::now();
        let m = Payload {
            data: data.clone(),
            sent_ns: 0,
        };
        a.hi_tx
            .send(Envelope {
                peer: b.id(),
                message: m,
            })
            .await
            .expect("send");
        a.hi_rx.recv().await.expect("echo");
        // The first tenth warms up.
        if i >= rounds / 10 {
            latencies.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    echo.abort();
    shutdown(a, b).await;
    Sample {
        value: 0.0,
        latencies: Latencies::from_us(&latencies),
        side: None,
    }
}

/// One-way latency of 100-byte messages every millisecond on the
/// high-priority channel while the bulk channel saturates the connection.
pub async fn hol(kind: Kind, duration: Duration) -> Sample {
    let (a, b, _m) = pair(kind).await;
    let bulk = saturate(&a.bulk_tx, b.id(), Bytes::from(vec![0xb5u8; 64 * 1024]));
    let bulk_rx = b.bulk_rx.clone();
    let counter = tokio::spawn(async move { count(&bulk_rx, duration, |p| p.data.len()).await });
    let (hi, to) = (a.hi_tx.clone(), b.id());
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let data = Bytes::from(vec![7u8; 100]);
        loop {
            tick.tick().await;
            let m = Payload {
                data: data.clone(),
                sent_ns: now_ns(),
            };
            if hi
                .send(Envelope {
                    peer: to,
                    message: m,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut latencies = Vec::new();
    let warmup = Instant::now() + duration / 5;
    let end = Instant::now() + duration + duration / 5;
    while Instant::now() < end {
        match tokio::time::timeout_at(end.into(), b.hi_rx.recv()).await {
            Ok(Some(e)) => {
                if Instant::now() >= warmup {
                    let now = now_ns();
                    latencies.push(now.saturating_sub(e.message.sent_ns) as f64 / 1e3);
                }
            }
            _ => break,
        }
    }
    ticker.abort();
    let bulk_rate = counter.await.unwrap_or(0.0);
    bulk.abort();
    shutdown(a, b).await;
    Sample {
        value: 0.0,
        latencies: Latencies::from_us(&latencies),
        side: Some(bulk_rate / 1e6),
    }
}

/// Time from `add_peer` to Up, over `count` sequential fresh dialers.
pub async fn handshake(kind: Kind, count: usize) -> Sample {
    dial_times(kind, count, None).await
}

/// Time from `add_peer` to Up when a node that met the listener before
/// comes back (a new router and transport with the same key and, over
/// QUIC, the same session tickets): `count` reconnects after a first
/// contact that is not counted.
pub async fn reconnect(kind: Kind, count: usize) -> Sample {
    let sessions = p2p_transport_quic::SessionCache::default();
    dial_times(kind, count, Some(&sessions)).await
}

/// `count` timed dials of one listener: by fresh dialers, or with
/// `sessions` by one node coming back each time.
async fn dial_times(
    kind: Kind,
    count: usize,
    sessions: Option<&p2p_transport_quic::SessionCache>,
) -> Sample {
    let memory = MemoryNetwork::new();
    let mut listener = nodes::node(kind, 10_000, true, count + 16, &memory).await;
    let warmup = usize::from(sessions.is_some());
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count + warmup {
        // Dialers listen like real nodes do: their socket exists before the
        // dial, which then leaves from it.
        let mut dialer = match sessions {
            Some(sessions) => nodes::node_with_sessions(kind, 30_000, &memory, sessions).await,
            None => nodes::node(kind, 20_000 + i as u64, true, 4, &memory).await,
        };
        let t = Instant::now();
        dialer
            .router
            .add_peer(listener.address.clone())
            .await
            .expect("add");
        nodes::wait_up(&mut dialer.updates, &[listener.id()]).await;
        if i >= warmup {
            latencies.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let id = dialer.id();
        dialer.router.shutdown().await;
        if sessions.is_some() {
            // The one coming back must not find itself still connected.
            nodes::wait_down(&mut listener.updates, id).await;
        }
    }
    listener.router.shutdown().await;
    Sample {
        value: 0.0,
        latencies: Latencies::from_us(&latencies),
        side: None,
    }
}

async fn shutdown(a: nodes::Node, b: nodes::Node) {
    let (x, y) = (a.router, b.router);
    tokio::join!(x.shutdown(), y.shutdown());
}
