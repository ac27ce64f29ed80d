//! The probe workload (`--probe`), which the chaos test drives: each node
//! sends every peer a sequence-numbered message every 50 ms on a reliable
//! channel and a latency probe every 200 ms on a high-priority one, and
//! checks what arrives itself.
//!
//! ```proto
//! message Seq   { uint64 epoch = 1; uint64 n = 2; uint64 conn = 3; } // 0x71
//! message Probe { uint64 sent_us = 1; bool reply = 2; }            // 0x72
//! ```
//!
//! `epoch` is the sender's start time, so a restarted sender is told from
//! one that lost messages; `conn` counts the sender's connections to this
//! peer (its Ups), since messages still queued from a connection that went
//! down may arrive after the Down. Per sender and epoch the numbers must
//! strictly increase, by exactly one within a connection: a gap is allowed
//! only where `conn` grows. Anything else prints a `violation <peer>
//! <what>` line. Every 2 s a `stats` line gives the counts, the peers
//! known, latency percentiles, and the process's RSS, open file descriptors and live tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use p2p_router::{
    Channel, ChannelDescriptor, ChannelId, Envelope, FullPolicy, NodeId, PeerUpdate, RouterHandle,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;

use crate::Output;

pub const SEQ: ChannelId = ChannelId(0x71);
pub const PROBE: ChannelId = ChannelId(0x72);
const SEQ_EVERY: Duration = Duration::from_millis(50);
const PROBE_EVERY: Duration = Duration::from_millis(200);
const STATS_EVERY: Duration = Duration::from_secs(2);

