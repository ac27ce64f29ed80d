//! Channel streams: one unidirectional QUIC stream per channel and
//! direction, opened lazily by the sender, named by a header, replaced only
//! by a newer generation after a reset (see `docs/PROTOCOL.md`).
//!
//! This file holds the registry of a connection's channels; `send.rs`
//! writes frames, `recv.rs` reads them, `accept.rs` takes the peer's new
//! streams and their headers, `errors.rs` counts stream misbehaviour.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2p_router::{ChannelId, ConnectionError};
use quinn::{RecvStream, SendStream};
use tokio::sync::{Mutex as AsyncMutex, Notify};

use crate::framing::FrameDecoder;

mod accept;
mod errors;
mod recv;
mod send;

pub(crate) use accept::accept_streams;
pub(crate) use errors::StreamErrors;

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
