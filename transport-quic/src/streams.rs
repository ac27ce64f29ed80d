//! Channel streams: one unidirectional QUIC stream per channel and
//! direction, opened lazily by the sender, named by a header, replaced only
//! by a newer generation after a reset (see `docs/PROTOCOL.md`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use p2p_router::transport::MalformedKind;
use p2p_router::{ChannelId, ConnectionError};
use quinn::{ReadError, ReadExactError, RecvStream, SendStream, WriteError};
use tokio::sync::{mpsc, Mutex as AsyncMutex, Notify};
use tokio::task::JoinSet;

use crate::codes::{CloseCode, StreamCode};
use p2p_router::wire::{put_varint, WireError, MAX_VARINT_LEN};

use crate::framing::{FrameDecoder, StreamHeader};

/// Largest chunk taken from quinn per read.
const READ_CHUNK: usize = 64 * 1024;

/// The channels of one connection and their streams in both directions.
pub(crate) struct Channels {
    map: HashMap<ChannelId, Arc<ChannelStreams>>,
    conn: quinn::Connection,
    errors: StreamErrors,
    /// Cancelled when the connection ends (by the stream acceptor, which
    /// sees it first). Idle channels wait on this rather than each
    /// registering with quinn: it costs less memory per channel.
    closed: tokio_util::sync::CancellationToken,
    /// Channels whose first stream arrived, not yet taken by
    /// `next_started`; each channel enters at most once.
    started: Mutex<Vec<ChannelId>>,
    started_notify: Notify,
}

/// Stream misbehaviour seen on a connection: reported to the router, and
/// the connection closed once there is too much of it.
#[derive(Clone)]
pub(crate) struct StreamErrors {
    tx: mpsc::Sender<ConnectionError>,
    count: Arc<AtomicU32>,
    max: u32,
    conn: quinn::Connection,
}

impl StreamErrors {
    pub(crate) fn new(
        conn: quinn::Connection,
        max: u32,
    ) -> (Self, mpsc::Receiver<ConnectionError>) {
        let (tx, rx) = mpsc::channel(16);
        let errors = Self {
            tx,
            count: Arc::new(AtomicU32::new(0)),
            max,
            conn,
        };
        (errors, rx)
    }

    /// Counts one error; `report` also queues it for `next_stream_error`
    /// (errors returned from `recv` reach the router that way instead).
    fn record(&self, error: ConnectionError, report: bool) {
        tracing::debug!(%error, "bad stream");
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if report {
            // A full queue means the router is behind; the count still
            // closes the connection if this goes on.
            let _ = self.tx.try_send(error);
        }
        if n > self.max {
            let code = CloseCode::TooManyStreamErrors;
            self.conn.close(code.varint(), code.phrase());
        }
    }
}

/// One channel's streams.
pub(crate) struct ChannelStreams {
    id: ChannelId,
    priority: AtomicI32,
    outbound: AsyncMutex<Outbound>,
    /// Streams accepted for this channel, waiting for `recv`.
    waiting: Mutex<Waiting>,
    arrived: Notify,
    inbound: AsyncMutex<Inbound>,
}

#[derive(Default)]
struct Outbound {
    stream: Option<SendStream>,
    /// Generation of the next stream we open.
    next_generation: u64,
}

#[derive(Default)]
struct Waiting {
    /// Highest generation the peer opened so far.
    highest: Option<u64>,
    /// The newest stream not yet being read.
    next: Option<RecvStream>,
}

#[derive(Default)]
struct Inbound {
    stream: Option<RecvStream>,
    decoder: FrameDecoder,
}

