//! Who the QUIC transport refuses, and that the listener keeps serving
//! everyone else afterwards.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{
    alpn_for, key, node, quic_config, raw_client, raw_connect, within, ClientCert, NETWORK,
};
use p2p_router::transport::{AcceptFailure, AuthFailure, IncompatibleKind};
use p2p_router::{conformance, AcceptError, BindError, DialError, LocalNode, Transport};
use p2p_transport_quic::{QuicConfig, QuicConfigError, QuicTransport};

/// TLS alerts as QUIC CRYPTO_ERROR codes (0x100 + alert).
const CERTIFICATE_REQUIRED: u64 = 0x100 + 116;
/// A certificate refused by our rules: a chain, a key of another type, a
/// key that is not the dialed id (TLS alert 46).
const CERTIFICATE_UNKNOWN: u64 = 0x100 + 46;
/// A handshake signature that does not verify (TLS alert 51).
const DECRYPT_ERROR: u64 = 0x100 + 51;
const NO_APPLICATION_PROTOCOL: u64 = 0x100 + 120;

fn listener(n: u64) -> (Arc<QuicTransport>, p2p_router::NodeKey) {
    let k = key(n);
    (
        Arc::new(QuicTransport::bind(&node(&k), quic_config("127.0.0.1:0")).unwrap()),
        k,
    )
}

