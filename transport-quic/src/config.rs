//! Settings of the QUIC transport, with the reasoning behind each default.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use p2p_router::transport::listener::{ListenerConfig, ListenerConfigError};
use p2p_router::MAX_CHANNELS;
use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::resumption::SessionCache;

/// Settings of a [`QuicTransport`](crate::QuicTransport).
///
/// Construct with [`QuicConfig::new`] and adjust the public fields. The
/// network id is not here: it comes with the [`LocalNode`] the transport is
/// bound for (folded into ALPN, so nodes of different networks fail the TLS
/// handshake before any application data flows).
///
/// [`LocalNode`]: p2p_router::LocalNode
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QuicConfig {
    /// Addresses to listen on (IPv4 and/or IPv6). Empty: dial only.
    pub listen: Vec<SocketAddr>,
    /// Receive window of each stream, i.e. of each channel per peer and
    /// direction: how many bytes a peer may send on one channel ahead of the
    /// reader. Default 128 KiB: on loopback, 32–64 KiB gives the lowest
    /// latency for a small channel next to a saturated one, 128 KiB keeps
    /// p99 around 2 ms there while allowing ≈ 1.3 MB/s per channel at 100 ms
    /// RTT. On a long fat path raise it to about two bandwidth-delay
    /// products, with [`max_congestion_window`](Self::max_congestion_window)
    /// at about one.
    pub stream_receive_window: u32,
    /// Most channels a connection serves. Sizes the number of streams a peer
    /// may open (two per channel: the live one and one replacement) and the
    /// connection window. Default [`MAX_CHANNELS`].
    pub max_channels: usize,
    /// Bytes we may have in flight to a peer across all streams. Large:
    /// a small shared send window lets a bulk channel block the others.
    pub send_window: u64,
    /// Interval of keep-alive pings on an otherwise idle connection.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub keep_alive_interval: Duration,
    /// A connection without any packet from the peer for this long is
    /// closed. Must exceed `keep_alive_interval` several times.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub idle_timeout: Duration,
    /// Handshake timeout, handshake and connection limits, backlog.
    pub listener: ListenerConfig,
    /// Time a graceful close waits for sent data to be acknowledged.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub close_drain_timeout: Duration,
    /// Time a peer has to send a channel stream's header.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub stream_header_timeout: Duration,
    /// Bad streams (unknown channel, duplicate, malformed header) tolerated
    /// on one connection before it is closed.
    pub max_stream_errors: u32,
    /// `SO_RCVBUF`/`SO_SNDBUF` of the UDP socket. 4 MiB: with the kernel
    /// default (~208 KiB) quinn drops 1–1.5 % of packets on a busy loopback
    /// from receive-buffer overflow.
    pub socket_buffer: usize,
    /// Use BBR congestion control (keeps latency and throughput under
    /// random loss); `false` uses CUBIC.
    pub bbr: bool,
    /// Caps the congestion window, in bytes. `None` (the default): the
    /// controller alone decides, right when the path is unknown. On a path
    /// whose bandwidth-delay product is known, a cap of about one BDP
    /// keeps BBR's second BDP in flight from standing in the bottleneck's
    /// queue in front of every high-priority message; the stream windows
    /// should then exceed the BDP, so the cap (which respects channel
    /// priority) limits a bulk channel rather than flow control (which
    /// does not).
    pub max_congestion_window: Option<u64>,
    /// Maximum ACK delay requested from the peer (ACK frequency extension).
    /// 1 ms: quinn's 25 ms default dominated tail latency under loss.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_ack_delay: Duration,
    /// Tickets for resuming TLS sessions with peers we dialed (a reconnect
    /// then skips the certificates and their signatures). Clones of this
    /// config share it; a listener remembers up to
    /// `listener.max_connections` sessions for its dialers.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub session_cache: SessionCache,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl QuicConfig {
    /// The defaults, listening nowhere.
    pub fn new() -> Self {
        Self {
            listen: Vec::new(),
            stream_receive_window: 128 * 1024,
            max_channels: MAX_CHANNELS,
            send_window: 16 * 1024 * 1024,
            keep_alive_interval: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            listener: ListenerConfig::default(),
            close_drain_timeout: Duration::from_secs(2),
            stream_header_timeout: Duration::from_secs(10),
            max_stream_errors: 32,
            socket_buffer: 4 * 1024 * 1024,
            bbr: true,
            max_congestion_window: None,
            max_ack_delay: Duration::from_millis(1),
            session_cache: SessionCache::default(),
        }
    }

    /// Adds a listen address.
    pub fn listen_on(mut self, address: SocketAddr) -> Self {
        self.listen.push(address);
        self
    }

    /// Uni streams a peer may have open: each channel's live stream plus one
    /// replacement (after a cancelled send).
    pub(crate) fn max_uni_streams(&self, channels: usize) -> u32 {
        u32::try_from(channels.max(1) * 2).unwrap_or(u32::MAX)
    }

    /// Connection receive window: every stream's window fits in it, so a
    /// stalled or bulk channel can never use up credit the others need.
    pub(crate) fn connection_receive_window(&self) -> u64 {
        u64::from(self.stream_receive_window)
            * (u64::from(self.max_uni_streams(self.max_channels)) + 1)
    }

    /// The quinn transport settings. `accept_bidi` is whether the peer may
    /// open the (one) control stream to us.
    pub(crate) fn transport(
        &self,
        accept_bidi: bool,
    ) -> Result<Arc<TransportConfig>, QuicConfigError> {
        let mut t = TransportConfig::default();
        t.stream_receive_window(VarInt::from_u32(self.stream_receive_window));
        t.receive_window(
            VarInt::from_u64(self.connection_receive_window())
                .map_err(|_| QuicConfigError::WindowTooLarge)?,
        );
        t.send_window(self.send_window);
        t.max_concurrent_bidi_streams(VarInt::from_u32(u32::from(accept_bidi)));
        // No channel stream before the handshake: credit for them is
        // granted once both sides' channels are known (QUIC can raise a
        // stream limit later, never lower it).
        t.max_concurrent_uni_streams(VarInt::from_u32(0));
        // No channel uses datagrams, so the DATAGRAM extension is not
        // offered: otherwise quinn buffers whatever a peer sends (about
        // 1.25 MB per connection, before admission too) for a reader that
        // never comes. A peer sending one anyway breaks the protocol.
        t.datagram_receive_buffer_size(None);
        t.keep_alive_interval(Some(self.keep_alive_interval));
        t.max_idle_timeout(Some(
            IdleTimeout::try_from(self.idle_timeout)
                .map_err(|_| QuicConfigError::IdleTimeoutTooLong)?,
        ));
        t.congestion_controller_factory(crate::congestion::controller(
            self.bbr,
            self.max_congestion_window,
        ));
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.max_ack_delay(Some(self.max_ack_delay));
        t.ack_frequency_config(Some(ack));
        Ok(Arc::new(t))
    }

    /// Checks the settings for values that cannot work;
    /// [`QuicTransport::bind`](crate::QuicTransport::bind) runs it.
    pub fn validate(&self) -> Result<(), QuicConfigError> {
        if self.keep_alive_interval >= self.idle_timeout {
            return Err(QuicConfigError::KeepAliveNotBelowIdle);
        }
        if self.max_channels == 0 || self.max_channels > 256 {
            return Err(QuicConfigError::MaxChannels(self.max_channels));
        }
        if self.stream_receive_window < 1024 {
            return Err(QuicConfigError::StreamWindowTooSmall(
                self.stream_receive_window,
            ));
        }
        if let Some(cap) = self
            .max_congestion_window
            .filter(|&cap| cap < MIN_CONGESTION_WINDOW)
        {
            return Err(QuicConfigError::CongestionWindowTooSmall(cap));
        }
        self.listener.validate()?;
        // The remaining conversions can fail too: try them now, not at the
        // first dial.
        self.transport(true).map(|_| ())
    }
}

