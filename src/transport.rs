//! The transport abstraction: how bytes reach a peer.
//!
//! A [`Transport`] listens, accepts and dials; a [`Connection`] carries one
//! peer's handshake and then messages **per channel**, so a transport that
//! has independent streams (QUIC) keeps a stalled channel from blocking the
//! others. Identity and compatibility checks, and the decision whether to
//! admit a peer, belong to the router: transports only carry the messages
//! (`NodeInfo`, [`Admission`]) and report the peer's authenticated key.
//!
//! Methods return boxed futures so that transports of different types can be
//! stored side by side (`Arc<dyn Transport>`).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use ed25519_dalek::VerifyingKey;

use crate::address::Protocol;
use crate::channel::{ChannelDescriptor, ChannelId};
use crate::identity::NodeId;
use crate::node_info::NodeInfo;
use crate::resolve::Endpoint;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Listens for, accepts and dials connections of one or more protocols.
pub trait Transport: Send + Sync + 'static {
    /// The protocols this transport dials and serves.
    fn protocols(&self) -> Vec<Protocol>;

    /// Where this transport listens (empty when it does not).
    fn listen_endpoints(&self) -> Vec<Endpoint>;

    /// Waits for the next inbound connection, authenticated at the transport
    /// level (the peer's key is known) but not yet handshaken. Returns
    /// [`AcceptError::Closed`] once the transport is closed; any other error
    /// concerns one connection attempt and the caller should keep accepting.
    ///
    /// Cancel safe: dropping the future loses no accepted connection.
    fn accept(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, AcceptError>>;

    /// Dials node `peer` at `endpoint`. A transport that authenticates
    /// peers refuses a peer proving another id ([`DialError::WrongPeer`]).
    /// The caller bounds the time.
    fn dial<'a>(
        &'a self,
        peer: NodeId,
        endpoint: &'a Endpoint,
    ) -> BoxFuture<'a, Result<Box<dyn Connection>, DialError>>;

    /// Stops listening and makes `accept` return [`AcceptError::Closed`].
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// One connection to one peer.
///
/// Call order: [`handshake`](Self::handshake); then the accepting side calls
/// [`send_admission`](Self::send_admission) and the dialing side
/// [`recv_admission`](Self::recv_admission); then any number of concurrent
/// [`send`](Self::send)/[`recv`](Self::recv) calls, at most one of each per
/// channel at a time; finally [`close`](Self::close).
pub trait Connection: Send + Sync + 'static {
    /// The remote end.
    fn remote_endpoint(&self) -> Endpoint;

    /// The peer's ed25519 key, as authenticated by the transport (TLS
    /// certificate, SecretConnection signature, or the memory hub).
    fn peer_key(&self) -> VerifyingKey;

    /// Sends our `NodeInfo` and receives the peer's, concurrently.
    fn handshake<'a>(
        &'a self,
        ours: &'a NodeInfo,
    ) -> BoxFuture<'a, Result<NodeInfo, ConnectionError>>;

    /// Accepting side: tells the dialer whether it was admitted.
    fn send_admission(&self, admission: Admission) -> BoxFuture<'_, Result<(), ConnectionError>>;

    /// Dialing side: waits for the accepting side's decision.
    fn recv_admission(&self) -> BoxFuture<'_, Result<Admission, ConnectionError>>;

    /// Sends one encoded message on `channel`, waiting for that channel's
    /// credit (this wait is the backpressure).
    ///
    /// Not cancel safe for the message being sent: a cancelled send may or
    /// may not deliver it, but never delivers it truncated.
    fn send(
        &self,
        channel: ChannelId,
        message: Bytes,
    ) -> BoxFuture<'_, Result<(), ConnectionError>>;

    /// Sends several encoded messages on `channel`, in order, as
    /// [`send`](Self::send) would one by one; transports override it to
    /// write them in one go. On error some of them may have been sent.
    fn send_batch(
        &self,
        channel: ChannelId,
        messages: Vec<Bytes>,
    ) -> BoxFuture<'_, Result<(), ConnectionError>> {
        Box::pin(async move {
            for message in messages {
                self.send(channel, message).await?;
            }
            Ok(())
        })
    }

    /// Receives the next message on `channel`, refusing one larger than
    /// `max_size` before reading it into memory. An error that concerns one
    /// stream ([`ConnectionError::is_stream_error`]) leaves the connection
    /// and other channels working.
    fn recv(
        &self,
        channel: ChannelId,
        max_size: usize,
    ) -> BoxFuture<'_, Result<Bytes, ConnectionError>>;

    /// Receives the messages of `channel` that are already here into `out`:
    /// at least one, at most `limit`, waiting only for the first. Frames
    /// over `max_size` are refused as [`recv`](Self::recv) refuses them; an
    /// error met after some messages were taken is returned by the next
    /// call. Transports override it to take a buffer's worth in one call;
    /// the default receives one message.
    fn recv_batch<'a>(
        &'a self,
        channel: ChannelId,
        max_size: usize,
        limit: usize,
        out: &'a mut Vec<Bytes>,
    ) -> BoxFuture<'a, Result<(), ConnectionError>> {
        let _ = limit;
        Box::pin(async move {
            out.push(self.recv(channel, max_size).await?);
            Ok(())
        })
    }

    /// Closes the connection; the peer sees the reason where the transport
    /// can carry one.
    fn close(&self, reason: CloseReason) -> BoxFuture<'_, ()>;

    /// Resolves once the connection is closed, by either side.
    fn closed(&self) -> BoxFuture<'_, ()>;

    /// Tells the transport how the router will use `channel` on this
    /// connection, before any traffic on it: transports with per-channel
    /// streams map the descriptor's priority onto the stream. The default
    /// ignores it.
    fn prepare_channel(&self, channel: &ChannelDescriptor) {
        let _ = channel;
    }

    /// Waits until the peer starts sending on a channel it had not used on
    /// this connection, and returns that channel. The router begins
    /// reading a channel only then, so a connected peer's idle channels
    /// cost no receive task (with QUIC, a channel starts when the peer
    /// opens its first stream for it).
    ///
    /// `None` means the transport cannot tell: every channel is read from
    /// the start. That is the default, for transports that carry all
    /// channels on one stream. Cancel safe: a started channel is reported
    /// exactly once, by the call that returns it.
    fn next_started_channel(&self) -> BoxFuture<'_, Option<ChannelId>> {
        Box::pin(std::future::ready(None))
    }

    /// Waits for the next stream-level misbehaviour the transport detected
    /// outside any [`recv`](Self::recv) call (for example, a stream opened
    /// for a channel the peer did not negotiate). The stream is already
    /// reset; the router reports the error against the peer and keeps the
    /// connection. Transports without such errors never resolve (the
    /// default).
    fn next_stream_error(&self) -> BoxFuture<'_, ConnectionError> {
        Box::pin(std::future::pending())
    }

    /// The path's round-trip time and packet counts, for metrics, when the
    /// transport measures them (QUIC does; the default reports nothing).
    fn path_stats(&self) -> Option<PathStats> {
        None
    }
}

