//! Taking the peer's new streams: reading each header within its deadline
//! and handing the stream to its channel (or refusing it).

use std::sync::Arc;
use std::time::Duration;

use p2p_router::transport::MalformedKind;
use p2p_router::ConnectionError;
use quinn::{ReadExactError, RecvStream};
use tokio::task::JoinSet;

use crate::codes::StreamCode;
use p2p_router::wire::MAX_VARINT_LEN;

use super::*;
use crate::framing::StreamHeader;

impl Channels {
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
