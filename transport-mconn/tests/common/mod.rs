//! Helpers shared by the MConnection tests.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

pub mod attacker;

use p2p_router::NodeKey;
use p2p_transport_mconn::{MconnConfig, MconnTransport};

/// A transport with `key` listening on an ephemeral loopback port, without
/// rate limits or flush delay.
pub async fn fast_listener(key: &NodeKey) -> MconnTransport {
    MconnTransport::bind(
        key,
        MconnConfig::fast().listen_on("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap()
}

/// A transport with `key` that only dials, without rate limits or flush
/// delay.
pub async fn fast_dialer(key: &NodeKey) -> MconnTransport {
    MconnTransport::bind(key, MconnConfig::fast())
        .await
        .unwrap()
}

/// The Tendermint side's wire helpers, on `tendermint-proto`'s types.
pub mod tendermint {
    use std::io::BufRead;

    use prost::Message;
    use tendermint_proto::v0_34::p2p::{packet::Sum, Packet};

    /// Reads one length-delimited protobuf message; `None` at the end of
    /// the stream. The reader must buffer at least one decrypted frame (the
    /// crate panics on smaller reads).
    pub fn try_read_delimited<M: Message + Default>(r: &mut impl BufRead) -> Option<M> {
        let mut len = 0usize;
        for shift in (0..64).step_by(7) {
            let mut byte = [0u8];
            r.read_exact(&mut byte).ok()?;
            len |= usize::from(byte[0] & 0x7f) << shift;
            if byte[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).ok()?;
        Some(M::decode(&body[..]).unwrap())
    }

    /// As [`try_read_delimited`], failing at the end of the stream.
    pub fn read_delimited<M: Message + Default>(r: &mut impl BufRead) -> M {
        try_read_delimited(r).expect("stream ended")
    }

    /// A length-delimited packet.
    pub fn packet(sum: Sum) -> Vec<u8> {
        Packet { sum: Some(sum) }.encode_length_delimited_to_vec()
    }
}
