//! Writing a channel's messages: the stream opened lazily with its header,
//! frames batched into few writes, a cancelled send resetting the stream.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use p2p_router::{ChannelId, ConnectionError};
use quinn::WriteError;

use crate::codes::StreamCode;
use p2p_router::wire::{put_varint, MAX_VARINT_LEN};

use super::*;
use crate::framing::StreamHeader;

impl Channels {
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use p2p_router::ChannelId;

    use super::frame_chunks;
    use crate::framing::{FrameDecoder, StreamHeader};

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
