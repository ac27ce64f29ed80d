//! One authenticated QUIC connection to a peer: the control stream for the
//! handshake, then the channel streams.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use ed25519_dalek::VerifyingKey;
use p2p_router::transport::{
    Admission, AsyncConnection, CloseReason, MalformedKind, PathStats, UsageError,
};
use p2p_router::{
    ChannelDescriptor, ChannelId, ConnectionError, Endpoint, NodeInfo, Protocol, MAX_NODE_INFO_SIZE,
};
use prost::Message;
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::{mpsc, Mutex as AsyncMutex, OwnedSemaphorePermit};
use tokio_util::task::AbortOnDropHandle;

use crate::codes::CloseCode;
use crate::config::QuicConfig;
use crate::streams::{accept_streams, Channels, StreamErrors};
use p2p_router::wire::{self, put_varint, ReadDelimitedError, WireError, MAX_VARINT_LEN};

/// A connection of the QUIC transport.
pub struct QuicConnection {
    conn: quinn::Connection,
    peer_key: VerifyingKey,
    dialer: bool,
    /// A dial that resumed an earlier TLS session.
    resumed: bool,
    config: Arc<QuicConfig>,
    control: AsyncMutex<Control>,
    channels: OnceLock<Arc<Channels>>,
    errors: StreamErrors,
    error_rx: AsyncMutex<mpsc::Receiver<ConnectionError>>,
    acceptor: OnceLock<AbortOnDropHandle<()>>,
    /// Counts against the transport's connection limit while we live.
    _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Control {
    send: Option<SendStream>,
    recv: Option<RecvStream>,
}

impl std::fmt::Debug for QuicConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicConnection")
            .field("remote", &self.conn.remote_address())
            .field("dialer", &self.dialer)
            .finish_non_exhaustive()
    }
}

impl QuicConnection {
    pub(crate) fn new(
        conn: quinn::Connection,
        peer_key: VerifyingKey,
        dialer: bool,
        config: Arc<QuicConfig>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let (errors, error_rx) = StreamErrors::new(conn.clone(), config.max_stream_errors);
        Self {
            conn,
            peer_key,
            dialer,
            resumed: false,
            config,
            control: AsyncMutex::default(),
            channels: OnceLock::new(),
            errors,
            error_rx: AsyncMutex::new(error_rx),
            acceptor: OnceLock::new(),
            _permit: permit,
        }
    }

    pub(crate) fn with_resumed(mut self, resumed: bool) -> Self {
        self.resumed = resumed;
        self
    }

    /// Whether this connection, dialed by us, resumed an earlier TLS
    /// session with the peer (see [`SessionCache`](crate::SessionCache));
    /// always false for an accepted connection.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The underlying quinn connection (statistics such as RTT and lost
    /// packets; tests acting as a hostile peer).
    pub fn quinn(&self) -> &quinn::Connection {
        &self.conn
    }

    fn channels(&self) -> Result<&Arc<Channels>, ConnectionError> {
        self.channels
            .get()
            .ok_or(ConnectionError::Usage(UsageError::BeforeHandshake))
    }

    async fn exchange(&self, ours: &NodeInfo) -> Result<NodeInfo, ConnectionError> {
        let encoded = ours.encode_to_vec();
        if encoded.len() > MAX_NODE_INFO_SIZE {
            return Err(ConnectionError::Oversized {
                size: encoded.len() as u64,
                max: MAX_NODE_INFO_SIZE,
            });
        }
        let mut frame = BytesMut::with_capacity(encoded.len() + MAX_VARINT_LEN);
        put_varint(&mut frame, encoded.len() as u64);
        frame.extend_from_slice(&encoded);
        let (mut send, mut recv) = if self.dialer {
            self.conn
                .open_bi()
                .await
                .map_err(|_| ConnectionError::Closed)?
        } else {
            self.conn
                .accept_bi()
                .await
                .map_err(|_| ConnectionError::Closed)?
        };
        let write = async {
            send.write_all(&frame)
                .await
                .map_err(|_| ConnectionError::Closed)?;
            if self.dialer {
                // The dialer has nothing more to say on the control stream.
                let _ = send.finish();
            }
            Ok::<_, ConnectionError>(())
        };
        let (written, theirs) = tokio::join!(write, read_frame(&mut recv, MAX_NODE_INFO_SIZE));
        written?;
        let theirs = theirs.and_then(|frame| {
            NodeInfo::decode(frame).map_err(|_| ConnectionError::Malformed(MalformedKind::NodeInfo))
        });
        let theirs = match theirs {
            Ok(theirs) => theirs,
            Err(ConnectionError::Closed) => return Err(ConnectionError::Closed),
            // A bad control stream breaks the protocol: closed here with
            // 0x10 (PROTOCOL.md §7.1), before the router's own close.
            Err(e) => {
                let code = CloseCode::ProtocolViolation;
                self.conn.close(code.varint(), code.phrase());
                return Err(e);
            }
        };
        *self.control.lock().await = Control {
            send: Some(send),
            recv: Some(recv),
        };
        self.open_channels(ours, &theirs);
        Ok(theirs)
    }

