//! Byte formats carried on QUIC streams: varints, the channel stream header
//! and length-delimited frames (see `docs/PROTOCOL.md`).
//!
//! Everything here is pure, so hostile input can be tested without a
//! network: decoding never allocates more than the caller's limit.

use bytes::{Buf, Bytes, BytesMut};
use p2p_router::ChannelId;

/// Longest encoding of a `u64` varint.
pub(crate) const MAX_VARINT_LEN: usize = 10;

/// Why bytes on a stream do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// A varint longer than ten bytes or above `u64::MAX`.
    #[error("malformed varint")]
    Varint,
    /// A frame longer than the limit.
    #[error("frame of {size} bytes exceeds the maximum {max}")]
    Oversized { size: u64, max: usize },
}

/// Appends `value` as an unsigned LEB128 varint (protobuf's encoding).
pub(crate) fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.extend_from_slice(&[(value as u8) | 0x80]);
        value >>= 7;
    }
    out.extend_from_slice(&[value as u8]);
}

/// Decodes a varint at the start of `buf`: `Ok(None)` when more bytes are
/// needed, otherwise the value and its encoded length.
pub(crate) fn get_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        let bits = u64::from(byte & 0x7f);
        // The tenth byte may only carry the top bit of a u64.
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(FrameError::Varint);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        Err(FrameError::Varint)
    } else {
        Ok(None)
    }
}

/// The header that starts every channel stream: the channel id, then the
/// stream's generation (0 for a channel's first stream, one more for each
/// stream that replaces a reset one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamHeader {
    pub(crate) channel: ChannelId,
    pub(crate) generation: u64,
}

impl StreamHeader {
    pub(crate) fn encode(self) -> Bytes {
        let mut out = BytesMut::with_capacity(1 + MAX_VARINT_LEN);
        out.extend_from_slice(&[self.channel.0]);
        put_varint(&mut out, self.generation);
        out.freeze()
    }

    /// Parses a header at the start of `buf`: `Ok(None)` when incomplete.
    pub(crate) fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, FrameError> {
        let Some((&channel, rest)) = buf.split_first() else {
            return Ok(None);
        };
        Ok(get_varint(rest)?.map(|(generation, n)| {
            (
                Self {
                    channel: ChannelId(channel),
                    generation,
                },
                1 + n,
            )
        }))
    }
}

/// The length prefix for a frame of `len` bytes.
#[cfg(test)]
pub(crate) fn frame_prefix(len: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(MAX_VARINT_LEN);
    put_varint(&mut out, len as u64);
    out.freeze()
}

/// Splits a byte stream into length-delimited frames.
///
/// Chunks are kept as received while whole frames can be sliced out of them
/// (no copy); only a frame split across chunks is assembled, in a buffer
/// reserved after its length passed the limit check.
#[derive(Debug, Default)]
pub(crate) struct FrameDecoder {
    /// The received chunk being parsed, when nothing is being assembled.
    chunk: Bytes,
    /// A frame split across chunks: its prefix and body so far.
    partial: BytesMut,
}

impl FrameDecoder {
    /// Whether no bytes are buffered (a stream may end here cleanly).
    pub(crate) fn is_empty(&self) -> bool {
        self.chunk.is_empty() && self.partial.is_empty()
    }

    /// Adds received bytes. Call only after [`next_frame`](Self::next_frame)
    /// returned `Ok(None)`.
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if self.partial.is_empty() && self.chunk.is_empty() {
            self.chunk = bytes;
        } else {
            // `next_frame` moved any unparsed chunk bytes into `partial`.
            self.partial.extend_from_slice(&bytes);
        }
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub(crate) fn next_frame(&mut self, max: usize) -> Result<Option<Bytes>, FrameError> {
        if self.partial.is_empty() {
            match Self::split(&self.chunk, max)? {
                Some((start, end)) => {
                    let frame = self.chunk.slice(start..end);
                    self.chunk.advance(end);
                    return Ok(Some(frame));
                }
                None => {
                    if self.chunk.is_empty() {
                        return Ok(None);
                    }
                    // Only a prefix or part of a frame is left: assemble it.
                    // The length (if known) passed the check, so this
                    // reservation is bounded by `max`.
                    let want = Self::split_len(&self.chunk)?.unwrap_or(0);
                    self.partial.reserve(want.min(max + MAX_VARINT_LEN));
                    self.partial.extend_from_slice(&self.chunk);
                    self.chunk = Bytes::new();
                    return Ok(None);
                }
            }
        }
        match Self::split(&self.partial, max)? {
            Some((start, end)) => {
                let mut frame = self.partial.split_to(end);
                frame.advance(start);
                // Whatever followed the frame is parsed from a chunk again.
                self.chunk = self.partial.split().freeze();
                Ok(Some(frame.freeze()))
            }
            None => {
                if let Some(want) = Self::split_len(&self.partial)? {
                    self.partial
                        .reserve(want.saturating_sub(self.partial.len()));
                }
                Ok(None)
            }
        }
    }

