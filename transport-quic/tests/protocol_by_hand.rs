//! Speaks the protocol of docs/PROTOCOL.md by hand, with quinn and rustls
//! directly and bytes taken from the document, against our listener: the
//! document and the implementation must agree.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{key, within, AcceptAnyCert};
use p2p_router::{ChannelId, Connection, LocalNode, NodeInfo, NodeKey, Transport};
use p2p_transport_quic::{QuicConfig, QuicTransport};
use prost::Message;

/// The handshake message of the document's worked example (8.2).
const EXAMPLE_HANDSHAKE: &str =
    "610a040808100b1228333437353066393862643539666366633934366461343561616162\
653933336265313534613462351a0f3132372e302e302e313a3236363536220a74657374\
2d636861696e2a05302e312e30320220213a056e6f6465304200";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn worked_example_bytes_match_the_document() {
    let k = NodeKey::from_seed([1; 32]);
    assert_eq!(
        k.node_id().to_string(),
        "34750f98bd59fcfc946da45aaabe933be154a4b5"
    );
    let mut info = NodeInfo::new(k.node_id(), "test-chain", "node0");
    info.listen_addr = "127.0.0.1:26656".into();
    info.version = "0.1.0".into();
    info.channels = vec![0x20, 0x21];
    let mut framed = vec![97u8];
    framed.extend_from_slice(&info.encode_to_vec());
    assert_eq!(framed, unhex(EXAMPLE_HANDSHAKE));
    assert_eq!(
        common::alpn_for("test-chain"),
        b"p2p-router/1/26b0b83e7281be3b"
    );
}

/// The PEX examples of section 9: a request, a response in our dialect
/// and the same address in CometBFT's.
const EXAMPLE_PEX_REQUEST: &str = "0a00";
const EXAMPLE_PEX_URL: &str =
    "12430a41223f717569633a2f2f33343735306639386264353966636663393436646134356161\
616265393333626531353461346235403132372e302e302e313a3236363536";
const EXAMPLE_PEX_NET_ADDRESS: &str =
    "123b0a390a283334373530663938626435396663666339343664613435616161626539333362\
653135346134623512093132372e302e302e3118a0d001";

#[test]
fn pex_example_bytes_match_the_document() {
    use p2p_router::pex::{PexAddress, PexMessage};
    let id = NodeKey::from_seed([1; 32]).node_id().to_string();
    assert_eq!(
        PexMessage::request().encode_to_vec(),
        unhex(EXAMPLE_PEX_REQUEST)
    );
    let url = format!("quic://{id}@127.0.0.1:26656");
    let ours = PexMessage::response([PexAddress::url(url)]);
    assert_eq!(ours.encode_to_vec(), unhex(EXAMPLE_PEX_URL));
    let theirs = PexMessage::response([PexAddress::net(id, "127.0.0.1", 26656)]);
    assert_eq!(theirs.encode_to_vec(), unhex(EXAMPLE_PEX_NET_ADDRESS));
}

/// Decodes a protobuf-style varint: (value, bytes used).
fn varint(bytes: &[u8]) -> (usize, usize) {
    let mut value = 0usize;
    for (i, b) in bytes.iter().enumerate() {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("unterminated varint");
}

/// A certificate made the way section 3.2 says, for the seed's key.
fn certificate(seed: [u8; 32]) -> (rustls::pki_types::CertificateDer<'static>, Vec<u8>) {
    // PKCS#8 v1 for ed25519 (RFC 8410): a fixed prefix, then the seed.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(der.clone());
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["anything".into()])
        .unwrap()
        .self_signed(&pair)
        .unwrap();
    (cert.der().clone(), der)
}

