//! The MConnection writer's decisions, with no IO: which channel sends its
//! next packet (Tendermint's least recently-sent-per-priority rule), when
//! to ping, when a missing pong ends the connection, when to flush (the
//! flush throttle and a full buffer), and how fast to go (the send rate).
//!
//! Time comes in as `now`; decisions come out of [`Scheduler::turn`] as
//! [`Step`]s, and [`Scheduler::poll_timeout`] says when to call again
//! without an event. The IO loop in `conn.rs` only moves messages in and
//! bytes out, so these rules are tested here on a hand-advanced clock.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use p2p_router::ChannelId;
use prost::Message;
use tokio::time::Instant;

use crate::config::MconnConfig;
use crate::proto::Packet;
use crate::rate::RateLimit;

/// Packets written per scheduling round, as in Tendermint.
const BATCH: usize = 10;
/// How often the channels' recently-sent counters decay.
const STATS_INTERVAL: Duration = Duration::from_secs(2);
/// Staged bytes that are flushed at once, whatever the throttle (Go's
/// 64 KiB buffered writer).
const FLUSH_AT: usize = 64 * 1024;

/// One channel as the scheduler sees it.
#[derive(Debug)]
pub(crate) struct Lane {
    pub(crate) id: ChannelId,
    /// The rest of the message being sent.
    current: Option<Bytes>,
    recently_sent: u64,
    priority: Arc<AtomicU8>,
}

impl Lane {
    pub(crate) fn new(id: ChannelId, priority: Arc<AtomicU8>) -> Self {
        Self {
            id,
            current: None,
            recently_sent: 0,
            priority,
        }
    }

    fn ratio(&self) -> f64 {
        self.recently_sent as f64 / f64::from(self.priority.load(Ordering::Relaxed).max(1))
    }
}

/// What the IO loop does next, in order.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Stage this packet.
    Packet(Packet),
    /// Stage a ping; from now on only a packet from the peer proves it
    /// alive ([`Scheduler::heard_from_peer`]).
    Ping,
    /// Write out everything staged.
    Flush,
}

/// The peer did not answer a ping (nor send anything) within the pong
/// timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no pong within the pong timeout")]
pub(crate) struct PongTimeout;

#[derive(Debug)]
pub(crate) struct Scheduler {
    lanes: Vec<Lane>,
    rate: RateLimit,
    ping_interval: Duration,
    pong_timeout: Duration,
    flush_throttle: Duration,
    max_payload: usize,
    next_ping: Instant,
    next_stats: Instant,
    pong_deadline: Option<Instant>,
    flush_at: Option<Instant>,
    pong_due: bool,
    /// Bytes staged since the last flush.
    staged: usize,
}

impl Scheduler {
    pub(crate) fn new(config: &MconnConfig, lanes: Vec<Lane>, now: Instant) -> Self {
        Self {
            lanes,
            rate: RateLimit::new_at(config.send_rate, now),
            ping_interval: config.ping_interval,
            pong_timeout: config.pong_timeout,
            flush_throttle: config.flush_throttle,
            max_payload: config.max_packet_payload,
            next_ping: now + config.ping_interval,
            next_stats: now + STATS_INTERVAL,
            pong_deadline: None,
            flush_at: None,
            pong_due: false,
            staged: 0,
        }
    }

    /// Whether lane `i` can take its next message.
    pub(crate) fn wants(&self, i: usize) -> bool {
        self.lanes.get(i).is_some_and(|l| l.current.is_none())
    }

    /// Gives lane `i` its next message (when it [`wants`](Self::wants) one).
    pub(crate) fn offer(&mut self, i: usize, message: Bytes) {
        if let Some(lane) = self.lanes.get_mut(i) {
            lane.current = Some(message);
        }
    }

    /// Whether any lane has a message to send.
    pub(crate) fn pending(&self) -> bool {
        self.lanes.iter().any(|l| l.current.is_some())
    }

    /// The peer pinged us: answer at the next turn.
    pub(crate) fn pong_requested(&mut self) {
        self.pong_due = true;
    }

    /// A packet arrived from the peer since the last ping: it is alive.
    pub(crate) fn heard_from_peer(&mut self) {
        self.pong_deadline = None;
    }

    fn stage(&mut self, packet: Packet, out: &mut Vec<Step>) -> usize {
        let len = packet.encoded_len();
        let size = prost::length_delimiter_len(len) + len;
        self.staged += size;
        out.push(Step::Packet(packet));
        size
    }

    fn flush(&mut self, out: &mut Vec<Step>) {
        out.push(Step::Flush);
        self.staged = 0;
        self.flush_at = None;
    }

