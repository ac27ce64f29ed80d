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
//! Methods return boxed futures so that transports of different types can be
//! stored side by side (`Arc<dyn Transport>`).

use bytes::Bytes;
use ed25519_dalek::VerifyingKey;

use crate::address::Protocol;
use crate::channel::{ChannelDescriptor, ChannelId};
use crate::identity::NodeId;
use crate::node_info::NodeInfo;
use crate::resolve::Endpoint;

/// The boxed, sendable future every method returns (`futures`' own).
pub use futures::future::BoxFuture;

mod accept_backoff;
mod attempt_rate;
mod error;
pub mod listener;
mod source_slots;

pub use accept_backoff::AcceptBackoff;
pub use error::{
    AcceptError, AcceptFailure, AuthFailure, BindError, ConnectionError, DialError,
    IncompatibleKind, MalformedKind, ProtocolViolation, UsageError,
};
pub use source_slots::{SourceSlot, SourceSlots};

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
