//! How often one source may start a handshake: a listener's per-IP
//! attempt limit, checked before any cryptographic work. A pure structure
//! on a caller-supplied clock; each attempt costs O(1), as expired ones
//! leave a time-ordered queue from its front.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::ip_key::IpKey;

/// The most attempts remembered at once, whatever the sources: past it the
/// oldest is forgotten early. A flood from many sources then gets a few
/// more attempts than the limit, and memory stays bounded.
const MAX_REMEMBERED: usize = 65_536;

/// Counts each source's admitted attempts (an IPv4 address or an IPv6
/// /64) in a sliding window.
#[derive(Debug)]
pub(crate) struct AttemptRate {
    max: usize,
    window: Duration,
    counts: HashMap<IpKey, usize>,
    /// Admitted attempts, oldest first; each is also in `counts`.
    recent: VecDeque<(Instant, IpKey)>,
}

impl AttemptRate {
    /// `max` attempts per source within `window`.
    pub(crate) fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            counts: HashMap::new(),
            recent: VecDeque::new(),
        }
    }

    /// Counts an attempt from `ip` at `now`; `false` (and not counted) if
    /// the source is at its limit.
    pub(crate) fn try_attempt(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.expire(now);
        let key = IpKey::from(ip);
        let count = self.counts.entry(key).or_default();
        if *count >= self.max {
            return false;
        }
        *count += 1;
        if self.recent.len() >= MAX_REMEMBERED {
            self.forget_oldest();
        }
        self.recent.push_back((now, key));
        true
    }

    fn expire(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= self.window)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some((_, key)) = self.recent.pop_front() else {
            return;
        };
        if let Some(count) = self.counts.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip_key::test_ip as ip;

    #[test]
    fn refuses_too_frequent_attempts_until_the_window_passes() {
        let t0 = Instant::now();
        let mut rate = AttemptRate::new(3, Duration::from_secs(10));
        for _ in 0..3 {
            assert!(rate.try_attempt(ip(1), t0));
        }
        assert!(!rate.try_attempt(ip(1), t0 + Duration::from_secs(9)));
        // Another source has its own allowance.
        assert!(rate.try_attempt(ip(2), t0 + Duration::from_secs(9)));
        assert!(rate.try_attempt(ip(1), t0 + Duration::from_secs(10)));
    }

    #[test]
    fn ipv6_sources_count_by_their_slash_64() {
        let t0 = Instant::now();
        let mut rate = AttemptRate::new(2, Duration::from_secs(10));
        let host = |n: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, n]);
        assert!(rate.try_attempt(host(1), t0));
        assert!(rate.try_attempt(host(2), t0));
        assert!(!rate.try_attempt(host(3), t0));
    }

    #[test]
    fn memory_is_bounded_by_the_window_and_a_hard_cap() {
        let t0 = Instant::now();
        let mut rate = AttemptRate::new(16, Duration::from_secs(10));
        for n in 0..1_000 {
            rate.try_attempt(ip(n), t0);
        }
        assert_eq!(rate.tracked(), 1_000);
        // One attempt after the window forgets all of them.
        rate.try_attempt(ip(5_000), t0 + Duration::from_secs(10));
        assert_eq!(rate.tracked(), 1);
        // A flood from more sources than the cap, all within the window.
        for n in 0..(MAX_REMEMBERED as u32 + 10) {
            rate.try_attempt(ip(10_000 + n), t0 + Duration::from_secs(11));
        }
        assert!(rate.recent.len() <= MAX_REMEMBERED);
        assert!(rate.tracked() <= MAX_REMEMBERED);
    }
}
