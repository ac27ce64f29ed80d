//! One MConnection: the `NodeInfo` exchange on the SecretConnection, then
//! a writer task that interleaves the channels' messages as packets
//! (Tendermint's scheduling) and a reader task that reassembles them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use p2p_router::transport::{
    Admission, AsyncConnection, CloseReason, MalformedKind, ProtocolViolation, UsageError,
};
use p2p_router::{
    ChannelDescriptor, ChannelId, ConnectionError, Endpoint, NodeInfo, Protocol, MAX_NODE_INFO_SIZE,
};
use prost::Message;
use tokio::io::BufReader;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, Mutex as AsyncMutex, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::config::MconnConfig;
use p2p_router::wire::WireError;

use crate::proto::{self, packet, Packet};
use crate::rate::RateLimit;
use crate::reassembly::Reassembly;
use crate::scheduler::{Lane, Scheduler, Step};
use crate::secret::{ReadError, SecretError, SecretReader, SecretWriter};

pub(crate) type Reader = SecretReader<BufReader<OwnedReadHalf>>;
pub(crate) type Writer = SecretWriter<OwnedWriteHalf>;

/// A connection of the MConnection transport.
pub struct MconnConnection {
    remote: SocketAddr,
    peer_key: VerifyingKey,
    config: Arc<MconnConfig>,
    halves: AsyncMutex<Option<(Reader, Writer)>>,
    channels: OnceLock<Arc<Channels>>,
    shared: Arc<ConnShared>,
    tasks: Mutex<Vec<AbortOnDropHandle<()>>>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for MconnConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MconnConnection")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// State shared by the connection handle and its two tasks.
#[derive(Default)]
struct ConnShared {
    /// The connection is over.
    closed: CancellationToken,
    /// A local close was asked for: the writer sends what is queued, then
    /// ends.
    closing: CancellationToken,
    /// The writer has ended.
    writer_done: CancellationToken,
    /// The protocol violation that ended the connection, until reported.
    failure: Mutex<Option<ProtocolViolation>>,
    wake_writer: Notify,
    pong_requested: AtomicBool,
    /// Any packet arrived since our last ping.
    heard_from_peer: AtomicBool,
}

impl ConnShared {
    fn fail(&self, reason: ProtocolViolation) {
        tracing::debug!(%reason, "mconn failed");
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert(reason);
        drop(failure);
        self.closed.cancel();
    }

    /// The error a call on a closed connection returns: the violation once
    /// (so the peer is reported once), `Closed` after.
    fn closed_error(&self) -> ConnectionError {
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(reason) => ConnectionError::Protocol(reason),
            None => ConnectionError::Closed,
        }
    }
}

struct Channels {
    map: HashMap<ChannelId, ChannelState>,
}

struct ChannelState {
    send_tx: mpsc::Sender<Bytes>,
    send_rx: Mutex<Option<mpsc::Receiver<Bytes>>>,
    recv_tx: mpsc::Sender<Bytes>,
    recv_rx: AsyncMutex<mpsc::Receiver<Bytes>>,
    priority: Arc<AtomicU8>,
    max_size: AtomicUsize,
}

impl Channels {
    fn get(&self, id: ChannelId) -> Result<&ChannelState, ConnectionError> {
        self.map
            .get(&id)
            .ok_or(ConnectionError::UnexpectedChannel(id))
    }
}