/// What a transport knows about a connection's network path.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct PathStats {
    /// The current smoothed round-trip time.
    pub rtt: std::time::Duration,
    /// Packets sent on the connection so far.
    pub sent_packets: u64,
    /// Packets declared lost so far.
    pub lost_packets: u64,
}

impl PathStats {
    /// Path statistics from a transport's measurements.
    pub fn new(rtt: std::time::Duration, sent_packets: u64, lost_packets: u64) -> Self {
        Self {
            rtt,
            sent_packets,
            lost_packets,
        }
    }
}

/// The accepting side's decision, sent to the dialer after the handshake.
///
/// On the wire it is one byte: 0 for accepted, the refusal code otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Admission {
    /// The dialer is admitted; the connection is up.
    Accepted,
    /// The dialer is refused; the connection will be closed.
    Refused(RefusalReason),
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
    /// Another connection between the two nodes is kept instead
    /// (simultaneous dial or duplicate).
    Duplicate = 1,
    /// The node is full.
    Full = 2,
    /// The peer's `NodeInfo` is invalid, mismatched or incompatible.
    Incompatible = 3,
    /// The node is shutting down.
    ShuttingDown = 4,
    /// Any other reason.
    Other = 255,
}

impl Admission {
    /// The one-byte wire form.
    pub fn to_byte(self) -> u8 {
        match self {
            Admission::Accepted => 0,
            Admission::Refused(reason) => reason as u8,
        }
    }

    /// Parses the one-byte wire form; unknown codes read as
    /// [`RefusalReason::Other`].
    pub fn from_byte(byte: u8) -> Self {
        match byte {
            0 => Admission::Accepted,
            1 => Admission::Refused(RefusalReason::Duplicate),
            2 => Admission::Refused(RefusalReason::Full),
            3 => Admission::Refused(RefusalReason::Incompatible),
            4 => Admission::Refused(RefusalReason::ShuttingDown),
            _ => Admission::Refused(RefusalReason::Other),
        }
    }
}

/// Why a connection is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// Normal shutdown or the peer is no longer wanted.
    Normal,
    /// Refused during the handshake.
    Refused,
    /// The peer misbehaved.
    PeerError,
    /// Replaced by a newer connection to the same peer.
    Replaced,
    /// Our node is shutting down.
    Shutdown,
}