impl Channels {
    /// The channels both sides listed in their `NodeInfo`.
    pub(crate) fn new(conn: quinn::Connection, ids: &[ChannelId], errors: StreamErrors) -> Self {
        let map = ids
            .iter()
            .map(|&id| {
                let streams = ChannelStreams {
                    id,
                    priority: AtomicI32::new(0),
                    outbound: AsyncMutex::default(),
                    waiting: Mutex::default(),
                    arrived: Notify::new(),
                    inbound: AsyncMutex::default(),
                };
                (id, Arc::new(streams))
            })
            .collect();
        Self {
            map,
            conn,
            errors,
            closed: tokio_util::sync::CancellationToken::new(),
            started: Mutex::default(),
            started_notify: Notify::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn get(&self, id: ChannelId) -> Result<&Arc<ChannelStreams>, ConnectionError> {
        self.map
            .get(&id)
            .ok_or(ConnectionError::UnexpectedChannel(id))
    }

    pub(crate) fn set_priority(&self, id: ChannelId, priority: u8) {
        if let Some(streams) = self.map.get(&id) {
            streams
                .priority
                .store(i32::from(priority), Ordering::Relaxed);
        }
    }

    /// Sends one message on `id`'s stream, opening it first if needed. If
    /// the peer stopped the stream (it refused an earlier message), the
    /// message is sent once more on a new stream.
    pub(crate) async fn send(&self, id: ChannelId, message: Bytes) -> Result<(), ConnectionError> {
        match self.send_once(id, message.clone()).await {
            Err(ConnectionError::StreamStopped { code }) => {
                tracing::debug!(channel = %id, code, "peer stopped our stream; using a new one");
                self.send_once(id, message).await
            }
            other => other,
        }
    }

    /// Sends several messages on `id`'s stream in one write. Not retried
    /// on a stopped stream: some of them may already have been read.
    pub(crate) async fn send_batch(
        &self,
        id: ChannelId,
        messages: Vec<Bytes>,
    ) -> Result<(), ConnectionError> {
        self.write_messages(id, messages).await
    }

    async fn send_once(&self, id: ChannelId, message: Bytes) -> Result<(), ConnectionError> {
        self.write_messages(id, vec![message]).await
    }

    /// Frames `messages` and writes them on `id`'s stream, opening it
    /// first if needed.
    async fn write_messages(
        &self,
        id: ChannelId,
        messages: Vec<Bytes>,
    ) -> Result<(), ConnectionError> {
        let streams = self.get(id)?;
        let mut outbound = streams.outbound.lock().await;
        let mut header = None;
        if outbound.stream.is_none() {
            let stream = self
                .conn
                .open_uni()
                .await
                .map_err(|_| ConnectionError::Closed)?;
            // Higher channel priority is sent first.
            let _ = stream.set_priority(streams.priority.load(Ordering::Relaxed));
            header = Some(StreamHeader {
                channel: id,
                generation: outbound.next_generation,
            });
            outbound.next_generation += 1;
            outbound.stream = Some(stream);
        }
        let mut chunks = frame_chunks(header, messages);
        let mut sending = Sending {
            outbound: &mut outbound,
            done: false,
        };
        let result = match sending.outbound.stream.as_mut() {
            Some(stream) => stream.write_all_chunks(&mut chunks).await,
            None => return Err(ConnectionError::Closed),
        };
        sending.done = true;
        match result {
            Ok(()) => Ok(()),
            Err(WriteError::Stopped(code)) => {
                // The peer refused this stream; the next message opens a
                // new generation.
                sending.outbound.stream = None;
                Err(ConnectionError::StreamStopped {
                    code: code.into_inner(),
                })
            }
            Err(_) => {
                sending.outbound.stream = None;
                Err(ConnectionError::Closed)
            }
        }
    }

    /// Receives the next message on `id`, refusing frames over `max`.
    pub(crate) async fn recv(&self, id: ChannelId, max: usize) -> Result<Bytes, ConnectionError> {
        let mut out = Vec::with_capacity(1);
        self.recv_batch(id, max, 1, &mut out).await?;
        out.pop().ok_or(ConnectionError::Closed)
    }

    /// Receives into `out` the frames of `id` that are already buffered:
    /// at least one, at most `limit`, waiting only for the first. An error
    /// met after some frames were taken is left for the next call (the
    /// decoder keeps returning it).
    pub(crate) async fn recv_batch(
        &self,
        id: ChannelId,
        max: usize,
        limit: usize,
        out: &mut Vec<Bytes>,
    ) -> Result<(), ConnectionError> {
        let streams = self.get(id)?;
        let mut guard = streams.inbound.lock().await;
        let inbound = &mut *guard;
        let start = out.len();
        loop {
            if inbound.stream.is_none() {
                if out.len() > start {
                    return Ok(());
                }
                inbound.stream = Some(self.next_stream(streams).await?);
                inbound.decoder = FrameDecoder::default();
            }
            let Some(stream) = inbound.stream.as_mut() else {
                continue;
            };
            match inbound.decoder.next_frame(max) {
                Ok(Some(frame)) => {
                    out.push(frame);
                    if out.len() - start >= limit.max(1) {
                        return Ok(());
                    }
                    continue;
                }
                Ok(None) if out.len() > start => return Ok(()),
                Ok(None) => {}
                Err(_) if out.len() > start => return Ok(()),
                Err(e) => {
                    let (code, error) = match e {
                        WireError::Oversized { size, max } => (
                            StreamCode::Oversized,
                            ConnectionError::Oversized { size, max },
                        ),
                        _ => (
                            StreamCode::Malformed,
                            ConnectionError::Malformed(MalformedKind::Length),
                        ),
                    };
                    let _ = stream.stop(code.varint());
                    inbound.stream = None;
                    self.errors.record(error.clone(), false);
                    return Err(error);
                }
            }
            match stream.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => inbound.decoder.push(chunk.bytes),
                Ok(None) => {
                    // FIN. Senders only finish a stream when closing; a
                    // frame cut short by it is an error.
                    let truncated = !inbound.decoder.is_empty();
                    inbound.stream = None;
                    if truncated {
                        let error = ConnectionError::Malformed(MalformedKind::Truncated);
                        self.errors.record(error.clone(), false);
                        return Err(error);
                    }
                }
                // The sender abandoned the stream (a cancelled send): the
                // partial frame is dropped, a newer generation follows.
                Err(ReadError::Reset(_)) => inbound.stream = None,
                Err(_) => return Err(ConnectionError::Closed),
            }
        }
    }

    async fn next_stream(&self, streams: &ChannelStreams) -> Result<RecvStream, ConnectionError> {
        loop {
            let next = lock(&streams.waiting).next.take();
            if let Some(stream) = next {
                return Ok(stream);
            }
            // `notify_one` stores a permit, so an arrival between the check
            // and this wait is not missed.
            tokio::select! {
                () = streams.arrived.notified() => {}
                () = self.closed.cancelled() => return Err(ConnectionError::Closed),
            }
        }
    }

    /// Hands a stream whose header was read to its channel, or refuses it.
    fn arrive(&self, header: StreamHeader, mut stream: RecvStream) {
        let Some(streams) = self.map.get(&header.channel) else {
            let _ = stream.stop(StreamCode::UnknownChannel.varint());
            self.errors
                .record(ConnectionError::UnexpectedChannel(header.channel), true);
            return;
        };
        let mut waiting = lock(&streams.waiting);
        if waiting.highest.is_some_and(|h| header.generation <= h) {
            drop(waiting);
            let _ = stream.stop(StreamCode::DuplicateStream.varint());
            tracing::debug!(channel = %streams.id, generation = header.generation, "duplicate stream");
            self.errors.record(
                ConnectionError::Malformed(MalformedKind::DuplicateStream),
                true,
            );
            return;
        }
        let first = waiting.highest.is_none();
        waiting.highest = Some(header.generation);
        if let Some(mut older) = waiting.next.replace(stream) {
            // Never read: its sender reset it before opening this one.
            let _ = older.stop(StreamCode::Superseded.varint());
        }
        drop(waiting);
        streams.arrived.notify_one();
        if first {
            lock(&self.started).push(header.channel);
            self.started_notify.notify_one();
        }
    }

    /// The next channel whose first stream arrived; pending once the
    /// connection is gone (its end is reported elsewhere).
    pub(crate) async fn next_started(&self) -> ChannelId {
        loop {
            if let Some(id) = lock(&self.started).pop() {
                return id;
            }
            // `notify_one` stores a permit: an arrival between the check
            // and this wait is not missed.
            tokio::select! {
                () = self.started_notify.notified() => {}
                () = self.closed.cancelled() => std::future::pending::<()>().await,
            }
        }
    }

    /// Finishes every idle outbound stream and waits until the peer has
    /// acknowledged their data, or `timeout`.
    pub(crate) async fn drain(&self, extra: Option<SendStream>, timeout: Duration) {
        let mut finished: Vec<SendStream> = extra.into_iter().collect();
        for streams in self.map.values() {
            // A stream busy in a send is left alone: the router cancels its
            // sends before closing, which resets it.
            if let Ok(mut outbound) = streams.outbound.try_lock() {
                if let Some(stream) = outbound.stream.take() {
                    finished.push(stream);
                }
            }
        }
        for stream in &mut finished {
            let _ = stream.finish();
        }
        let acked = futures_join_all(finished.iter().map(|s| s.stopped()));
        let _ = tokio::time::timeout(timeout, acked).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Awaits all futures (quinn's `stopped` futures are independent).
async fn futures_join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) {
    let mut set: Vec<_> = futures.map(Box::pin).collect();
    for f in &mut set {
        f.as_mut().await;
    }
}

/// Messages below this size are copied next to their length prefix into
/// one buffer; larger ones are handed to quinn as they are (no copy). Many
/// tiny chunks cost quinn more per byte than one copy does.
const COPY_BELOW: usize = 4096;

/// The stream header (if the stream is new) and the framed messages, as
/// few chunks as possible.
fn frame_chunks(header: Option<StreamHeader>, messages: Vec<Bytes>) -> Vec<Bytes> {
    let small: usize = messages
        .iter()
        .filter(|m| m.len() < COPY_BELOW)
        .map(|m| m.len() + MAX_VARINT_LEN)
        .sum();
    let mut buf = BytesMut::with_capacity(small + 1 + MAX_VARINT_LEN);
    if let Some(h) = header {
        buf.extend_from_slice(&h.encode());
    }
    let mut chunks = Vec::new();
    for message in messages {
        put_varint(&mut buf, message.len() as u64);
        if message.len() < COPY_BELOW {
            buf.extend_from_slice(&message);
        } else {
            chunks.push(buf.split().freeze());
            chunks.push(message);
        }
    }
    if !buf.is_empty() {
        chunks.push(buf.freeze());
    }
    chunks
}

/// Resets the stream if a send is dropped mid-message: finishing it (what
/// dropping a quinn `SendStream` does) would hand the peer a cut frame.
struct Sending<'a> {
    outbound: &'a mut Outbound,
    done: bool,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Some(mut stream) = self.outbound.stream.take() {
                let _ = stream.reset(StreamCode::Cancelled.varint());
            }
        }
    }
}

