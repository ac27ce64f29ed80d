//! A connection between two memory transports.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use p2p_router::transport::{Admission, AsyncConnection, CloseReason, MalformedKind, UsageError};
use p2p_router::{ChannelId, ConnectionError, Endpoint, NodeId, NodeInfo, MAX_NODE_INFO_SIZE};
use prost::Message;
use tokio::sync::{mpsc, Mutex as AsyncMutex};
use tokio_util::sync::CancellationToken;

/// One direction of a connection: a lane per channel, created on first use
/// by either end, plus the handshake messages.
#[derive(Debug)]
struct Direction {
    capacity: usize,
    lanes: Mutex<HashMap<ChannelId, Lane>>,
    /// Encoded `NodeInfo`, then the admission byte; at most one of each.
    control_tx: mpsc::Sender<Bytes>,
    control_rx: AsyncMutex<mpsc::Receiver<Bytes>>,
}

#[derive(Debug, Clone)]
struct Lane {
    tx: mpsc::Sender<Bytes>,
    rx: Arc<AsyncMutex<mpsc::Receiver<Bytes>>>,
}

impl Direction {
    fn new(capacity: usize) -> Arc<Self> {
        let (control_tx, control_rx) = mpsc::channel(2);
        Arc::new(Self {
            capacity,
            lanes: Mutex::new(HashMap::new()),
            control_tx,
            control_rx: AsyncMutex::new(control_rx),
        })
    }

    fn lane(&self, channel: ChannelId) -> Lane {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        lanes
            .entry(channel)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(self.capacity);
                Lane {
                    tx,
                    rx: Arc::new(AsyncMutex::new(rx)),
                }
            })
            .clone()
    }
}

/// One end of an in-memory connection.
#[derive(Debug, Clone)]
pub struct MemoryConnection {
    local: NodeId,
    remote: NodeId,
    remote_key: VerifyingKey,
    outbound: Arc<Direction>,
    inbound: Arc<Direction>,
    latency: Duration,
    /// Shared by both ends: closing either closes both.
    closed: CancellationToken,
    /// Set once this end's handshake completed: channels before it are a
    /// usage error, as on every transport.
    handshaken: Arc<AtomicBool>,
}

impl MemoryConnection {
    pub(crate) fn pair(
        (a, a_key): (NodeId, VerifyingKey),
        (b, b_key): (NodeId, VerifyingKey),
        capacity: usize,
        latency: Duration,
    ) -> (Self, Self) {
        let a_to_b = Direction::new(capacity);
        let b_to_a = Direction::new(capacity);
        let closed = CancellationToken::new();
        let ours = Self {
            local: a,
            remote: b,
            remote_key: b_key,
            outbound: a_to_b.clone(),
            inbound: b_to_a.clone(),
            latency,
            closed: closed.clone(),
            handshaken: Arc::default(),
        };
        let theirs = Self {
            local: b,
            remote: a,
            remote_key: a_key,
            outbound: b_to_a,
            inbound: a_to_b,
            latency,
            closed,
            handshaken: Arc::default(),
        };
        (ours, theirs)
    }

    fn ready(&self) -> Result<(), ConnectionError> {
        if self.handshaken.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(ConnectionError::Usage(UsageError::BeforeHandshake))
        }
    }

    /// The node at our end.
    pub fn local_id(&self) -> NodeId {
        self.local
    }

    /// Sends arbitrary bytes as the handshake message (to test how a peer
    /// sending garbage is handled).
    pub async fn send_raw_handshake(&self, bytes: Bytes) -> Result<(), ConnectionError> {
        self.send_control(bytes).await
    }

    /// Drops the connection abruptly, as a network failure would.
    pub fn kill(&self) {
        self.closed.cancel();
    }

    async fn send_control(&self, bytes: Bytes) -> Result<(), ConnectionError> {
        tokio::select! {
            () = self.closed.cancelled() => Err(ConnectionError::Closed),
            r = self.outbound.control_tx.send(bytes) => r.map_err(|_| ConnectionError::Closed),
        }
    }

    /// Receives the next raw handshake message (the peer's encoded
    /// `NodeInfo`, then its one-byte admission), for tests acting as a peer.
    pub async fn recv_raw_control(&self) -> Result<Bytes, ConnectionError> {
        self.recv_control().await
    }

    async fn recv_control(&self) -> Result<Bytes, ConnectionError> {
        let mut rx = self.inbound.control_rx.lock().await;
        // Messages sent before a close are still delivered, as a graceful
        // close of a real transport would.
        tokio::select! {
            biased;
            m = rx.recv() => m.ok_or(ConnectionError::Closed),
            () = self.closed.cancelled() => Err(ConnectionError::Closed),
        }
    }
}

impl AsyncConnection for MemoryConnection {
    fn remote_endpoint(&self) -> Endpoint {
        Endpoint::memory(self.remote)
    }

    fn peer_key(&self) -> VerifyingKey {
        self.remote_key
    }

    async fn handshake(&self, ours: &NodeInfo) -> Result<NodeInfo, ConnectionError> {
        let (sent, theirs) = tokio::join!(
            self.send_control(Bytes::from(ours.encode_to_vec())),
            self.recv_control()
        );
        sent?;
        let theirs = theirs?;
        // The same bound as on the wire transports.
        if theirs.len() > MAX_NODE_INFO_SIZE {
            return Err(ConnectionError::Oversized {
                size: theirs.len() as u64,
                max: MAX_NODE_INFO_SIZE,
            });
        }
        let info = NodeInfo::decode(theirs)
            .map_err(|_| ConnectionError::Malformed(MalformedKind::NodeInfo))?;
        self.handshaken.store(true, Ordering::Release);
        Ok(info)
    }

    async fn send_admission(&self, admission: Admission) -> Result<(), ConnectionError> {
        self.send_control(Bytes::copy_from_slice(&[admission.to_byte()]))
            .await
    }

    async fn recv_admission(&self) -> Result<Admission, ConnectionError> {
        let bytes = self.recv_control().await?;
        match bytes.as_ref() {
            [b] => Ok(Admission::from_byte(*b)),
            _ => Err(ConnectionError::Malformed(MalformedKind::Admission)),
        }
    }

    async fn send(&self, channel: ChannelId, message: Bytes) -> Result<(), ConnectionError> {
        self.ready()?;
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let lane = self.outbound.lane(channel);
        tokio::select! {
            biased;
            () = self.closed.cancelled() => Err(ConnectionError::Closed),
            r = lane.tx.send(message) => r.map_err(|_| ConnectionError::Closed),
        }
    }

    async fn recv(&self, channel: ChannelId, max_size: usize) -> Result<Bytes, ConnectionError> {
        self.ready()?;
        let lane = self.inbound.lane(channel);
        let mut rx = lane.rx.lock().await;
        let message = tokio::select! {
            biased;
            m = rx.recv() => m.ok_or(ConnectionError::Closed)?,
            () = self.closed.cancelled() => return Err(ConnectionError::Closed),
        };
        if message.len() > max_size {
            return Err(ConnectionError::Oversized {
                size: message.len() as u64,
                max: max_size,
            });
        }
        Ok(message)
    }

    async fn close(&self, _reason: CloseReason) {
        self.closed.cancel()
    }

    async fn closed(&self) {
        self.closed.cancelled().await
    }
}