/// How the peer failed to prove who it is, or refused our proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The peer ended the TLS handshake with this alert (its code, as in
    /// RFC 8446 §6): it refused our certificate or our parameters.
    #[error("peer sent TLS alert {0}")]
    TlsAlert(u8),
    /// The peer's certificate is not one we accept (not a single
    /// self-signed ed25519 certificate).
    #[error("unacceptable peer certificate")]
    BadCertificate,
    /// The peer's key is not an ed25519 key.
    #[error("peer key is not ed25519")]
    UnsupportedKey,
    /// The peer's signature over the handshake does not verify.
    #[error("bad handshake signature")]
    BadSignature,
    /// A handshake message of the peer does not decode.
    #[error("malformed handshake message")]
    MalformedHandshake,
    /// The key exchange gave a weak (all-zero) secret.
    #[error("weak key exchange (low-order point)")]
    WeakKeyExchange,
    /// The TLS handshake failed in another way.
    #[error("TLS handshake failed")]
    Tls,
}

/// Why a peer cannot talk to us at all, found before any exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IncompatibleKind {
    /// No common application protocol: another network or protocol
    /// version (QUIC's ALPN).
    #[error("another network or protocol version (no common ALPN)")]
    Alpn,
}

/// Why `accept` failed for one incoming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptFailure {
    /// The peer did not authenticate.
    #[error("authentication: {0}")]
    Authentication(#[from] AuthFailure),
    /// The peer is of another network or protocol version.
    #[error("incompatible: {0}")]
    Incompatible(IncompatibleKind),
    /// The transport-level handshake took too long.
    #[error("handshake timed out")]
    Timeout,
    /// The connection failed.
    #[error("i/o: {0}")]
    Io(std::io::ErrorKind),
}

/// Why `accept` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The transport is closed; stop accepting.
    #[error("transport closed")]
    Closed,
    /// One incoming connection failed; keep accepting.
    #[error("incoming connection from {remote} failed: {reason}")]
    Connection {
        /// Where it came from.
        remote: std::net::SocketAddr,
        /// What went wrong.
        reason: AcceptFailure,
    },
}

/// Why `dial` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// This transport does not serve the endpoint's protocol.
    #[error("protocol {0} not served by this transport")]
    UnsupportedProtocol(Protocol),
    /// Nobody listens at the endpoint.
    #[error("connection refused")]
    Refused,
    /// The transport is closed.
    #[error("transport closed")]
    Closed,
    /// The peer failed transport-level authentication, or refused ours.
    #[error("peer authentication failed: {0}")]
    Authentication(#[from] AuthFailure),
    /// The peer authenticated as another node than the one dialed.
    #[error("dialed node {expected} but reached {actual}")]
    WrongPeer {
        /// The node id in the dialed address.
        expected: NodeId,
        /// The node id the peer proved.
        actual: NodeId,
    },
    /// The peer speaks another protocol version or belongs to another
    /// network; nothing was exchanged.
    #[error("incompatible peer: {0}")]
    Incompatible(IncompatibleKind),
    /// The transport-level handshake took too long.
    #[error("handshake timed out")]
    Timeout,
    /// The transport's connection limit is reached (a local limit).
    #[error("connection limit reached")]
    LimitReached,
    /// A socket operation failed.
    #[error("i/o: {0}")]
    Io(std::io::ErrorKind),
    /// The transport could not start the dial: a local failure, not the
    /// peer's (the details are logged at `error`).
    #[error("local failure starting the dial")]
    Local,
}

/// What was wrong with bytes a peer sent on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedKind {
    /// A length prefix that is not a valid varint, or out of bounds.
    #[error("bad length prefix")]
    Length,
    /// The stream ended in the middle of a frame or message.
    #[error("stream ended inside a frame")]
    Truncated,
    /// A `NodeInfo` that does not decode.
    #[error("undecodable NodeInfo")]
    NodeInfo,
    /// A channel stream header that does not decode.
    #[error("bad stream header")]
    StreamHeader,
    /// A channel stream header that did not arrive in time.
    #[error("stream header timed out")]
    StreamHeaderTimeout,
    /// An admission that is not one byte.
    #[error("bad admission")]
    Admission,
    /// A second stream for a channel whose generation is not above the
    /// previous one's.
    #[error("duplicate channel stream")]
    DuplicateStream,
}

