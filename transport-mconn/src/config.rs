//! Settings of the MConnection transport.

use std::net::SocketAddr;
use std::time::Duration;

use p2p_router::transport::listener::{ListenerConfig, ListenerConfigError};

/// Settings of an [`MconnTransport`](crate::MconnTransport).
///
/// [`MconnConfig::new`] gives CometBFT's defaults (what an operator's
/// `config.toml` has unless changed); [`MconnConfig::fast`] turns off rate
/// limits and the flush delay.
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MconnConfig {
    /// Addresses to listen on. Empty: dial only.
    pub listen: Vec<SocketAddr>,
    /// Largest data chunk per `PacketMsg` (CometBFT: 1024). Peers must agree
    /// only in that each accepts the other's: ours accepts packets up to
    /// this size, so keep the Tendermint value when talking to Go nodes.
    pub max_packet_payload: usize,
    /// How long written packets may wait to be batched before they are
    /// flushed to the socket. CometBFT: 100 ms (every lone message waits
    /// that long); `Duration::ZERO` flushes after each batch.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub flush_throttle: Duration,
    /// Send rate limit in bytes per second; `None` for none (CometBFT:
    /// 5,120,000).
    pub send_rate: Option<u64>,
    /// Receive rate limit in bytes per second; `None` for none (CometBFT:
    /// 5,120,000).
    pub recv_rate: Option<u64>,
    /// Interval between our pings (CometBFT: 60 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub ping_interval: Duration,
    /// After a ping, the peer must send something (a pong, or any packet)
    /// within this time or the connection is closed (CometBFT: 45 s; must
    /// be shorter than `ping_interval`).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub pong_timeout: Duration,
    /// Messages queued per channel and peer before `send` waits.
    pub send_queue_capacity: usize,
    /// Reassembled messages queued per channel and peer before the reader
    /// stops reading the connection (which stalls every channel: one TCP
    /// stream has no per-channel flow control).
    pub recv_queue_capacity: usize,
    /// Largest message on a channel the router has not described (its
    /// descriptor's maximum applies otherwise). Tendermint: 21 MiB.
    pub max_message_size: usize,
    /// Handshake timeout (TCP connect plus SecretConnection; default 20 s,
    /// CometBFT's `handshake_timeout`), handshake and connection limits,
    /// backlog.
    pub listener: ListenerConfig,
    /// Time a graceful close spends sending what is queued.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub close_drain_timeout: Duration,
}

impl MconnConfig {
    /// CometBFT's defaults, listening nowhere.
    pub fn new() -> Self {
        Self {
            listen: Vec::new(),
            max_packet_payload: 1024,
            flush_throttle: Duration::from_millis(100),
            send_rate: Some(5_120_000),
            recv_rate: Some(5_120_000),
            ping_interval: Duration::from_secs(60),
            pong_timeout: Duration::from_secs(45),
            send_queue_capacity: 16,
            recv_queue_capacity: 16,
            max_message_size: 22_020_096,
            // CometBFT's `handshake_timeout`: its nodes may take this long.
            listener: ListenerConfig::default().with_handshake_timeout(Duration::from_secs(20)),
            close_drain_timeout: Duration::from_secs(2),
        }
    }

    /// No rate limits, flush after every batch: the fastest this protocol
    /// goes (what the benchmarks call `mconn-fast`).
    pub fn fast() -> Self {
        Self {
            flush_throttle: Duration::ZERO,
            send_rate: None,
            recv_rate: None,
            ..Self::new()
        }
    }

    /// Adds a listen address.
    pub fn listen_on(mut self, address: SocketAddr) -> Self {
        self.listen.push(address);
        self
    }

    /// Checks for values that cannot work;
    /// [`MconnTransport::bind`](crate::MconnTransport::bind) runs it.
    pub fn validate(&self) -> Result<(), MconnConfigError> {
        if self.pong_timeout >= self.ping_interval {
            return Err(MconnConfigError::PongNotBelowPing);
        }
        if self.max_packet_payload == 0 || self.max_packet_payload > 1 << 20 {
            return Err(MconnConfigError::PacketPayload(self.max_packet_payload));
        }
        let counts = [
            ("send_queue_capacity", self.send_queue_capacity),
            ("recv_queue_capacity", self.recv_queue_capacity),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(MconnConfigError::Zero(name));
        }
        if self.send_rate == Some(0) || self.recv_rate == Some(0) {
            return Err(MconnConfigError::ZeroRate);
        }
        self.listener.validate()?;
        Ok(())
    }
}

/// An [`MconnConfig`] value that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MconnConfigError {
    /// `pong_timeout` is not shorter than `ping_interval`.
    #[error("pong_timeout must be shorter than ping_interval")]
    PongNotBelowPing,
    /// `max_packet_payload` is outside 1 ..= 1 MiB.
    #[error("max_packet_payload {0} is outside 1..=1 MiB")]
    PacketPayload(usize),
    /// A capacity or limit that must be positive is 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A rate limit of 0 would stop all traffic (use `None` for none).
    #[error("a rate limit of 0 would stop all traffic; use None for no limit")]
    ZeroRate,
    /// The listener settings cannot work.
    #[error(transparent)]
    Listener(#[from] ListenerConfigError),
}

impl Default for MconnConfig {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_cometbfts() {
        let c = MconnConfig::new();
        assert_eq!(c.listener.handshake_timeout, Duration::from_secs(20));
        assert_eq!(c.max_packet_payload, 1024);
        assert_eq!(c.flush_throttle, Duration::from_millis(100));
        assert_eq!(
            (c.send_rate, c.recv_rate),
            (Some(5_120_000), Some(5_120_000))
        );
        assert_eq!(c.ping_interval, Duration::from_secs(60));
        assert_eq!(c.pong_timeout, Duration::from_secs(45));
        assert_eq!(c.validate(), Ok(()));
        let mut zero = MconnConfig::new();
        zero.listener.max_connections = 0;
        assert_eq!(
            zero.validate(),
            Err(MconnConfigError::Listener(ListenerConfigError::Zero(
                "max_connections"
            )))
        );
    }
}
