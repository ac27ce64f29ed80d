//! The on-disk encoding of [`PeerRecord`]: prost messages, documented in
//! `proto/peer_store.proto`. Times are milliseconds since the Unix epoch, 0
//! meaning never.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

use super::{AddressRecord, PeerRecord};
use crate::identity::{NodeId, NODE_ID_LEN};

#[derive(Clone, PartialEq, prost::Message)]
struct PeerInfoProto {
    #[prost(bytes = "vec", tag = "1")]
    node_id: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    addresses: Vec<AddressInfoProto>,
    #[prost(uint64, tag = "3")]
    last_connected_ms: u64,
    #[prost(bool, tag = "4")]
    inactive: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AddressInfoProto {
    #[prost(string, tag = "1")]
    address: String,
    #[prost(uint64, tag = "2")]
    last_dial_success_ms: u64,
    #[prost(uint64, tag = "3")]
    last_dial_failure_ms: u64,
    #[prost(uint32, tag = "4")]
    dial_failures: u32,
}

/// Why a stored record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("node id has {0} bytes, expected {NODE_ID_LEN}")]
    NodeIdLength(usize),
    #[error("record stored under another node id")]
    KeyMismatch,
    #[error("address {0:?}: {1}")]
    Address(String, crate::address::ParseAddressError),
}

fn to_ms(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_ms(ms: u64) -> Option<SystemTime> {
    (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

pub(crate) fn encode(record: &PeerRecord) -> Vec<u8> {
    PeerInfoProto {
        node_id: record.node_id.as_bytes().to_vec(),
        addresses: record
            .addresses
            .iter()
            .map(|a| AddressInfoProto {
                address: a.address.to_string(),
                last_dial_success_ms: to_ms(a.last_dial_success),
                last_dial_failure_ms: to_ms(a.last_dial_failure),
                dial_failures: a.dial_failures,
            })
            .collect(),
        last_connected_ms: to_ms(record.last_connected),
        inactive: record.inactive,
    }
    .encode_to_vec()
}

/// Decodes a record stored under `key`.
pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<PeerRecord, DecodeError> {
    let proto = PeerInfoProto::decode(bytes)?;
    let id: [u8; NODE_ID_LEN] = proto
        .node_id
        .as_slice()
        .try_into()
        .map_err(|_| DecodeError::NodeIdLength(proto.node_id.len()))?;
    if key != id {
        return Err(DecodeError::KeyMismatch);
    }
    let node_id = NodeId::from_bytes(id);
    let mut addresses = Vec::with_capacity(proto.addresses.len());
    for a in proto.addresses {
        let address = a
            .address
            .parse()
            .map_err(|e| DecodeError::Address(a.address.clone(), e))?;
        addresses.push(AddressRecord {
            address,
            last_dial_success: from_ms(a.last_dial_success_ms),
            last_dial_failure: from_ms(a.last_dial_failure_ms),
            dial_failures: a.dial_failures,
        });
    }
    Ok(PeerRecord {
        node_id,
        addresses,
        last_connected: from_ms(proto.last_connected_ms),
        inactive: proto.inactive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// A corrupt or hostile store file: any record bytes decode
            /// to a record or an error, never a panic.
            #[test]
            fn any_bytes_as_a_record_never_panic(
                key in proptest::collection::vec(any::<u8>(), 0..24),
                bytes in proptest::collection::vec(any::<u8>(), 0..256),
            ) {
                let _ = decode(&key, &bytes);
            }
        }
    }
    use crate::identity::NodeKey;

    #[test]
    fn record_round_trips_at_millisecond_precision() {
        let id = NodeKey::from_seed([3; 32]).node_id();
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut address = AddressRecord::new(format!("mconn://{id}@h:1").parse().unwrap());
        address.last_dial_failure = Some(t);
        address.dial_failures = 3;
        let record = PeerRecord {
            node_id: id,
            addresses: vec![address],
            last_connected: Some(t),
            inactive: true,
        };
        let bytes = encode(&record);
        assert_eq!(decode(id.as_bytes(), &bytes).unwrap(), record);
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        let id = [0u8; NODE_ID_LEN];
        assert!(decode(&id, &[0xff, 0xff, 0xff]).is_err());
        let short = PeerInfoProto {
            node_id: vec![1, 2],
            ..Default::default()
        };
        assert!(matches!(
            decode(&id, &short.encode_to_vec()),
            Err(DecodeError::NodeIdLength(2))
        ));
        let wrong_key = PeerInfoProto {
            node_id: vec![1; NODE_ID_LEN],
            ..Default::default()
        };
        assert!(matches!(
            decode(&id, &wrong_key.encode_to_vec()),
            Err(DecodeError::KeyMismatch)
        ));
    }
}