/// The hand-written dialer: the document's example node (seed 0x01) on
/// network "test-chain".
fn example_dialer() -> quinn::Endpoint {
    let (cert, pkcs8) = certificate([1u8; 32]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_client_auth_cert(
            vec![cert],
            rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8).into(),
        )
        .unwrap();
    tls.alpn_protocols = vec![b"p2p-router/1/26b0b83e7281be3b".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// Our listener of key `n` on network "test-chain".
fn example_listener(n: u64) -> (QuicTransport, NodeKey) {
    let lk = key(n);
    let listener = QuicTransport::bind(
        &LocalNode::new(lk.clone(), "test-chain"),
        QuicConfig::new().listen_on("127.0.0.1:0".parse().unwrap()),
    )
    .unwrap();
    (listener, lk)
}

/// The hand-written dialer's connection to `listener`, and the listener's
/// side of it.
async fn connect_by_hand(
    endpoint: &quinn::Endpoint,
    listener: &QuicTransport,
    lk: &NodeKey,
) -> (quinn::Connection, Box<dyn Connection>) {
    let addr = listener.local_addrs()[0];
    let sni = lk.node_id().to_string();
    tokio::join!(
        async { endpoint.connect(addr, &sni).unwrap().await.unwrap() },
        async { within("accept", listener.accept()).await.unwrap() }
    )
}

/// A bad control stream from the dialer (§5.2) closes the connection with
/// 0x10 `protocol violation` (§7.1), with no admission byte.
#[tokio::test]
async fn a_bad_control_stream_is_closed_with_protocol_violation() {
    let (listener, lk) = example_listener(171);
    let endpoint = example_dialer();
    let cases: [(&str, Vec<u8>); 4] = [
        // Ten bytes with the continuation bit: no varint ends there.
        ("bad varint", vec![0xff; 10]),
        // 10,241, one over the NodeInfo limit, as a protobuf varint.
        ("oversized length", vec![0x81, 0x50]),
        ("early FIN", vec![0x20, 0x0a, 0x04]),
        ("undecodable NodeInfo", vec![0x03, 0xff, 0xff, 0xff]),
    ];
    for (name, bytes) in cases {
        let (conn, accepted) = connect_by_hand(&endpoint, &listener, &lk).await;
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&bytes).await.unwrap();
        send.finish().unwrap();
        let mut ours = NodeInfo::new(lk.node_id(), "test-chain", "listener");
        ours.channels = vec![0x20];
        let got = within("handshake", accepted.handshake(&ours)).await;
        assert!(got.is_err(), "{name}: refused");
        let closed = within("close", conn.closed()).await;
        match &closed {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(u64::from(close.error_code), 0x10, "{name}");
                assert_eq!(&close.reason[..], b"protocol violation", "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        // What arrived on the control stream is the listener's NodeInfo
        // and no admission byte.
        if let Ok(reply) = recv.read_to_end(16 * 1024).await {
            let (len, n) = varint(&reply);
            assert_eq!(reply.len(), n + len, "{name}: nothing after the NodeInfo");
        }
    }
}

#[tokio::test]
async fn a_hand_written_peer_handshakes_and_exchanges_messages() {
    // Our listener: network "test-chain", channels 0x20 and 0x21.
    let (listener, lk) = example_listener(170);
    let addr = listener.local_addrs()[0];
    let endpoint = example_dialer();
    let (conn, accepted) = connect_by_hand(&endpoint, &listener, &lk).await;
    // The listener authenticated the example node's key.
    assert_eq!(
        p2p_router::NodeId::from_public_key(&accepted.peer_key()).to_string(),
        "34750f98bd59fcfc946da45aaabe933be154a4b5"
    );

    // Control stream: our NodeInfo (the document's bytes), then FIN.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&unhex(EXAMPLE_HANDSHAKE)).await.unwrap();
    send.finish().unwrap();
    let mut their_info = NodeInfo::new(lk.node_id(), "test-chain", "listener");
    their_info.listen_addr = addr.to_string();
    their_info.channels = vec![0x20, 0x21];
    let got = within("listener handshake", accepted.handshake(&their_info))
        .await
        .unwrap();
    assert_eq!(got.moniker, "node0");
    accepted
        .send_admission(p2p_router::transport::Admission::Accepted)
        .await
        .unwrap();
    // Read the listener's reply: varint length, NodeInfo, admission, FIN.
    let reply = within("reply", recv.read_to_end(16 * 1024)).await.unwrap();
    let (len, n) = varint(&reply);
    let decoded = NodeInfo::decode(&reply[n..n + len]).unwrap();
    assert_eq!(decoded, their_info);
    assert_eq!(&reply[n + len..], [0x00], "admission: accepted");

    // A channel message, exactly as in 8.3.
    let mut uni = conn.open_uni().await.unwrap();
    uni.write_all(&[0x20, 0x00, 0x04, 0x0a, 0x02, 0x68, 0x69])
        .await
        .unwrap();
    let got = within("message", accepted.recv(ChannelId(0x20), 1024))
        .await
        .unwrap();
    assert_eq!(got.as_ref(), [0x0a, 0x02, 0x68, 0x69]);
    uni.write_all(&[0x03, 0x08, 0x96, 0x01]).await.unwrap();
    let got = within("message", accepted.recv(ChannelId(0x20), 1024))
        .await
        .unwrap();
    assert_eq!(got.as_ref(), [0x08, 0x96, 0x01]);

    // And the listener's stream to us: header, then one frame.
    accepted
        .send(ChannelId(0x21), Bytes::from_static(b"\x0a\x03hey"))
        .await
        .unwrap();
    let mut incoming = within("uni", conn.accept_uni()).await.unwrap();
    let mut buf = [0u8; 8];
    within("read", incoming.read_exact(&mut buf)).await.unwrap();
    assert_eq!(buf, [0x21, 0x00, 0x05, 0x0a, 0x03, b'h', b'e', b'y']);
}