    /// Channels both sides listed; peer streams for others are refused.
    fn open_channels(&self, ours: &NodeInfo, theirs: &NodeInfo) {
        let ours: BTreeSet<u8> = ours.channels.iter().copied().collect();
        let shared: Vec<ChannelId> = theirs
            .channels
            .iter()
            .copied()
            .collect::<BTreeSet<u8>>()
            .intersection(&ours)
            .map(|&c| ChannelId(c))
            .collect();
        let streams = self.config.max_uni_streams(shared.len());
        self.conn
            .set_max_concurrent_uni_streams(VarInt::from_u32(streams));
        let channels = Arc::new(Channels::new(
            self.conn.clone(),
            &shared,
            self.errors.clone(),
        ));
        if self.channels.set(channels.clone()).is_ok() {
            let task = accept_streams(
                channels,
                self.config.stream_header_timeout,
                streams as usize,
            );
            let _ = self
                .acceptor
                .set(AbortOnDropHandle::new(tokio::spawn(task)));
        }
    }

    /// Number of channels negotiated (after the handshake).
    pub fn channel_count(&self) -> usize {
        self.channels.get().map_or(0, |c| c.len())
    }
}

/// A control-stream half, which exists only once the handshake opened it.
fn after_handshake<T>(half: Option<&mut T>) -> Result<&mut T, ConnectionError> {
    half.ok_or(ConnectionError::Usage(UsageError::BeforeHandshake))
}

/// Reads one varint-length-delimited frame of at most `max` bytes.
async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Bytes, ConnectionError> {
    wire::read_delimited(recv, max).await.map_err(|e| match e {
        ReadDelimitedError::Wire(WireError::Oversized { size, max }) => {
            ConnectionError::Oversized { size, max }
        }
        ReadDelimitedError::Truncated => ConnectionError::Malformed(MalformedKind::Truncated),
        ReadDelimitedError::Io(_) => ConnectionError::Closed,
        _ => ConnectionError::Malformed(MalformedKind::Length),
    })
}

impl AsyncConnection for QuicConnection {
    fn remote_endpoint(&self) -> Endpoint {
        Endpoint::ip(Protocol::Quic, self.conn.remote_address())
    }

    fn peer_key(&self) -> VerifyingKey {
        self.peer_key
    }

    async fn handshake(&self, ours: &NodeInfo) -> Result<NodeInfo, ConnectionError> {
        self.exchange(ours).await
    }

    async fn send_admission(&self, admission: Admission) -> Result<(), ConnectionError> {
        let mut control = self.control.lock().await;
        let send = after_handshake(control.send.as_mut())?;
        send.write_all(&[admission.to_byte()])
            .await
            .map_err(|_| ConnectionError::Closed)?;
        let _ = send.finish();
        Ok(())
    }

    async fn recv_admission(&self) -> Result<Admission, ConnectionError> {
        let mut control = self.control.lock().await;
        let recv = after_handshake(control.recv.as_mut())?;
        let byte = tokio::io::AsyncReadExt::read_u8(recv)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    ConnectionError::Malformed(MalformedKind::Truncated)
                }
                _ => ConnectionError::Closed,
            })?;
        Ok(Admission::from_byte(byte))
    }

    async fn send(&self, channel: ChannelId, message: Bytes) -> Result<(), ConnectionError> {
        self.channels()?.send(channel, message).await
    }

    async fn send_batch(
        &self,
        channel: ChannelId,
        messages: Vec<Bytes>,
    ) -> Result<(), ConnectionError> {
        self.channels()?.send_batch(channel, messages).await
    }

    async fn recv(&self, channel: ChannelId, max_size: usize) -> Result<Bytes, ConnectionError> {
        self.channels()?.recv(channel, max_size).await
    }

    async fn recv_batch(
        &self,
        channel: ChannelId,
        max_size: usize,
        limit: usize,
        out: &mut Vec<Bytes>,
    ) -> Result<(), ConnectionError> {
        self.channels()?
            .recv_batch(channel, max_size, limit, out)
            .await
    }

    async fn close(&self, reason: CloseReason) {
        let control = self.control.try_lock().ok().and_then(|mut c| c.send.take());
        if let Some(channels) = self.channels.get() {
            channels
                .drain(control, self.config.close_drain_timeout)
                .await;
        } else if let Some(mut control) = control {
            let _ = control.finish();
            let _ = tokio::time::timeout(self.config.close_drain_timeout, control.stopped()).await;
        }
        let code = CloseCode::from(reason);
        self.conn.close(code.varint(), code.phrase());
    }

    async fn closed(&self) {
        self.conn.closed().await;
    }

    fn prepare_channel(&self, channel: &ChannelDescriptor) {
        if let Some(channels) = self.channels.get() {
            channels.set_priority(channel.id, channel.priority);
        }
    }

    async fn next_started_channel(&self) -> Option<ChannelId> {
        match self.channels.get() {
            Some(channels) => Some(channels.next_started().await),
            // Not negotiated yet: nothing to wait for.
            None => None,
        }
    }

    async fn next_stream_error(&self) -> ConnectionError {
        let mut rx = self.error_rx.lock().await;
        match rx.recv().await {
            Some(error) => error,
            // The sender lives as long as we do; never reached.
            None => std::future::pending().await,
        }
    }

    fn path_stats(&self) -> Option<PathStats> {
        let stats = self.conn.stats();
        Some(PathStats::new(
            self.conn.rtt(),
            stats.path.sent_packets,
            stats.path.lost_packets,
        ))
    }
}