    /// The total length (prefix and body) of the frame at the start of
    /// `buf`, if the prefix is complete.
    fn split_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
        Ok(get_varint(buf)?.map(|(len, n)| n.saturating_add(len as usize)))
    }

    /// The body range of a complete frame at the start of `buf`.
    fn split(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, FrameError> {
        let Some((len, n)) = get_varint(buf)? else {
            return Ok(None);
        };
        if len > max as u64 {
            return Err(FrameError::Oversized { size: len, max });
        }
        let end = n + len as usize;
        Ok((buf.len() >= end).then_some((n, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(v: u64) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_varint(&mut out, v);
        out.to_vec()
    }

    #[test]
    fn varints_match_protobuf() {
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(127), [0x7f]);
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(1 << 40), [0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
        assert_eq!(varint(u64::MAX).len(), 10);
        for v in [0, 1, 127, 128, 300, 1 << 40, u64::MAX] {
            assert_eq!(get_varint(&varint(v)), Ok(Some((v, varint(v).len()))));
        }
    }

    #[test]
    fn bad_varints_are_refused() {
        assert_eq!(get_varint(&[0xff; 10]), Err(FrameError::Varint));
        // Eleven bytes would be needed: over u64.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(get_varint(&over), Err(FrameError::Varint));
        assert_eq!(get_varint(&[0x80, 0x80]), Ok(None));
        assert_eq!(get_varint(&[]), Ok(None));
    }

    #[test]
    fn header_round_trips() {
        let h = StreamHeader {
            channel: ChannelId(32),
            generation: 0,
        };
        assert_eq!(h.encode().as_ref(), [0x20, 0x00]);
        assert_eq!(StreamHeader::decode(&h.encode()), Ok(Some((h, 2))));
        let h = StreamHeader {
            channel: ChannelId(7),
            generation: 300,
        };
        assert_eq!(StreamHeader::decode(&h.encode()), Ok(Some((h, 3))));
        assert_eq!(StreamHeader::decode(&[7]), Ok(None));
    }

    fn frames(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.extend_from_slice(&frame_prefix(m.len()));
            out.extend_from_slice(m);
        }
        out
    }

    #[test]
    fn frames_survive_any_chunking() {
        let messages: Vec<Vec<u8>> = (0..20u8).map(|n| vec![n; usize::from(n) * 17]).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let wire = frames(&refs);
        for chunk in [1, 2, 3, 7, 64, 1000, wire.len()] {
            let mut decoder = FrameDecoder::default();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                decoder.push(Bytes::copy_from_slice(piece));
                while let Some(frame) = decoder.next_frame(1024).unwrap() {
                    got.push(frame.to_vec());
                }
            }
            assert_eq!(got, messages, "chunk size {chunk}");
            assert!(decoder.is_empty());
        }
    }

    #[test]
    fn oversized_prefix_is_refused_before_the_body_arrives() {
        let mut decoder = FrameDecoder::default();
        let mut wire = BytesMut::new();
        put_varint(&mut wire, 1 << 40);
        decoder.push(wire.freeze());
        assert_eq!(
            decoder.next_frame(1024),
            Err(FrameError::Oversized {
                size: 1 << 40,
                max: 1024
            })
        );
        // Exactly the limit passes; one more does not.
        let mut decoder = FrameDecoder::default();
        decoder.push(Bytes::from(frames(&[&[1u8; 1024]])));
        assert_eq!(decoder.next_frame(1024).unwrap().unwrap().len(), 1024);
        let mut decoder = FrameDecoder::default();
        decoder.push(Bytes::from(frames(&[&[1u8; 1025]])));
        assert!(decoder.next_frame(1024).is_err());
    }

    #[test]
    fn a_split_prefix_is_checked_too() {
        let mut decoder = FrameDecoder::default();
        let mut wire = BytesMut::new();
        put_varint(&mut wire, 5000);
        decoder.push(wire.split_to(1).freeze());
        assert_eq!(decoder.next_frame(1024), Ok(None));
        decoder.push(wire.freeze());
        assert!(matches!(
            decoder.next_frame(1024),
            Err(FrameError::Oversized { size: 5000, .. })
        ));
    }

    #[test]
    fn garbage_never_allocates_past_the_limit() {
        let mut decoder = FrameDecoder::default();
        decoder.push(Bytes::from_static(&[0xff; 64]));
        assert_eq!(decoder.next_frame(1 << 20), Err(FrameError::Varint));
        // A partial frame reserves at most the limit.
        let mut decoder = FrameDecoder::default();
        let mut wire = BytesMut::new();
        put_varint(&mut wire, 1000);
        wire.extend_from_slice(&[0; 10]);
        decoder.push(wire.freeze());
        assert_eq!(decoder.next_frame(1000), Ok(None));
        assert!(decoder.partial.capacity() <= 1000 + MAX_VARINT_LEN + 64);
        assert!(!decoder.is_empty());
    }
}
