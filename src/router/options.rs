//! Router settings and the checks that make a bad value an error at build
//! time rather than a router that silently never dials.

use std::time::Duration;

/// Router settings. Every default is finite.
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouterOptions {
    /// Dials in flight at once (default 8).
    pub dial_concurrency: usize,
    /// Time to establish a transport connection (default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub dial_timeout: Duration,
    /// Time for the NodeInfo exchange and admission (default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub handshake_timeout: Duration,
    /// Time for resolving a DNS name (default 5 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub resolve_timeout: Duration,
    /// Inbound connections, handshaking or established (default 256).
    pub max_inbound: usize,
    /// Inbound handshakes in progress at once (default 32).
    pub max_inbound_handshakes: usize,
    /// Live connections per remote IP (default 8). IPv6 addresses count
    /// by their /64 prefix here and in the other per-IP limits.
    pub max_connections_per_ip: usize,
    /// Inbound handshakes (NodeInfo exchange and admission) in progress
    /// per remote IP (default 4), so that one host completing transport
    /// handshakes and then saying nothing cannot hold every slot. Once
    /// half of `max_inbound_handshakes` are taken, a new handshake gets a
    /// quarter of `handshake_timeout`.
    pub max_handshakes_per_ip: usize,
    /// After this long, a new connection from a connected peer replaces the
    /// existing one (the peer restarted); younger conflicts are settled by
    /// node id (default 5 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub takeover_after: Duration,
    /// Capacity of the actor's mailbox (default 256).
    pub mailbox_capacity: usize,
    /// Peer updates buffered per subscriber before it lags (default 256).
    pub peer_update_capacity: usize,
    /// Minor peer errors one peer may cause per `peer_error_window`
    /// (default 20); the next one disconnects it as a fatal error would.
    /// Only the first of each window is logged.
    pub peer_error_budget: u32,
    /// The window of `peer_error_budget` (default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub peer_error_window: Duration,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            dial_concurrency: 8,
            dial_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(5),
            max_inbound: 256,
            max_inbound_handshakes: 32,
            max_connections_per_ip: 8,
            max_handshakes_per_ip: 4,
            takeover_after: Duration::from_secs(5),
            mailbox_capacity: 256,
            peer_update_capacity: 256,
            peer_error_budget: 20,
            peer_error_window: Duration::from_secs(10),
        }
    }
}

/// A [`RouterOptions`] value that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouterOptionsError {
    /// A count that must be at least 1 is 0 (the router would never dial,
    /// never accept, or could not queue a command).
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A time limit that must be positive is zero (every attempt would
    /// time out at once).
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
}

impl RouterOptions {
    /// Lifts the per-IP limits for `peers` peers that all connect from one
    /// address (a localnet, a test, a benchmark on loopback), and makes
    /// room for them in `max_inbound`. Keep the defaults on a real network:
    /// the per-IP limits are what stops one host from taking every slot.
    pub fn single_source(&mut self, peers: usize) {
        self.max_inbound = self.max_inbound.max(peers + 16);
        self.max_connections_per_ip = self.max_connections_per_ip.max(peers + 16);
        self.max_handshakes_per_ip = self.max_inbound_handshakes;
    }

    /// Checks for values that cannot work.
    /// [`RouterBuilder::spawn`](crate::RouterBuilder::spawn) runs it.
    pub fn validate(&self) -> Result<(), RouterOptionsError> {
        let counts = [
            ("dial_concurrency", self.dial_concurrency),
            ("max_inbound", self.max_inbound),
            ("max_inbound_handshakes", self.max_inbound_handshakes),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_handshakes_per_ip", self.max_handshakes_per_ip),
            ("mailbox_capacity", self.mailbox_capacity),
            ("peer_update_capacity", self.peer_update_capacity),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(RouterOptionsError::Zero(name));
        }
        let times = [
            ("dial_timeout", self.dial_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("resolve_timeout", self.resolve_timeout),
            ("peer_error_window", self.peer_error_window),
        ];
        if let Some((name, _)) = times.iter().find(|(_, t)| t.is_zero()) {
            return Err(RouterOptionsError::ZeroDuration(name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_accepts_the_defaults_and_names_the_bad_field() {
        assert_eq!(RouterOptions::default().validate(), Ok(()));
        let o = RouterOptions {
            dial_concurrency: 0,
            ..RouterOptions::default()
        };
        assert_eq!(
            o.validate(),
            Err(RouterOptionsError::Zero("dial_concurrency"))
        );
        let o = RouterOptions {
            handshake_timeout: Duration::ZERO,
            ..RouterOptions::default()
        };
        assert_eq!(
            o.validate(),
            Err(RouterOptionsError::ZeroDuration("handshake_timeout"))
        );
    }
}
