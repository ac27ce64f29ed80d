//! Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature):
//! arbitrary bytes into the MConnection decoders. Not an API. The same
//! functions replay the committed corpus in this crate's tests.

use bytes::BytesMut;
use p2p_router::wire::take_delimited;
use p2p_router::ChannelId;
use prost::Message;

use crate::proto::{self, packet, Packet};
use crate::reassembly::Reassembly;

/// Decrypted connection bytes: length-delimited packets within the packet
/// limit, their chunks reassembled on four channels of 4 KiB.
pub fn packets(bytes: &[u8]) {
    const MAX: usize = 4096;
    let max_packet = proto::max_packet_size(1024);
    let mut buf = BytesMut::from(bytes);
    let mut reassembly = Reassembly::default();
    let max_size = |id: ChannelId| (id.0 < 4).then_some(MAX);
    while let Ok(Some(body)) = take_delimited(&mut buf, max_packet) {
        let Ok(packet) = Packet::decode(body) else {
            return;
        };
        if let Some(packet::Sum::PacketMsg(msg)) = packet.sum {
            match reassembly.push(msg, max_size) {
                Ok(Some((_, message))) => assert!(message.len() <= MAX),
                Ok(None) => {}
                Err(_) => return,
            }
        }
    }
}

/// The handshake messages before the connection is encrypted: an
/// ephemeral key, then (after decryption) the signed key message.
pub fn handshake_messages(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    if let Ok(Some(body)) = take_delimited(&mut buf, 1024) {
        let _ = proto::BytesValue::decode(body);
    }
    if let Ok(Some(body)) = take_delimited(&mut buf, 1024) {
        if let Ok(auth) = proto::AuthSigMessage::decode(body) {
            let _ = crate::secret::peer_key(&auth, &[0; 32]);
        }
    }
}

#[cfg(test)]
mod tests {
    fn replay(corpus: &str, target: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(corpus);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            target(&std::fs::read(&path).unwrap_or_else(|e| panic!("{e}")));
            count += 1;
        }
        assert!(count > 0);
    }

    #[test]
    fn the_fuzz_corpora_replay_without_a_panic() {
        replay("mconn_packets", super::packets);
        replay("mconn_handshake", super::handshake_messages);
    }
}