    /// One round at `now`: the steps to take, in order. `next` hands over
    /// a lane's next queued message, if any, when its current one is done,
    /// so a round batches across messages as Tendermint's does.
    pub(crate) fn turn(
        &mut self,
        now: Instant,
        out: &mut Vec<Step>,
        next: &mut dyn FnMut(usize) -> Option<Bytes>,
    ) -> Result<(), PongTimeout> {
        if std::mem::take(&mut self.pong_due) {
            self.stage(Packet::pong(), out);
            self.flush(out);
        }
        if now >= self.next_ping {
            out.push(Step::Ping);
            let len = Packet::ping().encoded_len();
            self.staged += prost::length_delimiter_len(len) + len;
            self.flush(out);
            self.pong_deadline = Some(now + self.pong_timeout);
            self.next_ping = now + self.ping_interval;
        }
        if self.pong_deadline.is_some_and(|deadline| now >= deadline) {
            return Err(PongTimeout);
        }
        if now >= self.next_stats {
            for lane in &mut self.lanes {
                lane.recently_sent = lane.recently_sent * 4 / 5;
            }
            self.next_stats = now + STATS_INTERVAL;
        }
        if self.flush_at.is_some_and(|at| now >= at) {
            self.flush(out);
        }
        if !self.pending() || !self.rate.delay_at(now).is_zero() {
            return Ok(());
        }
        for _ in 0..BATCH {
            let Some(i) = self.pick() else {
                break;
            };
            let lane = &mut self.lanes[i];
            let Some(message) = lane.current.as_mut() else {
                break;
            };
            let n = message.len().min(self.max_payload);
            let chunk = message.split_to(n);
            let eof = message.is_empty();
            if eof {
                lane.current = next(i);
            }
            let id = lane.id;
            let size = self.stage(Packet::msg(id.0, eof, chunk), out);
            if let Some(lane) = self.lanes.iter_mut().find(|l| l.id == id) {
                lane.recently_sent += size as u64;
            }
            self.rate.spend_at(now, size);
        }
        if self.staged >= FLUSH_AT || self.flush_throttle.is_zero() {
            self.flush(out);
        } else if self.flush_at.is_none() {
            self.flush_at = Some(now + self.flush_throttle);
        }
        Ok(())
    }

    /// The lane with something to send whose recently-sent bytes divided
    /// by its priority are the least (Tendermint's rule); the first on a
    /// tie.
    fn pick(&self) -> Option<usize> {
        self.lanes
            .iter()
            .enumerate()
            .filter(|(_, l)| l.current.is_some())
            .min_by(|(_, a), (_, b)| a.ratio().total_cmp(&b.ratio()))
            .map(|(i, _)| i)
    }

    /// When to call [`turn`](Self::turn) again if nothing happens: the next
    /// ping, pong deadline, counter decay or throttled flush, and, with
    /// messages waiting, the end of the rate limit's delay.
    pub(crate) fn poll_timeout(&mut self, now: Instant) -> Instant {
        let mut wake = self.next_ping.min(self.next_stats);
        for at in [self.pong_deadline, self.flush_at].into_iter().flatten() {
            wake = wake.min(at);
        }
        if self.pending() {
            wake = wake.min(now + self.rate.delay_at(now));
        }
        wake
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::packet;

    fn none(_: usize) -> Option<Bytes> {
        None
    }

    fn config() -> MconnConfig {
        let mut c = MconnConfig::fast();
        c.ping_interval = Duration::from_secs(10);
        c.pong_timeout = Duration::from_secs(5);
        c
    }

    fn lanes(priorities: &[u8]) -> Vec<Lane> {
        priorities
            .iter()
            .enumerate()
            .map(|(i, p)| Lane::new(ChannelId(i as u8), Arc::new(AtomicU8::new(*p))))
            .collect()
    }

    fn channels_of(steps: &[Step]) -> Vec<(u8, bool)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Packet(Packet {
                    sum: Some(packet::Sum::PacketMsg(m)),
                }) => Some((m.channel_id as u8, m.eof)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_silent_peer_is_dropped_at_the_pong_deadline_and_a_talking_one_kept() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&config(), lanes(&[1]), t0);
        let mut out = Vec::new();
        assert_eq!(s.turn(t0, &mut out, &mut none), Ok(()));
        assert!(out.is_empty(), "nothing due yet: {out:?}");
        assert_eq!(
            s.poll_timeout(t0),
            t0 + Duration::from_secs(2),
            "stats decay"
        );
        let ping_at = t0 + Duration::from_secs(10);
        s.turn(ping_at, &mut out, &mut none).unwrap();
        assert_eq!(out, vec![Step::Ping, Step::Flush]);
        assert_eq!(s.poll_timeout(ping_at), ping_at + Duration::from_secs(2));
        // Silence until the deadline: the connection ends.
        let late = ping_at + Duration::from_secs(5);
        assert_eq!(s.turn(late, &mut Vec::new(), &mut none), Err(PongTimeout));

        // Any packet from the peer before the deadline keeps it.
        let mut s = Scheduler::new(&config(), lanes(&[1]), t0);
        s.turn(ping_at, &mut Vec::new(), &mut none).unwrap();
        s.heard_from_peer();
        assert_eq!(s.turn(late, &mut Vec::new(), &mut none), Ok(()));
    }

