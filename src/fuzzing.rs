//! Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature),
//! one per decoder a peer or a file feeds: each takes arbitrary bytes and
//! must return, never panic, hang or allocate beyond the decoder's limits.
//! Not an API: the names and shapes change with the decoders.
//!
//! The same functions replay the committed corpus in this crate's tests,
//! so every input a fuzzer found stays a regression test on stable.

use bytes::BytesMut;
use prost::Message;

use crate::address::PeerAddress;
use crate::node_info::{NodeInfo, MAX_NODE_INFO_SIZE};
use crate::pex::{PexMessage, PexSum};
use crate::transport::Admission;

/// A peer address as a user or a peer writes it.
pub fn address(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(address) = text.parse::<PeerAddress>() {
            // What parses prints as something that parses to the same.
            let again: PeerAddress = address
                .to_string()
                .parse()
                .unwrap_or_else(|e| panic!("{address} does not parse again: {e}"));
            assert_eq!(again, address);
        }
    }
}

/// A `NodeInfo` from a peer: decoded, checked, compared with ours.
pub fn node_info(bytes: &[u8]) {
    if let Ok(theirs) = NodeInfo::decode(bytes) {
        let _ = theirs.validate();
        let _ = theirs.parsed_node_id();
        let ours = NodeInfo::new(crate::identity::NodeId::from_bytes([1; 20]), "fuzz", "us");
        let _ = ours.compatible_with(&theirs);
    }
}

/// A control stream as the QUIC transport reads it: a length-delimited
/// `NodeInfo` within its limit, then the admission byte.
pub fn control_stream(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    if let Ok(Some(frame)) = crate::wire::take_delimited(&mut buf, MAX_NODE_INFO_SIZE) {
        assert!(frame.len() <= MAX_NODE_INFO_SIZE);
        node_info(&frame);
        if let Some(&byte) = buf.first() {
            let _ = Admission::from_byte(byte);
        }
    }
}

/// A message on the PEX channel, every address read in both dialects.
pub fn pex_message(bytes: &[u8]) {
    let Ok(message) = PexMessage::decode(bytes) else {
        return;
    };
    if let Some(PexSum::Response(response)) = message.sum {
        for a in &response.addresses {
            let _ = a.url.parse::<PeerAddress>();
            for strict in [false, true] {
                if let Ok(Some(address)) = crate::pex::cometbft::parse(a, strict) {
                    assert!(crate::pex::cometbft::advertisable(&address, strict).is_some());
                }
            }
        }
    }
}

/// A peer-store record as read back from disk; the first byte says how
/// long the key is.
pub fn peer_record(bytes: &[u8]) {
    let Some((&key_len, rest)) = bytes.split_first() else {
        return;
    };
    let key_len = usize::from(key_len % 24).min(rest.len());
    let (key, record) = rest.split_at(key_len);
    if let Ok(decoded) = crate::peer_store::codec::decode(key, record) {
        let encoded = crate::peer_store::codec::encode(&decoded);
        assert_eq!(
            crate::peer_store::codec::decode(key, &encoded).ok(),
            Some(decoded)
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs `target` on every committed input of the named corpus.
    fn replay(corpus: &str, target: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(corpus);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut count = 0;
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            target(&bytes);
            count += 1;
        }
        assert!(count > 0, "{} is empty", dir.display());
    }

    /// Writes the seed inputs of each corpus (valid examples the fuzzer
    /// starts from): `cargo test -p p2p-router --lib write_seed_corpus --
    /// --ignored`.
    #[test]
    #[ignore = "writes files; run by hand when the formats change"]
    fn write_seed_corpus() {
        use prost::Message;

        use crate::identity::NodeKey;
        use crate::node_info::NodeInfo;
        use crate::peer_store::{AddressRecord, PeerRecord};
        use crate::pex::{PexAddress, PexMessage};

        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let write = |corpus: &str, name: &str, bytes: &[u8]| {
            let dir = root.join(corpus);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("{e}"));
        };
        let id = NodeKey::from_seed([1; 32]).node_id();
        for (name, text) in [
            ("quic", format!("quic://{id}@127.0.0.1:26656")),
            ("mconn_v6", format!("mconn://{id}@[::1]:26656")),
            ("dns", format!("quic://{id}@node.example.org:1")),
            ("memory", format!("memory:{id}")),
            ("bare", format!("{id}@localhost:26656")),
        ] {
            write("address", name, text.as_bytes());
        }
        let mut info = NodeInfo::new(id, "test-chain", "node0");
        info.listen_addr = "127.0.0.1:26656".into();
        info.channels = vec![0x00, 0x20, 0x21];
        write("node_info", "example", &info.encode_to_vec());
        let mut control = info.encode_length_delimited_to_vec();
        control.push(0x00);
        write("control_stream", "accepted", &control);
        write(
            "pex_message",
            "request",
            &PexMessage::request().encode_to_vec(),
        );
        let native =
            PexMessage::response([PexAddress::url(format!("quic://{id}@127.0.0.1:26656"))]);
        write("pex_message", "native_response", &native.encode_to_vec());
        let cometbft = PexMessage::response([PexAddress::net(id.to_string(), "10.0.0.1", 26656)]);
        write(
            "pex_message",
            "cometbft_response",
            &cometbft.encode_to_vec(),
        );
        let record = PeerRecord {
            node_id: id,
            addresses: vec![AddressRecord {
                address: format!("quic://{id}@127.0.0.1:26656")
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
                last_dial_success: None,
                last_dial_failure: None,
                dial_failures: 2,
            }],
            last_connected: None,
            inactive: false,
        };
        let mut stored = vec![20];
        stored.extend_from_slice(id.as_bytes());
        stored.extend_from_slice(&crate::peer_store::codec::encode(&record));
        write("peer_record", "one_address", &stored);
    }

    #[test]
    fn the_fuzz_corpora_replay_without_a_panic() {
        replay("address", super::address);
        replay("node_info", super::node_info);
        replay("control_stream", super::control_stream);
        replay("pex_message", super::pex_message);
        replay("peer_record", super::peer_record);
    }
}
