//! The transport contract, in two forms. A transport implements
//! [`AsyncTransport`] and [`AsyncConnection`] with plain `async fn`s; the
//! router stores transports of different types side by side, so it uses
//! the object-safe [`Transport`] and [`Connection`], which every
//! implementation gets from the blanket impls here. The boxing of futures
//! and connections happens in this one place.

use std::future::Future;

use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use futures::future::BoxFuture;

use super::{AcceptError, Admission, CloseReason, ConnectionError, DialError, PathStats};
use crate::address::Protocol;
use crate::channel::{ChannelDescriptor, ChannelId};
use crate::identity::NodeId;
use crate::node_info::NodeInfo;
use crate::resolve::Endpoint;

/// Listens for, accepts and dials connections of one or more protocols.
/// Implement this; the router takes it as a [`Transport`].
pub trait AsyncTransport: Send + Sync + 'static {
    /// The connections this transport makes.
    type Connection: AsyncConnection;

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
    fn accept(&self) -> impl Future<Output = Result<Self::Connection, AcceptError>> + Send;

    /// Dials node `peer` at `endpoint`. A transport that authenticates
    /// peers refuses a peer proving another id ([`DialError::WrongPeer`]).
    /// The caller bounds the time.
    fn dial(
        &self,
        peer: NodeId,
        endpoint: &Endpoint,
    ) -> impl Future<Output = Result<Self::Connection, DialError>> + Send;

    /// Stops listening and makes `accept` return [`AcceptError::Closed`].
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// One connection to one peer. Implement this; the router takes it as a
/// [`Connection`].
///
/// Call order: [`handshake`](Self::handshake); then the accepting side calls
/// [`send_admission`](Self::send_admission) and the dialing side
/// [`recv_admission`](Self::recv_admission); then any number of concurrent
/// [`send`](Self::send)/[`recv`](Self::recv) calls, at most one of each per
/// channel at a time; finally [`close`](Self::close).
pub trait AsyncConnection: Send + Sync + 'static {
    /// The remote end.
    fn remote_endpoint(&self) -> Endpoint;

    /// The peer's ed25519 key, as authenticated by the transport (TLS
    /// certificate, SecretConnection signature, or the memory hub).
    fn peer_key(&self) -> VerifyingKey;

    /// Sends our `NodeInfo` and receives the peer's, concurrently.
    fn handshake(
        &self,
        ours: &NodeInfo,
    ) -> impl Future<Output = Result<NodeInfo, ConnectionError>> + Send;

    /// Accepting side: tells the dialer whether it was admitted.
    fn send_admission(
        &self,
        admission: Admission,
    ) -> impl Future<Output = Result<(), ConnectionError>> + Send;

    /// Dialing side: waits for the accepting side's decision.
    fn recv_admission(&self) -> impl Future<Output = Result<Admission, ConnectionError>> + Send;

    /// Sends one encoded message on `channel`, waiting for that channel's
    /// credit (this wait is the backpressure).
    ///
    /// Not cancel safe for the message being sent: a cancelled send may or
    /// may not deliver it, but never delivers it truncated.
    fn send(
        &self,
        channel: ChannelId,
        message: Bytes,
    ) -> impl Future<Output = Result<(), ConnectionError>> + Send;

    /// Sends several encoded messages on `channel`, in order, as
    /// [`send`](Self::send) would one by one; transports override it to
    /// write them in one go. On error some of them may have been sent.
    fn send_batch(
        &self,
        channel: ChannelId,
        messages: Vec<Bytes>,
    ) -> impl Future<Output = Result<(), ConnectionError>> + Send {
        async move {
            for message in messages {
                self.send(channel, message).await?;
            }
            Ok(())
        }
    }

    /// Receives the next message on `channel`, refusing one larger than
    /// `max_size` before reading it into memory. An error that concerns one
    /// stream ([`ConnectionError::is_stream_error`]) leaves the connection
    /// and other channels working.
    fn recv(
        &self,
        channel: ChannelId,
        max_size: usize,
    ) -> impl Future<Output = Result<Bytes, ConnectionError>> + Send;

    /// Receives the messages of `channel` that are already here into `out`:
    /// at least one, at most `limit`, waiting only for the first. Frames
    /// over `max_size` are refused as [`recv`](Self::recv) refuses them; an
    /// error met after some messages were taken is returned by the next
    /// call. Transports override it to take a buffer's worth in one call;
    /// the default receives one message.
    fn recv_batch(
        &self,
        channel: ChannelId,
        max_size: usize,
        limit: usize,
        out: &mut Vec<Bytes>,
    ) -> impl Future<Output = Result<(), ConnectionError>> + Send {
        let _ = limit;
        async move {
            out.push(self.recv(channel, max_size).await?);
            Ok(())
        }
    }

    /// Closes the connection; the peer sees the reason where the transport
    /// can carry one.
    fn close(&self, reason: CloseReason) -> impl Future<Output = ()> + Send;

    /// Resolves once the connection is closed, by either side.
    fn closed(&self) -> impl Future<Output = ()> + Send;

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
    fn next_started_channel(&self) -> impl Future<Output = Option<ChannelId>> + Send {
        std::future::ready(None)
    }

    /// Waits for the next stream-level misbehaviour the transport detected
    /// outside any [`recv`](Self::recv) call (for example, a stream opened
    /// for a channel the peer did not negotiate). The stream is already
    /// reset; the router reports the error against the peer and keeps the
    /// connection. Transports without such errors never resolve (the
    /// default).
    fn next_stream_error(&self) -> impl Future<Output = ConnectionError> + Send {
        std::future::pending()
    }

    /// The path's round-trip time and packet counts, for metrics, when the
    /// transport measures them (QUIC does; the default reports nothing).
    fn path_stats(&self) -> Option<PathStats> {
        None
    }
}

