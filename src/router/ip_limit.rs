//! Per-IP admission of inbound connections by the router, checked before
//! its handshake (NodeInfo and admission): live connections and
//! handshakes in progress per source. IPs are counted by [`IpKey`] (an
//! IPv6 host's whole /64 is one). How often a source may connect is the
//! transport listener's limit, checked before any cryptographic work.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::ip_key::IpKey;

/// Why an inbound connection was refused by IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IpLimitError {
    #[error("too many connections from this IP")]
    Connections,
    #[error("too many handshakes in progress from this IP")]
    Handshakes,
}

/// The limits, from [`RouterOptions`](super::RouterOptions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IpLimits {
    /// Live connections, handshaking or established.
    pub(crate) connections: usize,
    /// Handshakes in progress.
    pub(crate) handshakes: usize,
}

#[derive(Debug, Default)]
struct Entry {
    active: usize,
    handshaking: usize,
}

/// Counts live connections and handshakes per IP. An entry lives while it
/// has a connection, so the map is bounded by the live connections.
#[derive(Debug)]
pub(crate) struct IpLimiter {
    limits: IpLimits,
    entries: HashMap<IpKey, Entry>,
}

impl IpLimiter {
    pub(crate) fn new(limits: IpLimits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
        }
    }

    /// Registers a connection from `ip`, which starts a handshake. On `Ok`
    /// the caller must call `handshake_done` when the handshake ends and
    /// `release` when the connection ends.
    pub(crate) fn admit(&mut self, ip: IpAddr) -> Result<(), IpLimitError> {
        let key = IpKey::from(ip);
        let limits = self.limits;
        let entry = self.entries.entry(key).or_default();
        let refusal = if entry.active >= limits.connections {
            Some(IpLimitError::Connections)
        } else if entry.handshaking >= limits.handshakes {
            Some(IpLimitError::Handshakes)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            if entry.active == 0 {
                self.entries.remove(&key);
            }
            return Err(refusal);
        }
        entry.active += 1;
        entry.handshaking += 1;
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
            if entry.active == 0 {
                self.entries.remove(&key);
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
    use crate::ip_key::test_ip as ip;

    fn limiter(connections: usize, handshakes: usize) -> IpLimiter {
        IpLimiter::new(IpLimits {
            connections,
            handshakes,
        })
    }

    #[test]
    fn refuses_past_either_limit_until_a_slot_frees() {
        // Per IP: two handshakes at once, three live connections.
        let mut l = limiter(3, 2);
        l.admit(ip(1)).unwrap();
        l.admit(ip(1)).unwrap();
        assert_eq!(l.admit(ip(1)), Err(IpLimitError::Handshakes));
        // Another IP has its own allowance.
        l.admit(ip(2)).unwrap();
        // An admitted connection no longer handshaking leaves room for a
        // handshake, until the connections are at their limit.
        l.handshake_done(ip(1));
        l.admit(ip(1)).unwrap();
        l.handshake_done(ip(1));
        l.handshake_done(ip(1));
        assert_eq!(l.admit(ip(1)), Err(IpLimitError::Connections));
        l.release(ip(1));
        l.admit(ip(1)).unwrap();
    }

    #[test]
    fn the_addresses_of_one_ipv6_slash_64_are_one_source() {
        let mut l = limiter(2, 100);
        l.admit("2001:db8::1".parse().unwrap()).unwrap();
        l.admit("2001:db8::ffff".parse().unwrap()).unwrap();
        assert_eq!(
            l.admit("2001:db8::1234".parse().unwrap()),
            Err(IpLimitError::Connections)
        );
        l.admit("2001:db8:0:1::1".parse().unwrap()).unwrap();
    }

    #[test]
    fn entries_leave_with_their_last_connection() {
        let mut l = limiter(1, 1);
        for n in 0..=255u8 {
            let a = IpAddr::from([10, 1, 0, n]);
            l.admit(a).unwrap();
            l.handshake_done(a);
        }
        assert_eq!(l.tracked(), 256);
        for n in 0..=255u8 {
            l.release(IpAddr::from([10, 1, 0, n]));
        }
        assert_eq!(l.tracked(), 0);
        // A refusal leaves nothing behind either.
        l.admit(ip(1)).unwrap();
        assert_eq!(l.admit(ip(1)), Err(IpLimitError::Connections));
        l.release(ip(1));
        assert_eq!(l.tracked(), 0);
    }
}
