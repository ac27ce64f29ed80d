//! Byte formats carried on QUIC streams: the channel stream header and
//! length-delimited frames (see `docs/PROTOCOL.md`), on the core's varints
//! ([`p2p_router::wire`]).
//!
//! Everything here is pure, so hostile input can be tested without a
//! network: decoding never allocates more than the caller's limit.

use bytes::{Buf, Bytes, BytesMut};
use p2p_router::wire::{frame_bounds, get_varint, put_varint, WireError, MAX_VARINT_LEN};
use p2p_router::ChannelId;

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
    pub(crate) fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, WireError> {
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
    pub(crate) fn next_frame(&mut self, max: usize) -> Result<Option<Bytes>, WireError> {
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
                    let want = Self::split_len(&self.chunk, max)?.unwrap_or(0);
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
                if let Some(want) = Self::split_len(&self.partial, max)? {
                    self.partial
                        .reserve(want.saturating_sub(self.partial.len()));
                }
                Ok(None)
            }
        }
    }

    /// The total length (prefix and body) of the frame at the start of
    /// `buf`, if the prefix is complete (and the length within `max`).
    fn split_len(buf: &[u8], max: usize) -> Result<Option<usize>, WireError> {
        Ok(frame_bounds(buf, max)?.map(|(prefix, len)| prefix + len))
    }

    /// The body range of a complete frame at the start of `buf`.
    fn split(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, WireError> {
        let Some((prefix, len)) = frame_bounds(buf, max)? else {
            return Ok(None);
        };
        let end = prefix + len;
        Ok((buf.len() >= end).then_some((prefix, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Any bytes as a stream header: an error, "incomplete" or a
            /// header that consumed no more than it was given.
            #[test]
            fn any_bytes_as_a_header_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
                if let Ok(Some((_, used))) = StreamHeader::decode(&bytes) {
                    prop_assert!(used <= bytes.len());
                }
            }

            #[test]
            fn headers_round_trip(channel in any::<u8>(), generation in any::<u64>()) {
                let header = StreamHeader { channel: ChannelId(channel), generation };
                let encoded = header.encode();
                prop_assert_eq!(StreamHeader::decode(&encoded), Ok(Some((header, encoded.len()))));
            }

            /// Frames written back to back and received in chunks of any
            /// sizes come out as written; a limit below a frame is an
            /// error, never a frame over the limit.
            #[test]
            fn frames_in_any_chunking_come_out_as_written(
                frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
                cuts in proptest::collection::vec(1usize..64, 1..40),
                max in 0usize..400,
            ) {
                let mut stream = Vec::new();
                for f in &frames {
                    stream.extend_from_slice(&frame_prefix(f.len()));
                    stream.extend_from_slice(f);
                }
                let mut decoder = FrameDecoder::default();
                let mut got = Vec::new();
                let mut rest = &stream[..];
                let mut cut = cuts.iter().cycle();
                'feed: while !rest.is_empty() {
                    let n = (*cut.next().unwrap_or(&1)).min(rest.len());
                    decoder.push(Bytes::copy_from_slice(&rest[..n]));
                    rest = &rest[n..];
                    loop {
                        match decoder.next_frame(max) {
                            Ok(Some(frame)) => {
                                prop_assert!(frame.len() <= max);
                                got.push(frame.to_vec());
                            }
                            Ok(None) => break,
                            Err(_) => break 'feed,
                        }
                    }
                }
                let fitting = frames.iter().take_while(|f| f.len() <= max).count();
                prop_assert_eq!(&got[..], &frames[..fitting]);
            }
        }
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
            Err(WireError::Oversized {
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
            Err(WireError::Oversized { size: 5000, .. })
        ));
    }

    #[test]
    fn garbage_never_allocates_past_the_limit() {
        let mut decoder = FrameDecoder::default();
        decoder.push(Bytes::from_static(&[0xff; 64]));
        assert_eq!(decoder.next_frame(1 << 20), Err(WireError::Varint));
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