/// Accepts the peer's channel streams for the life of the connection:
/// reads each header (in its own task, bounded by the stream limit and a
/// timeout) and hands the stream to its channel.
pub(crate) async fn accept_streams(
    channels: Arc<Channels>,
    header_timeout: Duration,
    max_pending: usize,
) {
    let mut headers = JoinSet::new();
    // However this task ends (connection closed, or the connection handle
    // dropped and this task aborted), the channels learn of it.
    let _closed = channels.closed.clone().drop_guard();
    loop {
        tokio::select! {
            accepted = channels.conn.accept_uni() => {
                let Ok(mut stream) = accepted else { break };
                if headers.len() >= max_pending {
                    let _ = stream.stop(StreamCode::HeaderTimeout.varint());
                    continue;
                }
                let channels = channels.clone();
                headers.spawn(async move {
                    match tokio::time::timeout(header_timeout, read_header(&mut stream)).await {
                        Ok(Ok(header)) => channels.arrive(header, stream),
                        Ok(Err(HeaderError::Malformed)) => {
                            let _ = stream.stop(StreamCode::Malformed.varint());
                            channels.errors.record(
                                ConnectionError::Malformed(MalformedKind::StreamHeader),
                                true,
                            );
                        }
                        Ok(Err(HeaderError::Ended)) => {}
                        Err(_) => {
                            let _ = stream.stop(StreamCode::HeaderTimeout.varint());
                            channels.errors.record(
                                ConnectionError::Malformed(MalformedKind::StreamHeaderTimeout),
                                true,
                            );
                        }
                    }
                });
            }
            Some(_) = headers.join_next() => {}
        }
    }
}