/// The smallest congestion window cap: two full-size packets (a window
/// that cannot hold one stalls the connection).
pub const MIN_CONGESTION_WINDOW: u64 = 2 * 1500;

/// A [`QuicConfig`] value that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuicConfigError {
    /// `keep_alive_interval` is not shorter than `idle_timeout`.
    #[error("keep_alive_interval must be shorter than idle_timeout")]
    KeepAliveNotBelowIdle,
    /// `max_channels` is outside 1 ..= 256.
    #[error("max_channels {0} is outside 1..=256")]
    MaxChannels(usize),
    /// `stream_receive_window` is under 1024 bytes.
    #[error("stream_receive_window {0} is under 1024 bytes")]
    StreamWindowTooSmall(u32),
    /// `max_congestion_window` is under two full-size packets.
    #[error("max_congestion_window {0} is under {MIN_CONGESTION_WINDOW} bytes")]
    CongestionWindowTooSmall(u64),
    /// The listener settings cannot work.
    #[error(transparent)]
    Listener(#[from] ListenerConfigError),
    /// The connection window (stream window × streams) exceeds QUIC's
    /// maximum.
    #[error("the connection receive window exceeds QUIC's maximum")]
    WindowTooLarge,
    /// `idle_timeout` exceeds QUIC's maximum.
    #[error("idle_timeout exceeds QUIC's maximum")]
    IdleTimeoutTooLong,
}