impl MconnConnection {
    pub(crate) fn new(
        remote: SocketAddr,
        peer_key: VerifyingKey,
        reader: Reader,
        writer: Writer,
        config: Arc<MconnConfig>,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            remote,
            peer_key,
            config,
            halves: AsyncMutex::new(Some((reader, writer))),
            channels: OnceLock::new(),
            shared: Arc::default(),
            tasks: Mutex::default(),
            _permit: permit,
        }
    }

    fn channels(&self) -> Result<&Arc<Channels>, ConnectionError> {
        self.channels
            .get()
            .ok_or(ConnectionError::Usage(UsageError::BeforeHandshake))
    }

    async fn exchange(&self, ours: &NodeInfo) -> Result<NodeInfo, ConnectionError> {
        let mut halves = self.halves.lock().await;
        let (reader, writer) = halves.as_mut().ok_or(ConnectionError::Closed)?;
        let (sent, theirs) = tokio::join!(
            writer.write_delimited(ours),
            reader.read_delimited(MAX_NODE_INFO_SIZE)
        );
        sent.map_err(secret_error)?;
        let theirs = theirs.map_err(|e| match e {
            ReadError::Secret(e) => secret_error(e),
            ReadError::Delimited(WireError::Oversized { size, max }) => {
                ConnectionError::Oversized { size, max }
            }
            ReadError::Delimited(_) => ConnectionError::Malformed(MalformedKind::Length),
        })?;
        let theirs = NodeInfo::decode(theirs)
            .map_err(|_| ConnectionError::Malformed(MalformedKind::NodeInfo))?;
        let Some((reader, writer)) = halves.take() else {
            return Err(ConnectionError::Closed);
        };
        self.start(ours, &theirs, reader, writer);
        Ok(theirs)
    }

    /// Starts the reader and writer on the channels both sides listed.
    fn start(&self, ours: &NodeInfo, theirs: &NodeInfo, reader: Reader, writer: Writer) {
        let mut map = HashMap::new();
        for &id in &ours.channels {
            if !theirs.channels.contains(&id) {
                continue;
            }
            let (send_tx, send_rx) = mpsc::channel(self.config.send_queue_capacity);
            let (recv_tx, recv_rx) = mpsc::channel(self.config.recv_queue_capacity);
            map.insert(
                ChannelId(id),
                ChannelState {
                    send_tx,
                    send_rx: Mutex::new(Some(send_rx)),
                    recv_tx,
                    recv_rx: AsyncMutex::new(recv_rx),
                    priority: Arc::new(AtomicU8::new(1)),
                    max_size: AtomicUsize::new(self.config.max_message_size),
                },
            );
        }
        let channels = Arc::new(Channels { map });
        if self.channels.set(channels.clone()).is_err() {
            return;
        }
        let span = tracing::debug_span!("mconn", remote = %self.remote);
        let (shared, config) = (self.shared.clone(), self.config.clone());
        let read = {
            let (shared, channels, config) = (shared.clone(), channels.clone(), config.clone());
            async move {
                let result = tokio::select! {
                    r = read_loop(reader, &channels, &shared, &config) => r,
                    () = shared.closed.cancelled() => Ok(()),
                };
                match result {
                    Ok(()) => shared.closed.cancel(),
                    Err(reason) => shared.fail(reason),
                }
            }
        };
        let write = async move {
            let mut lanes = Vec::new();
            let mut queues = Vec::new();
            for (&id, c) in &channels.map {
                let Some(rx) = c.send_rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
                    continue;
                };
                lanes.push(Lane::new(id, c.priority.clone()));
                queues.push(rx);
            }
            let scheduler = Scheduler::new(&config, lanes, Instant::now());
            let result = write_loop(writer, scheduler, queues, &shared).await;
            shared.writer_done.cancel();
            // Nothing the writer meets is the peer's fault (socket errors,
            // a silent peer): the connection just ends.
            if let Err(reason) = result {
                tracing::debug!(%reason, "mconn writer stopped");
            }
            shared.closed.cancel();
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.push(AbortOnDropHandle::new(tokio::spawn(
            read.instrument(span.clone()),
        )));
        tasks.push(AbortOnDropHandle::new(tokio::spawn(write.instrument(span))));
    }
}

fn secret_error(e: SecretError) -> ConnectionError {
    match e.violation() {
        None => ConnectionError::Closed,
        Some(violation) => ConnectionError::Protocol(violation),
    }
}