/// How a peer broke the transport protocol badly enough that the
/// connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// A packet that does not decode.
    #[error("undecodable packet")]
    UndecodablePacket,
    /// A packet of an unknown type.
    #[error("unknown packet type")]
    UnknownPacketType,
    /// A packet length that is malformed or over the maximum.
    #[error("bad packet length")]
    PacketLength,
    /// A message for a channel the connection does not carry (the id as
    /// the peer sent it).
    #[error("message on unknown channel {0}")]
    UnknownChannel(i64),
    /// A message reassembled beyond its channel's maximum size.
    #[error("message over its channel's maximum size")]
    MessageTooLarge,
    /// An encrypted frame that fails authentication.
    #[error("frame failed to decrypt")]
    FrameDecrypt,
    /// An encrypted frame declaring more data than a frame holds.
    #[error("bad frame length")]
    FrameLength,
    /// More frames than the nonce counter allows.
    #[error("nonce counter exhausted")]
    NonceExhausted,
}

/// A call made out of order by the local node (a bug in the caller, never
/// the peer's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// A channel, or the admission, used before the handshake.
    #[error("used before the handshake")]
    BeforeHandshake,
}

/// Why a connection operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// The peer sent bytes that do not decode; that stream was reset.
    #[error("malformed input: {0}")]
    Malformed(MalformedKind),
    /// The peer sent a message larger than the channel allows; that stream
    /// was reset.
    #[error("message of {size} bytes exceeds the channel maximum {max}")]
    Oversized {
        /// Declared size.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// The peer used a channel it may not use; that stream was reset.
    #[error("unexpected stream for channel {0}")]
    UnexpectedChannel(ChannelId),
    /// The peer stopped or reset this channel's stream (it refused a
    /// message, or the sender abandoned one). Messages in flight on it may be
    /// lost; the channel carries on with a new stream.
    #[error("stream stopped by the peer (code {code})")]
    StreamStopped {
        /// The application error code the peer gave.
        code: u64,
    },
    /// The peer broke the protocol and the connection was closed because
    /// of it (for example an undecodable MConnection packet). The router
    /// reports it against the peer.
    #[error("protocol violation: {0}")]
    Protocol(ProtocolViolation),
    /// The local node called the connection out of order. Never reported
    /// against the peer.
    #[error("usage: {0}")]
    Usage(UsageError),
    /// An IO error.
    #[error("i/o: {0}")]
    Io(std::io::ErrorKind),
}

impl ConnectionError {
    /// Whether the error concerns a single stream, leaving the connection and
    /// its other channels usable.
    pub fn is_stream_error(&self) -> bool {
        matches!(
            self,
            ConnectionError::Oversized { .. }
                | ConnectionError::UnexpectedChannel(_)
                | ConnectionError::Malformed(_)
                | ConnectionError::StreamStopped { .. }
        )
    }
}

/// Why a transport could not be bound. Every transport returns this one
/// type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The configuration is unusable; the transport's own error type
    /// (e.g. `QuicConfigError`) says which setting, and can be downcast.
    #[error("invalid configuration: {0}")]
    Config(Box<dyn std::error::Error + Send + Sync>),
    /// The node key could not become the transport's identity (a TLS
    /// certificate or configuration).
    #[error("identity: {0}")]
    Identity(Box<dyn std::error::Error + Send + Sync>),
    /// A listener could not be bound.
    #[error("bind {address}: {source}")]
    Socket {
        /// The address.
        address: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// How long an accept loop waits after a failed `accept()` before trying
/// again. Errors such as EMFILE persist until something frees a file
/// descriptor, and the listener stays readable meanwhile: retrying at once
/// would spin a core and flood the log. The wait doubles from 5 ms up to
/// 1 s and starts over after a success.
#[derive(Debug, Clone)]
pub struct AcceptBackoff {
    next: std::time::Duration,
}

impl AcceptBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(5);
    const MAX: std::time::Duration = std::time::Duration::from_secs(1);

    /// A backoff with no failure yet.
    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The wait after one more failure in a row.
    pub fn failed(&mut self) -> std::time::Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }

    /// An accept succeeded: the next failure waits the least again.
    pub fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_cap_and_resets_on_success() {
        let mut b = AcceptBackoff::new();
        let waits: Vec<_> = (0..10).map(|_| b.failed().as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed().as_millis(), 5);
    }

    #[test]
    fn admission_byte_round_trips_and_unknown_is_other() {
        for a in [
            Admission::Accepted,
            Admission::Refused(RefusalReason::Duplicate),
            Admission::Refused(RefusalReason::Full),
            Admission::Refused(RefusalReason::Incompatible),
            Admission::Refused(RefusalReason::ShuttingDown),
            Admission::Refused(RefusalReason::Other),
        ] {
            assert_eq!(Admission::from_byte(a.to_byte()), a);
        }
        assert_eq!(
            Admission::from_byte(77),
            Admission::Refused(RefusalReason::Other)
        );
    }
}
