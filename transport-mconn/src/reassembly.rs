//! Channel messages put back together from `PacketMsg` chunks: pure, so
//! hostile packet sequences are tested without a connection.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use p2p_router::transport::ProtocolViolation;
use p2p_router::ChannelId;

use crate::proto::PacketMsg;

/// The partial message of each channel.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    assembling: HashMap<ChannelId, BytesMut>,
}

impl Reassembly {
    /// Takes one chunk. `max_size` gives a channel's largest message, or
    /// `None` for a channel not on this connection. Returns a message
    /// completed by this chunk (`eof`), refusing before buffering anything
    /// that would exceed the channel's maximum: a channel's buffer never
    /// holds more than its maximum.
    pub(crate) fn push(
        &mut self,
        msg: PacketMsg,
        max_size: impl Fn(ChannelId) -> Option<usize>,
    ) -> Result<Option<(ChannelId, Bytes)>, ProtocolViolation> {
        let unknown = ProtocolViolation::UnknownChannel(i64::from(msg.channel_id));
        let id = u8::try_from(msg.channel_id)
            .map(ChannelId)
            .map_err(|_| unknown)?;
        let max = max_size(id).ok_or(unknown)?;
        let buffer = self.assembling.entry(id).or_default();
        if buffer.len() + msg.data.len() > max {
            return Err(ProtocolViolation::MessageTooLarge);
        }
        if !msg.eof {
            buffer.extend_from_slice(&msg.data);
            return Ok(None);
        }
        let message = if buffer.is_empty() {
            msg.data
        } else {
            buffer.extend_from_slice(&msg.data);
            buffer.split().freeze()
        };
        Ok(Some((id, message)))
    }

    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.assembling.values().map(BytesMut::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::proto::{packet, Packet};

    const MAX: usize = 64;

    fn max_size(id: ChannelId) -> Option<usize> {
        (id.0 < 4).then_some(MAX)
    }

    proptest! {
        /// Whatever packets arrive, nothing panics, no channel buffers more
        /// than its maximum, and every message handed out is within it.
        #[test]
        fn arbitrary_packets_never_exceed_the_channel_maximum(
            packets in proptest::collection::vec(
                (-2i32..6, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..80)),
                0..60,
            )
        ) {
            let mut r = Reassembly::default();
            for (channel_id, eof, data) in packets {
                let msg = PacketMsg { channel_id, eof, data: Bytes::from(data) };
                match r.push(msg, max_size) {
                    Ok(Some((_, message))) => prop_assert!(message.len() <= MAX),
                    Ok(None) => {}
                    // A connection ends at its first violation.
                    Err(_) => break,
                }
                prop_assert!(r.buffered() <= 4 * MAX);
            }
        }

        /// Any bytes as a packet: decoding and taking it never panic.
        #[test]
        fn arbitrary_bytes_as_a_packet_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut r = Reassembly::default();
            if let Ok(Packet { sum: Some(packet::Sum::PacketMsg(msg)) }) = Packet::decode(&bytes[..]) {
                let _ = r.push(msg, max_size);
            }
        }

        /// A message cut into chunks of any sizes comes back whole.
        #[test]
        fn chunks_reassemble_to_the_message(
            message in proptest::collection::vec(any::<u8>(), 0..MAX),
            cuts in proptest::collection::vec(0usize..MAX, 0..6),
            channel in 0u8..4,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < message.len()).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut r = Reassembly::default();
            let mut start = 0;
            for end in cuts.into_iter().chain([message.len()]) {
                let eof = end == message.len();
                let chunk = PacketMsg {
                    channel_id: i32::from(channel),
                    eof,
                    data: Bytes::copy_from_slice(&message[start..end]),
                };
                let got = r.push(chunk, max_size).unwrap();
                if eof {
                    prop_assert_eq!(got, Some((ChannelId(channel), Bytes::from(message.clone()))));
                } else {
                    prop_assert_eq!(got, None);
                }
                start = end;
            }
            prop_assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn unknown_and_out_of_range_channels_are_violations() {
        let mut r = Reassembly::default();
        for channel_id in [9, -1, 300] {
            let msg = PacketMsg {
                channel_id,
                eof: true,
                data: Bytes::new(),
            };
            assert_eq!(
                r.push(msg, max_size),
                Err(ProtocolViolation::UnknownChannel(i64::from(channel_id)))
            );
        }
    }
}