async fn flush(writer: &mut Writer) -> Result<(), String> {
    writer.flush().await.map_err(|e| format!("write: {e}"))
}

/// The writer's IO: moves queued messages into the scheduler, carries out
/// its steps, and sleeps until its next deadline or an event. Every
/// decision is the scheduler's (`scheduler.rs`).
async fn write_loop(
    mut writer: Writer,
    mut scheduler: Scheduler,
    mut queues: Vec<mpsc::Receiver<Bytes>>,
    shared: &ConnShared,
) -> Result<(), String> {
    let mut steps = Vec::new();
    // Moves each free lane's next queued message into the scheduler.
    let refill = |scheduler: &mut Scheduler, queues: &mut Vec<mpsc::Receiver<Bytes>>| {
        for (i, rx) in queues.iter_mut().enumerate() {
            if scheduler.wants(i) {
                if let Ok(message) = rx.try_recv() {
                    scheduler.offer(i, message);
                }
            }
        }
    };
    loop {
        refill(&mut scheduler, &mut queues);
        if shared.pong_requested.swap(false, Ordering::AcqRel) {
            scheduler.pong_requested();
        }
        // v0.34 peers answer with a pong, v0.35 ones may only send
        // something else: any packet proves the peer alive.
        if shared.heard_from_peer.swap(false, Ordering::AcqRel) {
            scheduler.heard_from_peer();
        }
        let now = Instant::now();
        let mut next = |i: usize| queues.get_mut(i).and_then(|rx| rx.try_recv().ok());
        scheduler
            .turn(now, &mut steps, &mut next)
            .map_err(|e| e.to_string())?;
        let sent = !steps.is_empty();
        for step in steps.drain(..) {
            match step {
                Step::Packet(packet) => packet
                    .encode_length_delimited(writer.staged())
                    .map_err(|e| e.to_string())?,
                Step::Ping => {
                    // Only what the peer sends after this ping counts.
                    shared.heard_from_peer.store(false, Ordering::Release);
                    Packet::ping()
                        .encode_length_delimited(writer.staged())
                        .map_err(|e| e.to_string())?;
                }
                Step::Flush => flush(&mut writer).await?,
            }
        }
        if shared.closing.is_cancelled() && !scheduler.pending() {
            flush(&mut writer).await?;
            writer.shutdown().await;
            return Ok(());
        }
        // Messages queued while this round ran need no wake-up: a wake-up
        // only says "something was queued", once for many messages.
        refill(&mut scheduler, &mut queues);
        let wake = scheduler.poll_timeout(now);
        if sent && wake <= now {
            // More is ready at once: let other tasks run between rounds.
            tokio::task::consume_budget().await;
            continue;
        }
        tokio::select! {
            biased;
            () = shared.closed.cancelled() => return Ok(()),
            () = shared.closing.cancelled(), if !shared.closing.is_cancelled() => {}
            () = shared.wake_writer.notified() => {}
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

async fn read_loop(
    mut reader: Reader,
    channels: &Channels,
    shared: &ConnShared,
    config: &MconnConfig,
) -> Result<(), ProtocolViolation> {
    let max_packet = proto::max_packet_size(config.max_packet_payload);
    let mut rate = RateLimit::new(config.recv_rate);
    let mut reassembly = Reassembly::default();
    loop {
        let delay = rate.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let body = match reader.read_delimited(max_packet).await {
            Ok(body) => body,
            Err(ReadError::Secret(e)) => match e.violation() {
                None => return Ok(()),
                Some(violation) => return Err(violation),
            },
            Err(ReadError::Delimited(_)) => return Err(ProtocolViolation::PacketLength),
        };
        rate.spend(body.len());
        shared.heard_from_peer.store(true, Ordering::Release);
        let packet = Packet::decode(body).map_err(|_| ProtocolViolation::UndecodablePacket)?;
        match packet.sum {
            Some(packet::Sum::PacketPing(_)) => {
                shared.pong_requested.store(true, Ordering::Release);
                shared.wake_writer.notify_one();
            }
            Some(packet::Sum::PacketPong(_)) => {}
            Some(packet::Sum::PacketMsg(msg)) => {
                let max_size = |id: ChannelId| {
                    let channel = channels.map.get(&id)?;
                    Some(channel.max_size.load(Ordering::Relaxed))
                };
                let Some((id, message)) = reassembly.push(msg, max_size)? else {
                    continue;
                };
                // A full queue stops this loop, and with it every channel
                // of the connection: one TCP stream has one flow control.
                let Some(channel) = channels.map.get(&id) else {
                    continue;
                };
                if channel.recv_tx.send(message).await.is_err() {
                    return Ok(());
                }
            }
            None => return Err(ProtocolViolation::UnknownPacketType),
        }
    }
}

impl AsyncConnection for MconnConnection {
    fn remote_endpoint(&self) -> Endpoint {
        Endpoint::ip(Protocol::Mconn, self.remote)
    }

    fn peer_key(&self) -> VerifyingKey {
        self.peer_key
    }

    async fn handshake(&self, ours: &NodeInfo) -> Result<NodeInfo, ConnectionError> {
        self.exchange(ours).await
    }

    /// MConnection has no admission message (Tendermint peers start
    /// sending right after `NodeInfo`): acceptance is implicit and a
    /// refusal is a close.
    async fn send_admission(&self, _admission: Admission) -> Result<(), ConnectionError> {
        async { Ok(()) }.await
    }

    /// Always `Accepted`: a refusing listener closes the connection, which
    /// the dialer then sees as the connection closing.
    async fn recv_admission(&self) -> Result<Admission, ConnectionError> {
        async {
            if self.shared.closed.is_cancelled() {
                return Err(self.shared.closed_error());
            }
            Ok(Admission::Accepted)
        }
        .await
    }

    async fn send(&self, channel: ChannelId, message: Bytes) -> Result<(), ConnectionError> {
        let state = self.channels()?.get(channel)?;
        tokio::select! {
            biased;
            () = self.shared.closed.cancelled() => return Err(ConnectionError::Closed),
            () = self.shared.closing.cancelled() => return Err(ConnectionError::Closed),
            sent = state.send_tx.send(message) => sent.map_err(|_| ConnectionError::Closed)?,
        }
        self.shared.wake_writer.notify_one();
        Ok(())
    }

    async fn recv(&self, channel: ChannelId, max_size: usize) -> Result<Bytes, ConnectionError> {
        let state = self.channels()?.get(channel)?;
        let mut rx = state.recv_rx.lock().await;
        tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(m) if m.len() > max_size => Err(ConnectionError::Oversized {
                    size: m.len() as u64,
                    max: max_size,
                }),
                Some(m) => Ok(m),
                None => Err(self.shared.closed_error()),
            },
            () = self.shared.closed.cancelled() => Err(self.shared.closed_error()),
        }
    }

    async fn close(&self, _reason: CloseReason) {
        // MConnection carries no close reason: the TCP stream just ends.
        self.shared.closing.cancel();
        self.shared.wake_writer.notify_one();
        if self.channels.get().is_some() {
            let _ = tokio::time::timeout(
                self.config.close_drain_timeout,
                self.shared.writer_done.cancelled(),
            )
            .await;
        } else if let Some((_, mut writer)) = self.halves.lock().await.take() {
            writer.shutdown().await;
        }
        self.shared.closed.cancel();
    }

    async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    fn prepare_channel(&self, channel: &ChannelDescriptor) {
        if let Some(state) = self.channels.get().and_then(|c| c.map.get(&channel.id)) {
            state
                .priority
                .store(channel.priority.max(1), Ordering::Relaxed);
            state
                .max_size
                .store(channel.max_message_size, Ordering::Relaxed);
        }
    }
}
