//! The transport abstraction, for transport implementors: how bytes reach a
//! peer, and everything a transport needs (the traits, the admission and
//! close codes, path statistics, the typed errors, the accept backoff).
//!
//! A [`Transport`] listens, accepts and dials; a [`Connection`] carries one
//! peer's handshake and then messages **per channel**, so a transport that
//! has independent streams (QUIC) keeps a stalled channel from blocking the
//! others. Identity and compatibility checks, and the decision whether to
//! admit a peer, belong to the router: transports only carry the messages
//! (`NodeInfo`, [`Admission`]) and report the peer's authenticated key.
//!
//! A transport implements [`AsyncTransport`] and [`AsyncConnection`]; the
//! router holds it as the object-safe [`Transport`] (`Arc<dyn Transport>`),
//! which every implementation gets for free.

/// The boxed, sendable future the object-safe traits return (`futures`' own).
pub use futures::future::BoxFuture;

mod accept_backoff;
mod attempt_rate;
mod error;
pub mod listener;
mod source_slots;
mod traits;

pub use accept_backoff::AcceptBackoff;
pub use error::{
    AcceptError, AcceptFailure, AuthFailure, BindError, ConnectionError, DialError,
    IncompatibleKind, MalformedKind, ProtocolViolation, UsageError,
};
pub use source_slots::{SourceSlot, SourceSlots};
pub use traits::{AsyncConnection, AsyncTransport, Connection, ConnectionFuture, Transport};

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
/// On the wire it is one byte: 0 for accepted, 0x10 for a visit, the
/// refusal code otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Admission {
    /// The dialer is admitted; the connection is up.
    Accepted,
    /// The dialer is admitted for a visit only: the node is full, serves
    /// it peer exchange, and closes the connection soon. The dialer does
    /// not count it among the peers it keeps.
    Visiting,
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

/// The admission byte of a visit (not a refusal code).
const VISITING: u8 = 0x10;

impl Admission {
    /// The one-byte wire form.
    pub fn to_byte(self) -> u8 {
        match self {
            Admission::Accepted => 0,
            Admission::Visiting => VISITING,
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
            VISITING => Admission::Visiting,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_byte_round_trips_and_unknown_is_other() {
        for a in [
            Admission::Accepted,
            Admission::Visiting,
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
