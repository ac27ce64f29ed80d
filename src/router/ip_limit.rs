//! Per-IP admission of inbound connections, checked before any handshake
//! work: a pure structure on a caller-supplied clock. IPs are counted by
//! [`IpKey`] (an IPv6 host's whole /64 is one), and each attempt costs
//! O(1): expired attempts leave a time-ordered queue from its front.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::ip_key::IpKey;

/// Why an inbound connection was refused by IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IpLimitError {
    #[error("too many connections from this IP")]
    Connections,
    #[error("too many handshakes in progress from this IP")]
    Handshakes,
    #[error("connection attempts from this IP are too frequent")]
    Attempts,
}

/// The limits, from [`RouterOptions`](super::RouterOptions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IpLimits {
    /// Live connections, handshaking or established.
    pub(crate) connections: usize,
    /// Handshakes in progress.
    pub(crate) handshakes: usize,
    /// Attempts admitted per `window`.
    pub(crate) attempts: usize,
    pub(crate) window: Duration,
}

#[derive(Debug, Default)]
struct Entry {
    active: usize,
    handshaking: usize,
    /// Admitted attempts still in the window (each also in `recent`).
    attempts: usize,
}

impl Entry {
    fn is_idle(&self) -> bool {
        self.active == 0 && self.handshaking == 0 && self.attempts == 0
    }
}

/// Counts live connections, handshakes and recent attempts per IP.
#[derive(Debug)]
pub(crate) struct IpLimiter {
    limits: IpLimits,
    entries: HashMap<IpKey, Entry>,
    /// Admitted attempts, oldest first. An entry lives while it has a
    /// connection or an attempt here, so the map is bounded by the live
    /// connections plus the attempts admitted in one window.
    recent: VecDeque<(Instant, IpKey)>,
}

impl IpLimiter {
    pub(crate) fn new(limits: IpLimits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            recent: VecDeque::new(),
        }
    }

    /// Registers an attempt from `ip`, which starts a handshake. On `Ok`
    /// the caller must call `handshake_done` when the handshake ends and
    /// `release` when the connection ends.
    pub(crate) fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), IpLimitError> {
        self.expire(now);
        let key = IpKey::from(ip);
        let limits = self.limits;
        let entry = self.entries.entry(key).or_default();
        let refusal = if entry.active >= limits.connections {
            Some(IpLimitError::Connections)
        } else if entry.handshaking >= limits.handshakes {
            Some(IpLimitError::Handshakes)
        } else if entry.attempts >= limits.attempts {
            Some(IpLimitError::Attempts)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            if entry.is_idle() {
                self.entries.remove(&key);
            }
            return Err(refusal);
        }
        entry.active += 1;
        entry.handshaking += 1;
        entry.attempts += 1;
        self.recent.push_back((now, key));
        Ok(())
    }

    /// Ends the handshake of a connection admitted by `admit`.
    pub(crate) fn handshake_done(&mut self, ip: IpAddr) {
        self.update(ip, |e| e.handshaking = e.handshaking.saturating_sub(1));
    }

    /// Ends a connection admitted by `admit`.
    pub(crate) fn release(&mut self, ip: IpAddr) {
        self.update(ip, |e| e.active = e.active.saturating_sub(1));
    }

    fn update(&mut self, ip: IpAddr, change: impl FnOnce(&mut Entry)) {
        let key = IpKey::from(ip);
        if let Some(entry) = self.entries.get_mut(&key) {
            change(entry);
            if entry.is_idle() {
                self.entries.remove(&key);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.recent.front() {
            if now.duration_since(at) < self.limits.window {
                break;
            }
            self.recent.pop_front();
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.attempts = entry.attempts.saturating_sub(1);
                if entry.is_idle() {
                    self.entries.remove(&key);
                }
            }
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

    fn limiter(connections: usize, handshakes: usize, attempts: usize, window: u64) -> IpLimiter {
        IpLimiter::new(IpLimits {
            connections,
            handshakes,
            attempts,
            window: Duration::from_secs(window),
        })
    }

    #[test]
    fn refuses_too_many_live_connections_per_ip() {
        let now = Instant::now();
        let mut l = limiter(2, 100, 100, 1);
        for _ in 0..2 {
            l.admit(ip(1), now).unwrap();
            l.handshake_done(ip(1));
        }
        assert_eq!(l.admit(ip(1), now), Err(IpLimitError::Connections));
        l.admit(ip(2), now).unwrap();
        l.release(ip(1));
        l.admit(ip(1), now).unwrap();
    }

    #[test]
    fn refuses_too_many_handshakes_per_ip_until_one_ends() {
        let now = Instant::now();
        let mut l = limiter(100, 2, 100, 1);
        l.admit(ip(1), now).unwrap();
        l.admit(ip(1), now).unwrap();
        assert_eq!(l.admit(ip(1), now), Err(IpLimitError::Handshakes));
        l.admit(ip(2), now).unwrap();
        // An admitted connection no longer handshaking leaves room.
        l.handshake_done(ip(1));
        l.admit(ip(1), now).unwrap();
    }

    #[test]
    fn refuses_too_fast_reconnections_until_the_window_passes() {
        let t0 = Instant::now();
        let mut l = limiter(100, 100, 3, 10);
        for _ in 0..3 {
            l.admit(ip(1), t0).unwrap();
            l.handshake_done(ip(1));
            l.release(ip(1));
        }
        assert_eq!(
            l.admit(ip(1), t0 + Duration::from_secs(9)),
            Err(IpLimitError::Attempts)
        );
        l.admit(ip(1), t0 + Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn the_addresses_of_one_ipv6_slash_64_are_one_source() {
        let now = Instant::now();
        let mut l = limiter(2, 100, 100, 1);
        l.admit("2001:db8::1".parse().unwrap(), now).unwrap();
        l.admit("2001:db8::ffff".parse().unwrap(), now).unwrap();
        assert_eq!(
            l.admit("2001:db8::1234".parse().unwrap(), now),
            Err(IpLimitError::Connections)
        );
        l.admit("2001:db8:0:1::1".parse().unwrap(), now).unwrap();
    }

    #[test]
    fn entries_leave_with_their_last_connection_and_attempt() {
        let t0 = Instant::now();
        let mut l = limiter(1, 1, 1, 1);
        for n in 0..=255u8 {
            for m in 0..5u8 {
                let a = IpAddr::from([10, m, 0, n]);
                l.admit(a, t0).unwrap();
                l.handshake_done(a);
                l.release(a);
            }
        }
        // Only their attempts keep them, until the window has passed.
        assert_eq!(l.tracked(), 256 * 5);
        assert_eq!(l.admit(ip(1), t0 + Duration::from_secs(2)), Ok(()));
        assert_eq!(l.tracked(), 1);
        assert_eq!(l.recent.len(), 1);
    }
}
