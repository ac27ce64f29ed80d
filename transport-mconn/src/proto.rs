//! The Tendermint v0.34 protobuf messages this transport speaks, derived by
//! hand (field numbers from `proto/tendermint/p2p/conn.proto`,
//! `proto/tendermint/crypto/keys.proto` and
//! `google/protobuf/wrappers.proto`).

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

/// `google.protobuf.BytesValue`: carries an ephemeral X25519 key.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BytesValue {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) value: Vec<u8>,
}

/// `tendermint.crypto.PublicKey`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PublicKey {
    #[prost(oneof = "public_key::Sum", tags = "1, 2")]
    pub(crate) sum: Option<public_key::Sum>,
}

pub(crate) mod public_key {
    /// The key types Tendermint knows.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Sum {
        #[prost(bytes, tag = "1")]
        Ed25519(Vec<u8>),
        #[prost(bytes, tag = "2")]
        Secp256k1(Vec<u8>),
    }
}

/// `tendermint.p2p.AuthSigMessage`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AuthSigMessage {
    #[prost(message, optional, tag = "1")]
    pub(crate) pub_key: Option<PublicKey>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) sig: Vec<u8>,
}

/// `tendermint.p2p.PacketPing`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PacketPing {}

/// `tendermint.p2p.PacketPong`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PacketPong {}

/// `tendermint.p2p.PacketMsg`: one chunk of a channel message.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PacketMsg {
    #[prost(int32, tag = "1")]
    pub(crate) channel_id: i32,
    #[prost(bool, tag = "2")]
    pub(crate) eof: bool,
    #[prost(bytes = "bytes", tag = "3")]
    pub(crate) data: Bytes,
}

/// `tendermint.p2p.Packet`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Packet {
    #[prost(oneof = "packet::Sum", tags = "1, 2, 3")]
    pub(crate) sum: Option<packet::Sum>,
}

pub(crate) mod packet {
    /// The packet kinds (named as in the .proto file).
    #[allow(clippy::enum_variant_names)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Sum {
        #[prost(message, tag = "1")]
        PacketPing(super::PacketPing),
        #[prost(message, tag = "2")]
        PacketPong(super::PacketPong),
        #[prost(message, tag = "3")]
        PacketMsg(super::PacketMsg),
    }
}

impl Packet {
    pub(crate) fn ping() -> Self {
        Self {
            sum: Some(packet::Sum::PacketPing(PacketPing {})),
        }
    }

    pub(crate) fn pong() -> Self {
        Self {
            sum: Some(packet::Sum::PacketPong(PacketPong {})),
        }
    }

    pub(crate) fn msg(channel: u8, eof: bool, data: Bytes) -> Self {
        Self {
            sum: Some(packet::Sum::PacketMsg(PacketMsg {
                channel_id: i32::from(channel),
                eof,
                data,
            })),
        }
    }
}

/// The encoded size of the largest packet: a message chunk of `payload`
/// bytes (the receiver refuses anything longer before reading it).
pub(crate) fn max_packet_size(payload: usize) -> usize {
    Packet::msg(0xff, true, Bytes::from(vec![0u8; payload])).encoded_len()
}

/// Decodes a varint at the start of `buf`: `Ok(None)` if incomplete.
pub(crate) fn get_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, ()> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return Err(());
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 10 {
        Err(())
    } else {
        Ok(None)
    }
}

/// Why a length-delimited message could not be taken from a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DelimitedError {
    /// The length prefix is not a varint.
    BadLength,
    /// The length exceeds the limit.
    TooLong(u64),
}

/// Takes one length-delimited message body off the front of `buf`, if it
/// is complete; checks the length against `max` first.
pub(crate) fn take_delimited(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Bytes>, DelimitedError> {
    let Some((len, n)) = get_varint(buf).map_err(|()| DelimitedError::BadLength)? else {
        return Ok(None);
    };
    if len > max as u64 {
        return Err(DelimitedError::TooLong(len));
    }
    let end = n + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    buf.advance(n);
    Ok(Some(buf.split_to(len as usize).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn packet_encodings_match_tendermint() {
        assert_eq!(hex(&Packet::ping().encode_to_vec()), "0a00");
        assert_eq!(hex(&Packet::pong().encode_to_vec()), "1200");
        let msg = Packet::msg(1, true, Bytes::from_static(b"hi"));
        assert_eq!(
            hex(&msg.encode_to_vec()),
            "1a0808011001 1a026869".replace(' ', "")
        );
        let msg = Packet::msg(0x20, false, Bytes::from_static(&[0xab]));
        assert_eq!(
            hex(&msg.encode_to_vec()),
            "1a050820 1a01ab".replace(' ', "")
        );
        assert_eq!(
            hex(&Packet::ping().encode_length_delimited_to_vec()),
            "020a00"
        );
        // Outer tag and length (3), channel 0xff (3), eof (2), data tag and
        // length (3), 1024 data bytes.
        assert_eq!(max_packet_size(1024), 1035);
    }

    #[test]
    fn a_packet_without_a_kind_decodes_to_none() {
        let empty = Packet::decode(&[][..]).unwrap();
        assert_eq!(empty.sum, None);
        // An unknown field (tag 9) is skipped by protobuf rules: still none.
        let unknown = Packet::decode(&[0x4a, 0x00][..]).unwrap();
        assert_eq!(unknown.sum, None);
    }

    #[test]
    fn delimited_checks_the_length_before_the_body() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0x03][..]);
        assert_eq!(
            take_delimited(&mut buf, 1024),
            Err(DelimitedError::TooLong(65535))
        );
        let mut buf = BytesMut::from(&[0x03, 1, 2][..]);
        assert_eq!(take_delimited(&mut buf, 1024), Ok(None));
        buf.extend_from_slice(&[3, 9]);
        assert_eq!(
            take_delimited(&mut buf, 1024).unwrap().unwrap().as_ref(),
            [1, 2, 3]
        );
        assert_eq!(buf.as_ref(), [9]);
        let mut buf = BytesMut::from(&[0xff; 11][..]);
        assert_eq!(
            take_delimited(&mut buf, 1024),
            Err(DelimitedError::BadLength)
        );
    }
}