/// [`AsyncTransport`] in object-safe form, for `Arc<dyn Transport>`; every
/// `AsyncTransport` is one. Each method is the `AsyncTransport` method of
/// the same name, its future and connection boxed.
#[allow(missing_docs)]
pub trait Transport: Send + Sync + 'static {
    fn protocols(&self) -> Vec<Protocol>;
    fn listen_endpoints(&self) -> Vec<Endpoint>;
    fn accept(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, AcceptError>>;
    fn dial<'a>(
        &'a self,
        peer: NodeId,
        endpoint: &'a Endpoint,
    ) -> BoxFuture<'a, Result<Box<dyn Connection>, DialError>>;
    fn close(&self) -> BoxFuture<'_, ()>;
}

impl<T: AsyncTransport> Transport for T {
    fn protocols(&self) -> Vec<Protocol> {
        AsyncTransport::protocols(self)
    }
    fn listen_endpoints(&self) -> Vec<Endpoint> {
        AsyncTransport::listen_endpoints(self)
    }
    fn accept(&self) -> BoxFuture<'_, Result<Box<dyn Connection>, AcceptError>> {
        Box::pin(async move { Ok(boxed(AsyncTransport::accept(self).await?)) })
    }
    fn dial<'a>(
        &'a self,
        peer: NodeId,
        endpoint: &'a Endpoint,
    ) -> BoxFuture<'a, Result<Box<dyn Connection>, DialError>> {
        Box::pin(async move { Ok(boxed(AsyncTransport::dial(self, peer, endpoint).await?)) })
    }
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(AsyncTransport::close(self))
    }
}

fn boxed<C: AsyncConnection>(conn: C) -> Box<dyn Connection> {
    Box::new(conn)
}

/// What most [`Connection`] methods return: a boxed future of a result.
pub type ConnectionFuture<'a, T> = BoxFuture<'a, Result<T, ConnectionError>>;