#[derive(Clone, PartialEq, prost::Message)]
pub struct Seq {
    #[prost(uint64, tag = "1")]
    pub epoch: u64,
    #[prost(uint64, tag = "2")]
    pub n: u64,
    #[prost(uint64, tag = "3")]
    pub conn: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Probe {
    #[prost(uint64, tag = "1")]
    pub sent_us: u64,
    #[prost(bool, tag = "2")]
    pub reply: bool,
}

/// The two channels, to declare before the router starts.
pub struct Channels {
    seq: Channel<Seq>,
    probe: Channel<Probe>,
}

pub fn declare(
    builder: &mut p2p_router::RouterBuilder,
) -> Result<Channels, p2p_router::ChannelError> {
    Ok(Channels {
        // Reliable: a full queue makes the sender wait.
        seq: builder.channel(ChannelDescriptor::new(SEQ, "seq").with_priority(3))?,
        // Probes are best effort and go first.
        probe: builder.channel(
            ChannelDescriptor::new(PROBE, "probe")
                .with_priority(9)
                .with_full_policy(FullPolicy::DropOldest),
        )?,
    })
}

/// What one sender's messages looked like so far.
struct Track {
    epoch: u64,
    conn: u64,
    last: u64,
}

/// The receive-side check and counters.
#[derive(Default)]
struct Checker {
    tracks: HashMap<NodeId, Track>,
    received: u64,
    gaps: u64,
    violations: u64,
}

impl Checker {
    /// Checks one message; returns a violation to print.
    fn seq(&mut self, peer: NodeId, m: &Seq) -> Option<String> {
        self.received += 1;
        let next = Track {
            epoch: m.epoch,
            conn: m.conn,
            last: m.n,
        };
        // A first message is fine whatever its number.
        let track = self.tracks.insert(peer, next)?;
        let verdict = if track.epoch != m.epoch {
            // A restart: its own numbering.
            None
        } else if m.n <= track.last || m.conn < track.conn {
            Some(format!(
                "{}/{} after {}/{} (duplicate or reordered)",
                m.n, m.conn, track.last, track.conn
            ))
        } else if m.n > track.last + 1 {
            self.gaps += 1;
            (m.conn == track.conn).then(|| {
                format!(
                    "gap {}..{} within connection {}",
                    track.last + 1,
                    m.n,
                    m.conn
                )
            })
        } else {
            None
        };
        if verdict.is_some() {
            self.violations += 1;
        }
        verdict
    }
}

/// Runs the workload until the task is aborted.
pub async fn run(router: RouterHandle, channels: Channels, out: Arc<Output>) {
    let start = Instant::now();
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let Channels { seq, probe } = channels;
    // Subscribed before anything else here, so no Up is missed.
    let mut updates = router.subscribe_peer_updates();
    let mut senders: HashMap<NodeId, tokio::task::AbortHandle> = HashMap::new();
    let mut tasks = JoinSet::new();
    // Each peer's sequence goes on across its reconnections.
    let mut counters: HashMap<NodeId, Arc<tokio::sync::Mutex<u64>>> = HashMap::new();
    let mut checker = Checker::default();
    let mut rtts = hdrhistogram::Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
    let mut stats = tokio::time::interval(STATS_EVERY);
    let mut probes = tokio::time::interval(PROBE_EVERY);
    let mut conns: HashMap<NodeId, u64> = HashMap::new();
    let mut start_sender = |peer: NodeId, tasks: &mut JoinSet<()>| {
        let conn = conns.entry(peer).or_insert(0);
        *conn += 1;
        let sender = Sender {
            seq: seq.clone(),
            peer,
            epoch,
            conn: *conn,
            counter: counters.entry(peer).or_default().clone(),
        };
        tasks.spawn(sender.run())
    };
    for peer in router.connected_peers().await.unwrap_or_default() {
        let handle = start_sender(peer, &mut tasks);
        senders.insert(peer, handle);
    }
    loop {
        tokio::select! {
            biased;
            update = updates.recv() => match update {
                Ok(PeerUpdate::Up { peer, .. }) => {
                    if let Some(old) = senders.remove(&peer) {
                        old.abort();
                    }
                    let handle = start_sender(peer, &mut tasks);
                    senders.insert(peer, handle);
                }
                Ok(PeerUpdate::Down { peer }) => {
                    if let Some(old) = senders.remove(&peer) {
                        old.abort();
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => out.line(&format!("violation - missed {n} peer updates")),
                Err(RecvError::Closed) => return,
            },
            // Probes before the steady sequence traffic, so that their
            // round trips measure the network, not this loop's backlog.
            got = probe.recv() => {
                let Some(Envelope { peer, message }) = got else { return };
                if message.reply {
                    let now = start.elapsed().as_micros() as u64;
                    let _ = rtts.record(now.saturating_sub(message.sent_us).max(1));
                } else {
                    let reply = Probe { sent_us: message.sent_us, reply: true };
                    let _ = probe.send(Envelope { peer, message: reply }).await;
                }
            }
            got = seq.recv() => {
                let Some(Envelope { peer, message }) = got else { return };
                if let Some(what) = checker.seq(peer, &message) {
                    out.line(&format!("violation {peer} {what}"));
                }
            }
            _ = probes.tick() => {
                let sent_us = start.elapsed().as_micros() as u64;
                let _ = probe.broadcast(Probe { sent_us, reply: false }).await;
            }
            _ = stats.tick() => {
                let known = router.known_peers().await.map_or(0, |k| k.len());
                out.line(&format!(
                    "stats t={} peers={} known={known} seq={} gaps={} violations={} rtt_p50_us={} rtt_p99_us={} rss={} fds={} tasks={}",
                    start.elapsed().as_secs(),
                    senders.len(),
                    checker.received,
                    checker.gaps,
                    checker.violations,
                    rtts.value_at_quantile(0.5),
                    rtts.value_at_quantile(0.99),
                    p2p_router::test_utils::process_rss_bytes(),
                    open_fds(),
                    tokio::runtime::Handle::current().metrics().num_alive_tasks(),
                ));
                rtts.reset();
            }
            Some(_) = tasks.join_next() => {}
        }
    }
}

/// One connection's sender of `Seq` messages to `peer`.
struct Sender {
    seq: Channel<Seq>,
    peer: NodeId,
    epoch: u64,
    conn: u64,
    /// The peer's last number, shared with the senders of its other
    /// connections and held across the send: an aborted sender may still
    /// be running for a moment, and must not slip a number in between.
    counter: Arc<tokio::sync::Mutex<u64>>,
}

impl Sender {
    /// Sends the next number every 50 ms (waiting while the peer's queue is
    /// full), until aborted at the peer's Down.
    async fn run(self) {
        let mut tick = tokio::time::interval(SEQ_EVERY);
        loop {
            tick.tick().await;
            let mut last = self.counter.lock().await;
            *last += 1;
            let message = Seq {
                epoch: self.epoch,
                n: *last,
                conn: self.conn,
            };
            let envelope = Envelope {
                peer: self.peer,
                message,
            };
            if self.seq.send(envelope).await.is_err() {
                return;
            }
            drop(last);
        }
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    #[test]
    fn a_gap_is_allowed_only_where_the_connection_changes() {
        let mut c = Checker::default();
        let p = id(1);
        let m = |epoch, conn, n| Seq { epoch, n, conn };
        assert_eq!(c.seq(p, &m(1, 1, 1)), None);
        assert_eq!(c.seq(p, &m(1, 1, 2)), None);
        assert!(c.seq(p, &m(1, 1, 2)).is_some(), "duplicate");
        assert!(c.seq(p, &m(1, 1, 5)).is_some(), "gap within a connection");
        assert_eq!(c.seq(p, &m(1, 2, 9)), None, "gap across a reconnection");
        assert!(
            c.seq(p, &m(1, 1, 10)).is_some(),
            "an older connection after a newer"
        );
        assert_eq!(c.seq(p, &m(2, 1, 1)), None, "a restart numbers afresh");
        assert_eq!(c.violations, 3);
        assert_eq!(c.gaps, 2);
    }
}