enum HeaderError {
    Malformed,
    /// Reset, finished before a header, or the connection is gone.
    Ended,
}

async fn read_header(stream: &mut RecvStream) -> Result<StreamHeader, HeaderError> {
    // Byte by byte, so no frame bytes are consumed with the header.
    let mut buf = [0u8; 1 + MAX_VARINT_LEN];
    for len in 1..=buf.len() {
        match stream.read_exact(&mut buf[len - 1..len]).await {
            Ok(()) => {}
            Err(ReadExactError::FinishedEarly(_)) => return Err(HeaderError::Malformed),
            Err(_) => return Err(HeaderError::Ended),
        }
        match StreamHeader::decode(&buf[..len]) {
            Ok(Some((header, _))) => return Ok(header),
            Ok(None) => {}
            Err(_) => return Err(HeaderError::Malformed),
        }
    }
    Err(HeaderError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_chunks_decode_back_to_the_messages() {
        let messages: Vec<Bytes> = [3usize, 0, 5000, 100, 70_000, 1]
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8; n]))
            .collect();
        let header = StreamHeader {
            channel: ChannelId(9),
            generation: 2,
        };
        let chunks = frame_chunks(Some(header), messages.clone());
        // Small messages share chunks; the two large ones stand alone.
        assert_eq!(chunks.len(), 5);
        let wire: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let (h, n) = StreamHeader::decode(&wire).unwrap().unwrap();
        assert_eq!(h, header);
        let mut decoder = FrameDecoder::default();
        decoder.push(Bytes::copy_from_slice(&wire[n..]));
        let mut got = Vec::new();
        while let Some(frame) = decoder.next_frame(1 << 20).unwrap() {
            got.push(frame);
        }
        assert_eq!(got, messages);
        assert!(frame_chunks(None, vec![]).is_empty());
    }
}