    #[test]
    fn the_least_recently_sent_per_priority_goes_first() {
        let mut s = Scheduler::new(&config(), lanes(&[1, 10]), Instant::now());
        for i in 0..2 {
            s.offer(i, Bytes::from_static(b"x"));
        }
        // 10 000 bytes at priority 10 weigh as 1000 at priority 1.
        s.lanes[0].recently_sent = 1500;
        s.lanes[1].recently_sent = 10_000;
        assert_eq!(s.pick(), Some(1));
        s.lanes[1].recently_sent = 20_000;
        assert_eq!(s.pick(), Some(0));
        // Nothing to send: never picked.
        s.lanes[0].current = None;
        assert_eq!(s.pick(), Some(1));
        s.lanes[1].current = None;
        assert_eq!(s.pick(), None);
    }

    #[test]
    fn one_round_batches_across_queued_messages_then_flushes_once() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&config(), lanes(&[1]), t0);
        s.offer(0, Bytes::from_static(b"first"));
        let mut queued: Vec<Bytes> = (0..20).map(|_| Bytes::from_static(b"m")).collect();
        let mut next = |_: usize| queued.pop();
        let mut out = Vec::new();
        s.turn(t0, &mut out, &mut next).unwrap();
        // Ten packets (the batch), every one a whole message, one flush.
        assert_eq!(channels_of(&out), vec![(0, true); 10]);
        assert_eq!(out.iter().filter(|s| **s == Step::Flush).count(), 1);
        assert!(s.pending(), "the eleventh message is already in the lane");
    }

    #[test]
    fn a_ping_is_answered_with_a_flushed_pong() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&config(), lanes(&[1]), t0);
        s.pong_requested();
        let mut out = Vec::new();
        s.turn(t0, &mut out, &mut none).unwrap();
        assert_eq!(out, vec![Step::Packet(Packet::pong()), Step::Flush]);
    }

    #[test]
    fn large_messages_go_out_in_payload_chunks_by_priority_and_flush_is_throttled() {
        let t0 = Instant::now();
        let mut c = config();
        c.max_packet_payload = 1024;
        c.flush_throttle = Duration::from_millis(100);
        let mut s = Scheduler::new(&c, lanes(&[1, 10]), t0);
        s.offer(0, Bytes::from(vec![0; 3000]));
        s.offer(1, Bytes::from(vec![1; 3000]));
        let mut out = Vec::new();
        s.turn(t0, &mut out, &mut none).unwrap();
        // Channel 1 has ten times the priority: it sends until its share
        // of recently-sent bytes per priority exceeds channel 0's.
        let sent = channels_of(&out);
        assert_eq!(sent[0], (0, false), "ties go to the first lane");
        assert_eq!(&sent[1..4], &[(1, false), (1, false), (1, true)]);
        assert_eq!(&sent[4..], &[(0, false), (0, true)]);
        assert!(!out.contains(&Step::Flush), "throttled: {out:?}");
        // Nothing left to send: the throttle's end flushes what is staged.
        assert_eq!(s.poll_timeout(t0), t0 + Duration::from_millis(100));
        let mut out = Vec::new();
        s.turn(t0 + Duration::from_millis(100), &mut out, &mut none)
            .unwrap();
        assert_eq!(out.first(), Some(&Step::Flush));
    }

    #[test]
    fn the_send_rate_spaces_packets_out() {
        let t0 = Instant::now();
        let mut c = config();
        c.send_rate = Some(10_000);
        c.flush_throttle = Duration::ZERO;
        let mut s = Scheduler::new(&c, lanes(&[1]), t0);
        s.offer(0, Bytes::from(vec![0; 40 * 1024]));
        let mut out = Vec::new();
        s.turn(t0, &mut out, &mut none).unwrap();
        let first = channels_of(&out).len();
        assert!(first >= 1);
        // In debt: nothing more until the rate allows it.
        let mut out = Vec::new();
        s.turn(t0, &mut out, &mut none).unwrap();
        assert!(channels_of(&out).is_empty(), "{out:?}");
        let next = s.poll_timeout(t0);
        assert!(next > t0 && next < t0 + Duration::from_secs(2), "{next:?}");
        let mut out = Vec::new();
        s.turn(next, &mut out, &mut none).unwrap();
        assert!(!channels_of(&out).is_empty());
    }
}
