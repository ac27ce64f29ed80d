//! The typed errors at the transport boundary: what a transport reports
//! when binding, accepting, dialing or carrying a connection fails.

use crate::address::Protocol;
use crate::channel::ChannelId;
use crate::identity::NodeId;

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
