//! The WAN link's model, apart from its devices and threads (which live
//! in the `transports` benchmark): what happens to each packet on a path
//! with a bottleneck rate, a drop-tail queue, a one-way delay and random
//! loss. Pure, so it is tested on made-up instants.

use std::time::{Duration, Instant};

/// What the link does to each packet, each way.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// Propagation delay, each way.
    pub one_way: Duration,
    /// The bottleneck rate, bits per second.
    pub rate_bps: u64,
    /// The most a packet may wait for the bottleneck before it is dropped
    /// (a router's buffer, in time at the link rate).
    pub queue: Duration,
    /// Random loss, per 10,000 packets.
    pub loss_per_10k: u32,
}

impl LinkConfig {
    /// 25 ms each way (RTT 50 ms), 100 Mbit/s, a buffer of one RTT at
    /// that rate, no random loss: a long-haul path between data centres.
    pub fn wan() -> Self {
        Self {
            one_way: Duration::from_millis(25),
            rate_bps: 100_000_000,
            queue: Duration::from_millis(50),
            loss_per_10k: 0,
        }
    }

    /// Bandwidth × round trip, in bytes: what a window must hold to keep
    /// the link full.
    pub fn bdp_bytes(&self) -> u64 {
        (self.rate_bps / 8) * (2 * self.one_way.as_micros() as u64) / 1_000_000
    }

    /// One line for the report's settings.
    pub fn describe(&self) -> String {
        format!(
            "TUN link between two namespaces: {} ms each way, {} Mbit/s, {} ms drop-tail queue, {:.2} % loss, MTU 1500 (BDP {} KiB)",
            self.one_way.as_millis(),
            self.rate_bps / 1_000_000,
            self.queue.as_millis(),
            f64::from(self.loss_per_10k) / 100.0,
            self.bdp_bytes() / 1024,
        )
    }
}

/// What becomes of a packet offered to the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It leaves the far end at this instant.
    Arrives(Instant),
    /// Random loss took it.
    Lost,
    /// The queue in front of the bottleneck was full.
    QueueFull,
}

/// One direction of the link. Packets leave the bottleneck in the order
/// they came, each after the ones before it, at the link rate; so arrival
/// instants only grow and a FIFO is the whole schedule.
#[derive(Debug)]
pub struct Bottleneck {
    config: LinkConfig,
    /// When the bottleneck has sent everything admitted so far.
    free_at: Instant,
    rng: u64,
}

impl Bottleneck {
    /// An idle link at `now`; `seed` drives the random loss.
    pub fn new(config: LinkConfig, now: Instant, seed: u64) -> Self {
        Self {
            config,
            free_at: now,
            // xorshift64 needs a non-zero state.
            rng: seed | 1,
        }
    }

    /// The fate of a packet of `len` bytes offered at `now`.
    pub fn admit(&mut self, now: Instant, len: usize) -> Fate {
        // xorshift64: loss only needs to be uncorrelated with the traffic.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        if (self.rng >> 16) % 10_000 < u64::from(self.config.loss_per_10k) {
            return Fate::Lost;
        }
        let start = self.free_at.max(now);
        if start - now > self.config.queue {
            return Fate::QueueFull;
        }
        let send_ns = len as u128 * 8_000_000_000 / u128::from(self.config.rate_bps.max(1));
        self.free_at = start + Duration::from_nanos(send_ns as u64);
        Fate::Arrives(self.free_at + self.config.one_way)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn link(loss_per_10k: u32) -> LinkConfig {
        LinkConfig {
            one_way: 25 * MS,
            // 1,500 bytes take 1 ms.
            rate_bps: 12_000_000,
            queue: 3 * MS,
            loss_per_10k,
        }
    }

    #[test]
    fn packets_queue_at_the_rate_then_drop_when_the_queue_is_full() {
        let t = Instant::now();
        let mut l = Bottleneck::new(link(0), t, 1);
        // A burst at one instant: each leaves a millisecond after the last,
        // until the next would wait longer than the 3 ms queue.
        let fates: Vec<Fate> = (0..6).map(|_| l.admit(t, 1500)).collect();
        let arrives = |ms: u32| Fate::Arrives(t + 25 * MS + ms * MS);
        let full = Fate::QueueFull;
        assert_eq!(
            fates,
            [arrives(1), arrives(2), arrives(3), arrives(4), full, full]
        );
        // Once the queue drains, a packet goes straight through.
        assert_eq!(l.admit(t + 10 * MS, 1500), Fate::Arrives(t + 36 * MS));
    }

    #[test]
    fn loss_takes_about_its_share() {
        let t = Instant::now();
        let forever = Duration::from_secs(3600);
        let mut l = Bottleneck::new(
            LinkConfig {
                queue: forever,
                ..link(100)
            },
            t,
            7,
        );
        let lost = (0..100_000).filter(|_| l.admit(t, 1) == Fate::Lost).count();
        assert!((800..1200).contains(&lost), "{lost} of 100,000 at 1 %");
    }

    #[test]
    fn the_default_wan_holds_one_bdp_of_610_kib() {
        assert_eq!(LinkConfig::wan().bdp_bytes(), 625_000);
    }
}