/// [`AsyncConnection`] in object-safe form, for `Box<dyn Connection>`;
/// every `AsyncConnection` is one. Each method is the `AsyncConnection`
/// method of the same name, its future boxed.
#[allow(missing_docs)]
pub trait Connection: Send + Sync + 'static {
    fn remote_endpoint(&self) -> Endpoint;
    fn peer_key(&self) -> VerifyingKey;
    fn handshake<'a>(&'a self, ours: &'a NodeInfo) -> ConnectionFuture<'a, NodeInfo>;
    fn send_admission(&self, admission: Admission) -> ConnectionFuture<'_, ()>;
    fn recv_admission(&self) -> ConnectionFuture<'_, Admission>;
    fn send(&self, channel: ChannelId, message: Bytes) -> ConnectionFuture<'_, ()>;
    fn send_batch(&self, channel: ChannelId, messages: Vec<Bytes>) -> ConnectionFuture<'_, ()>;
    fn recv(&self, channel: ChannelId, max_size: usize) -> ConnectionFuture<'_, Bytes>;
    fn recv_batch<'a>(
        &'a self,
        channel: ChannelId,
        max_size: usize,
        limit: usize,
        out: &'a mut Vec<Bytes>,
    ) -> ConnectionFuture<'a, ()>;
    fn close(&self, reason: CloseReason) -> BoxFuture<'_, ()>;
    fn closed(&self) -> BoxFuture<'_, ()>;
    fn prepare_channel(&self, channel: &ChannelDescriptor);
    fn next_started_channel(&self) -> BoxFuture<'_, Option<ChannelId>>;
    fn next_stream_error(&self) -> BoxFuture<'_, ConnectionError>;
    fn path_stats(&self) -> Option<PathStats>;
}

impl<C: AsyncConnection> Connection for C {
    fn remote_endpoint(&self) -> Endpoint {
        AsyncConnection::remote_endpoint(self)
    }
    fn peer_key(&self) -> VerifyingKey {
        AsyncConnection::peer_key(self)
    }
    fn handshake<'a>(&'a self, ours: &'a NodeInfo) -> ConnectionFuture<'a, NodeInfo> {
        Box::pin(AsyncConnection::handshake(self, ours))
    }
    fn send_admission(&self, admission: Admission) -> ConnectionFuture<'_, ()> {
        Box::pin(AsyncConnection::send_admission(self, admission))
    }
    fn recv_admission(&self) -> ConnectionFuture<'_, Admission> {
        Box::pin(AsyncConnection::recv_admission(self))
    }
    fn send(&self, channel: ChannelId, message: Bytes) -> ConnectionFuture<'_, ()> {
        Box::pin(AsyncConnection::send(self, channel, message))
    }
    fn send_batch(&self, channel: ChannelId, messages: Vec<Bytes>) -> ConnectionFuture<'_, ()> {
        Box::pin(AsyncConnection::send_batch(self, channel, messages))
    }
    fn recv(&self, channel: ChannelId, max_size: usize) -> ConnectionFuture<'_, Bytes> {
        Box::pin(AsyncConnection::recv(self, channel, max_size))
    }
    fn recv_batch<'a>(
        &'a self,
        channel: ChannelId,
        max_size: usize,
        limit: usize,
        out: &'a mut Vec<Bytes>,
    ) -> ConnectionFuture<'a, ()> {
        Box::pin(AsyncConnection::recv_batch(
            self, channel, max_size, limit, out,
        ))
    }
    fn close(&self, reason: CloseReason) -> BoxFuture<'_, ()> {
        Box::pin(AsyncConnection::close(self, reason))
    }
    fn closed(&self) -> BoxFuture<'_, ()> {
        Box::pin(AsyncConnection::closed(self))
    }
    fn prepare_channel(&self, channel: &ChannelDescriptor) {
        AsyncConnection::prepare_channel(self, channel)
    }
    fn next_started_channel(&self) -> BoxFuture<'_, Option<ChannelId>> {
        Box::pin(AsyncConnection::next_started_channel(self))
    }
    fn next_stream_error(&self) -> BoxFuture<'_, ConnectionError> {
        Box::pin(AsyncConnection::next_stream_error(self))
    }
    fn path_stats(&self) -> Option<PathStats> {
        AsyncConnection::path_stats(self)
    }
}
