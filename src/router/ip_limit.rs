//! Per-IP admission of inbound connections, checked before any handshake
//! work: a pure structure on a caller-supplied clock.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// Why an inbound connection was refused by IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IpLimitError {
    #[error("too many connections from this IP")]
    TooMany,
    #[error("connection attempts from this IP are too frequent")]
    TooFast,
}

#[derive(Debug, Default)]
struct Entry {
    active: usize,
    attempts: VecDeque<Instant>,
}

/// Counts live connections and recent attempts per IP.
#[derive(Debug)]
pub(crate) struct IpLimiter {
    max_per_ip: usize,
    max_attempts: usize,
    window: Duration,
    entries: HashMap<IpAddr, Entry>,
}

/// Tracked IPs above which idle entries are swept.
const SWEEP_ABOVE: usize = 1024;

impl IpLimiter {
    pub(crate) fn new(max_per_ip: usize, max_attempts: usize, window: Duration) -> Self {
        Self {
            max_per_ip,
            max_attempts,
            window,
            entries: HashMap::new(),
        }
    }

    /// Registers an attempt from `ip`; on `Ok` the caller must `release`
    /// when the connection ends.
    pub(crate) fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), IpLimitError> {
        if self.entries.len() > SWEEP_ABOVE {
            let window = self.window;
            self.entries.retain(|_, e| {
                e.attempts.retain(|t| now.duration_since(*t) < window);
                e.active > 0 || !e.attempts.is_empty()
            });
        }
        let entry = self.entries.entry(ip).or_default();
        while entry
            .attempts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            entry.attempts.pop_front();
        }
        if entry.active >= self.max_per_ip {
            return Err(IpLimitError::TooMany);
        }
        if entry.attempts.len() >= self.max_attempts {
            return Err(IpLimitError::TooFast);
        }
        entry.attempts.push_back(now);
        entry.active += 1;
        Ok(())
    }

    /// Ends a connection admitted by `admit`.
    pub(crate) fn release(&mut self, ip: IpAddr) {
        if let Some(entry) = self.entries.get_mut(&ip) {
            entry.active = entry.active.saturating_sub(1);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn refuses_too_many_live_connections_per_ip() {
        let now = Instant::now();
        let mut l = IpLimiter::new(2, 100, Duration::from_secs(1));
        l.admit(ip(1), now).unwrap();
        l.admit(ip(1), now).unwrap();
        assert_eq!(l.admit(ip(1), now), Err(IpLimitError::TooMany));
        l.admit(ip(2), now).unwrap();
        l.release(ip(1));
        l.admit(ip(1), now).unwrap();
    }

    #[test]
    fn refuses_too_fast_reconnections_until_the_window_passes() {
        let t0 = Instant::now();
        let mut l = IpLimiter::new(100, 3, Duration::from_secs(10));
        for _ in 0..3 {
            l.admit(ip(1), t0).unwrap();
            l.release(ip(1));
        }
        assert_eq!(
            l.admit(ip(1), t0 + Duration::from_secs(9)),
            Err(IpLimitError::TooFast)
        );
        l.admit(ip(1), t0 + Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn idle_entries_are_swept() {
        let t0 = Instant::now();
        let mut l = IpLimiter::new(1, 1, Duration::from_secs(1));
        for n in 0..=255u8 {
            for m in 0..5u8 {
                let a = IpAddr::from([10, m, 0, n]);
                l.admit(a, t0).unwrap();
                l.release(a);
            }
        }
        l.admit(ip(1), t0 + Duration::from_secs(2)).ok();
        assert!(l.tracked() <= SWEEP_ABOVE + 1);
    }
}
