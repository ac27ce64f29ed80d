//! The Tendermint v0.34 protobuf messages this transport speaks, derived by
//! hand (field numbers from `proto/tendermint/p2p/conn.proto`,
//! `proto/tendermint/crypto/keys.proto` and
//! `google/protobuf/wrappers.proto`).

use bytes::Bytes;
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
}
