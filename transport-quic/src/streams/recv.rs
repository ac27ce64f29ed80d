//! Reading a channel's messages: frames from the current stream, moving to
//! a newer generation when one arrives, refusing what breaks the rules.

use bytes::Bytes;
use p2p_router::transport::MalformedKind;
use p2p_router::{ChannelId, ConnectionError};
use quinn::{ReadError, RecvStream};

use crate::codes::StreamCode;
use p2p_router::wire::WireError;

use super::*;
use crate::framing::FrameDecoder;

impl Channels {
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
}
