//! What a peer did wrong, as the router and reactors report it: a severity
//! the router acts on and a structured kind for logs and metrics.

use std::borrow::Cow;

use crate::channel::ChannelId;
use crate::identity::NodeId;
use crate::pex::PexViolation;
use crate::transport::ConnectionError;

/// How the router treats a [`PeerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// Lowers the peer's score; disconnects it only when the node is full
    /// (a better peer may take its slot).
    Minor,
    /// Disconnects the peer at once; the close tells it why.
    Fatal,
}

/// What the peer did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerErrorKind {
    /// One of its streams broke a framing rule (oversized, malformed,
    /// unknown channel); the transport reset that stream.
    #[error("stream error{}: {error}", channel_suffix(*channel))]
    Stream {
        /// The channel, when the stream had one.
        channel: Option<ChannelId>,
        /// What the transport found.
        error: ConnectionError,
    },
    /// It broke the transport protocol; the connection is closed.
    #[error("protocol violation: {0}")]
    Protocol(ConnectionError),
    /// A message on `channel` did not decode as the channel's type.
    #[error("undecodable message on channel {channel}: {error}")]
    Undecodable {
        /// The channel.
        channel: ChannelId,
        /// What the decoder said.
        error: prost::DecodeError,
    },
    /// It broke a peer-exchange rule.
    #[error("PEX: {0}")]
    Pex(PexViolation),
    /// A reactor found its message wrong for the reactor's own protocol.
    #[error("on channel {channel}: {description}")]
    Reactor {
        /// The reactor's channel.
        channel: ChannelId,
        /// What was wrong, for logs (the router acts on the severity only).
        description: Cow<'static, str>,
    },
}

fn channel_suffix(channel: Option<ChannelId>) -> String {
    channel
        .map(|c| format!(" on channel {c}"))
        .unwrap_or_default()
}

impl PeerErrorKind {
    /// A reactor's own complaint about a message on `channel`.
    pub fn reactor(channel: ChannelId, description: impl Into<Cow<'static, str>>) -> Self {
        PeerErrorKind::Reactor {
            channel,
            description: description.into(),
        }
    }
}

/// A peer's misbehaviour, reported by a reactor or the router.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{severity:?} error of peer {peer}: {kind}")]
#[non_exhaustive]
pub struct PeerError {
    /// The peer.
    pub peer: NodeId,
    /// What the router does about it.
    pub severity: Severity,
    /// What it did.
    pub kind: PeerErrorKind,
}

impl PeerError {
    /// An error of `severity`.
    pub fn new(peer: NodeId, severity: Severity, kind: PeerErrorKind) -> Self {
        Self {
            peer,
            severity,
            kind,
        }
    }

    /// An error that disconnects the peer.
    pub fn fatal(peer: NodeId, kind: PeerErrorKind) -> Self {
        Self::new(peer, Severity::Fatal, kind)
    }

    /// An error that lowers the peer's score.
    pub fn minor(peer: NodeId, kind: PeerErrorKind) -> Self {
        Self::new(peer, Severity::Minor, kind)
    }

    /// Whether it disconnects the peer at once.
    pub fn is_fatal(&self) -> bool {
        self.severity == Severity::Fatal
    }
}
