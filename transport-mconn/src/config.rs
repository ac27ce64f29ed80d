//! Settings of the MConnection transport.

use std::net::SocketAddr;
use std::time::Duration;

/// Settings of an [`MconnTransport`](crate::MconnTransport).
///
/// [`MconnConfig::new`] gives CometBFT's defaults (what an operator's
/// `config.toml` has unless changed); [`MconnConfig::fast`] turns off rate
/// limits and the flush delay.
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
    pub flush_throttle: Duration,
    /// Send rate limit in bytes per second; `None` for none (CometBFT:
    /// 5,120,000).
    pub send_rate: Option<u64>,
    /// Receive rate limit in bytes per second; `None` for none (CometBFT:
    /// 5,120,000).
    pub recv_rate: Option<u64>,
    /// Interval between our pings (CometBFT: 60 s).
    pub ping_interval: Duration,
    /// After a ping, the peer must send something (a pong, or any packet)
    /// within this time or the connection is closed (CometBFT: 45 s; must
    /// be shorter than `ping_interval`).
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
    /// Time allowed for TCP connect plus the SecretConnection handshake.
    pub handshake_timeout: Duration,
    /// Incoming SecretConnection handshakes in progress at once; more
    /// connections are closed before any cryptographic work.
    pub max_incoming_handshakes: usize,
    /// Live connections, both directions.
    pub max_connections: usize,
    /// Connections handshaken but not yet taken by `accept`.
    pub accept_backlog: usize,
    /// Time a graceful close spends sending what is queued.
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
            handshake_timeout: Duration::from_secs(10),
            max_incoming_handshakes: 64,
            max_connections: 1024,
            accept_backlog: 64,
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

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.pong_timeout >= self.ping_interval {
            return Err("pong_timeout must be shorter than ping_interval".into());
        }
        if self.max_packet_payload == 0 || self.max_packet_payload > 1 << 20 {
            return Err("max_packet_payload must be 1..=1 MiB".into());
        }
        if self.send_queue_capacity == 0 || self.recv_queue_capacity == 0 {
            return Err("queue capacities must be positive".into());
        }
        if self.max_incoming_handshakes == 0 || self.max_connections == 0 {
            return Err("connection limits must be positive".into());
        }
        if self.send_rate == Some(0) || self.recv_rate == Some(0) {
            return Err("a rate limit of 0 would stop all traffic; use None for none".into());
        }
        Ok(())
    }
}

impl Default for MconnConfig {
    fn default() -> Self {
        Self::new()
    }
}