/// A well-behaved node can still connect.
async fn still_serving(listener: &QuicTransport, listener_key: &p2p_router::NodeKey) {
    let k = key(150);
    let good = QuicTransport::bind(&node(&k), quic_config("127.0.0.1:0")).unwrap();
    // Skip the failed attempts' errors the listener queued for `accept`.
    let accept = async {
        loop {
            match listener.accept().await {
                Ok(conn) => return conn,
                Err(AcceptError::Connection { .. }) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    };
    let endpoint = listener.listen_endpoints()[0].clone();
    let (dialed, accepted) = tokio::join!(good.dial(listener_key.node_id(), &endpoint), accept);
    assert_eq!(dialed.unwrap().peer_key(), listener_key.public_key());
    assert_eq!(accepted.peer_key(), k.public_key());
}

/// A raw client with `cert` and `alpn` against a new listener of key
/// `n`: it must be refused. Returns the listener and the client's error.
async fn refused_raw_client(
    n: u64,
    cert: ClientCert,
    alpn: &[u8],
) -> (
    Arc<QuicTransport>,
    p2p_router::NodeKey,
    quinn::ConnectionError,
) {
    let (l, lk) = listener(n);
    let addr = l.local_addrs()[0];
    let got = within("raw client", raw_client(addr, cert, alpn)).await;
    (l, lk, got.expect_err("refused"))
}

/// A raw client presenting `cert` (with the right ALPN) is refused with
/// the TLS alert `code`, and the listener keeps serving.
async fn refused_with(n: u64, cert: ClientCert, code: u64) {
    let (l, lk, error) = refused_raw_client(n, cert, &alpn_for(NETWORK)).await;
    assert_eq!(transport_close_code(&error), Some(code), "{error:?}");
    still_serving(&l, &lk).await;
}

fn transport_close_code(e: &quinn::ConnectionError) -> Option<u64> {
    match e {
        quinn::ConnectionError::ConnectionClosed(c) => Some(u64::from(c.error_code)),
        _ => None,
    }
}

#[tokio::test]
async fn dialing_an_address_whose_id_is_not_the_listeners_fails() {
    let (l, lk) = listener(120);
    let d = QuicTransport::bind(&node(&key(121)), quic_config("127.0.0.1:0")).unwrap();
    let claimed = key(122).node_id();
    let endpoint = l.listen_endpoints()[0].clone();
    let got = within("dial", d.dial(claimed, &endpoint)).await;
    match got {
        Err(DialError::WrongPeer { expected, actual }) => {
            assert_eq!(expected, claimed);
            assert_eq!(actual, lk.node_id());
        }
        other => panic!("expected WrongPeer, got {:?}", other.map(|_| ())),
    }
    still_serving(&l, &lk).await;
}

#[tokio::test]
async fn a_peer_of_another_network_is_refused_in_the_tls_handshake() {
    let (l, lk) = listener(123);
    let config = quic_config("127.0.0.1:0");
    let other = QuicTransport::bind(&LocalNode::new(key(124), "another-network"), config).unwrap();
    let endpoint = l.listen_endpoints()[0].clone();
    let got = within("dial", other.dial(lk.node_id(), &endpoint)).await;
    assert!(
        matches!(got, Err(DialError::Incompatible(IncompatibleKind::Alpn))),
        "{:?}",
        got.map(|_| ())
    );
    still_serving(&l, &lk).await;
}

#[tokio::test]
async fn a_raw_client_without_a_certificate_is_refused() {
    refused_with(125, ClientCert::None, CERTIFICATE_REQUIRED).await;
}

#[tokio::test]
async fn a_raw_client_showing_a_key_it_does_not_hold_is_refused() {
    let cert = ClientCert::Impostor {
        shown: Box::new(key(129)),
        signer: Box::new(key(130)),
    };
    refused_with(128, cert, DECRYPT_ERROR).await;
}

#[tokio::test]
async fn a_raw_client_with_a_non_ed25519_certificate_is_refused() {
    // The listener asks for ed25519 signatures only, so the client finds
    // no certificate it can use and sends none.
    refused_with(126, ClientCert::Ecdsa, CERTIFICATE_REQUIRED).await;
}

#[tokio::test]
async fn a_raw_client_with_another_alpn_is_refused() {
    let (l, lk, error) = refused_raw_client(127, ClientCert::Node(Box::new(key(128))), b"h3").await;
    assert_eq!(
        transport_close_code(&error),
        Some(NO_APPLICATION_PROTOCOL),
        "{error:?}"
    );
    // The listener's accept reports the failed attempt and keeps going.
    let failed = within("accept error", l.accept()).await;
    assert!(
        matches!(
            failed,
            Err(AcceptError::Connection {
                reason: AcceptFailure::Incompatible(IncompatibleKind::Alpn),
                ..
            })
        ),
        "{:?}",
        failed.err()
    );
    still_serving(&l, &lk).await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_before_tls() {
    let lk = key(129);
    let mut config = quic_config("127.0.0.1:0");
    config.listener.max_connections = 1;
    let l = QuicTransport::bind(&node(&lk), config).unwrap();
    let (a, b) = (key(130), key(131));
    let ta = QuicTransport::bind(&node(&a), quic_config("127.0.0.1:0")).unwrap();
    let tb = QuicTransport::bind(&node(&b), quic_config("127.0.0.1:0")).unwrap();
    let first = conformance::connect(&ta, &a, &l, &lk).await;
    let endpoint = l.listen_endpoints()[0].clone();
    let second = within("dial", tb.dial(lk.node_id(), &endpoint)).await;
    assert!(
        matches!(second, Err(DialError::Refused)),
        "{:?}",
        second.map(|_| ())
    );
    // Closing the first frees the slot.
    first
        .dialer
        .close(p2p_router::transport::CloseReason::Normal)
        .await;
    first.acceptor.closed().await;
    drop(first);
    let third = within("dial", tb.dial(lk.node_id(), &endpoint)).await;
    assert!(third.is_ok());
}

#[tokio::test]
async fn a_bad_configuration_is_an_error_not_a_panic() {
    let mut config = QuicConfig::new();
    config.idle_timeout = config.keep_alive_interval;
    assert_eq!(
        config.validate(),
        Err(QuicConfigError::KeepAliveNotBelowIdle)
    );
    match QuicTransport::bind(&node(&key(132)), config) {
        Err(BindError::Config(e)) => assert_eq!(
            e.downcast_ref::<QuicConfigError>(),
            Some(&QuicConfigError::KeepAliveNotBelowIdle)
        ),
        other => panic!("expected a config error, got {:?}", other.err()),
    }
    // A congestion window that cannot hold a packet would stall every
    // connection (and trips an assertion in quinn).
    let mut config = QuicConfig::new();
    config.max_congestion_window = Some(0);
    assert_eq!(
        config.validate(),
        Err(QuicConfigError::CongestionWindowTooSmall(0))
    );
    config.max_congestion_window = Some(p2p_transport_quic::MIN_CONGESTION_WINDOW);
    assert_eq!(config.validate(), Ok(()));
}

/// The listener does not offer QUIC datagrams (no channel uses them), so a
/// peer has nothing it could make quinn buffer for a reader that never
/// comes.
#[tokio::test]
async fn the_listener_offers_no_datagrams_a_peer_could_pile_up() {
    let (l, lk) = listener(160);
    let addr = l.local_addrs()[0];
    let client = ClientCert::Node(Box::new(key(161)));
    let conn = within("raw client", raw_connect(addr, client, &alpn_for(NETWORK)))
        .await
        .expect("a node with the right network is served");
    assert_eq!(conn.max_datagram_size(), None);
    assert!(matches!(
        conn.send_datagram(bytes::Bytes::from_static(b"pile me up")),
        Err(quinn::SendDatagramError::UnsupportedByPeer)
    ));
    let accepted = within("accept", l.accept()).await.unwrap();
    assert_eq!(accepted.peer_key(), key(161).public_key());
    still_serving(&l, &lk).await;
}

#[tokio::test]
async fn a_raw_client_presenting_a_chain_is_refused_with_certificate_unknown() {
    refused_with(
        171,
        ClientCert::Chain(Box::new(key(172))),
        CERTIFICATE_UNKNOWN,
    )
    .await;
}

/// The dialer refuses a listener that is not the node it dialed with
/// `certificate_unknown`, and the listener's `accept` says so.
#[tokio::test]
async fn a_dialer_refuses_the_wrong_listener_with_certificate_unknown() {
    let (l, lk) = listener(173);
    let d = QuicTransport::bind(&node(&key(174)), quic_config("127.0.0.1:0")).unwrap();
    let endpoint = l.listen_endpoints()[0].clone();
    assert!(within("dial", d.dial(key(175).node_id(), &endpoint))
        .await
        .is_err());
    let failed = within("accept error", l.accept()).await;
    assert!(
        matches!(
            failed,
            Err(AcceptError::Connection {
                reason: AcceptFailure::Authentication(AuthFailure::TlsAlert(46)),
                ..
            })
        ),
        "{:?}",
        failed.err()
    );
    still_serving(&l, &lk).await;
}

#[tokio::test]
async fn a_client_reconnecting_in_a_loop_is_refused_before_tls() {
    let lk = key(132);
    let mut config = quic_config("127.0.0.1:0");
    config.listener.max_attempts_per_ip = 3;
    let l = QuicTransport::bind(&node(&lk), config).unwrap();
    let addr = l.local_addrs()[0];
    let alpn = alpn_for(NETWORK);
    for i in 0..3 {
        let cert = ClientCert::Node(Box::new(key(133 + i)));
        // The TLS handshake completes (the listener checks the rest later).
        let conn = within("raw client", raw_connect(addr, cert, &alpn))
            .await
            .unwrap();
        conn.close(0u32.into(), b"");
    }
    // The fourth within 10 s: CONNECTION_REFUSED (transport error 0x02),
    // sent before any TLS work.
    let cert = ClientCert::Node(Box::new(key(136)));
    let refused = within("raw client", raw_connect(addr, cert, &alpn)).await;
    let error = refused.expect_err("refused");
    assert_eq!(transport_close_code(&error), Some(0x02), "{error:?}");
    // Another source is still served.
    let other = common::raw_endpoint(
        "127.0.0.2:0".parse().unwrap(),
        ClientCert::Node(Box::new(key(137))),
        &alpn,
    );
    let conn = within("other source", other.connect(addr, "peer").unwrap()).await;
    assert!(conn.is_ok(), "{conn:?}");
}
