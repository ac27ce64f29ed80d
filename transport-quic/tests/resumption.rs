//! TLS session resumption over loopback QUIC: a reconnect resumes and
//! still names both peers, also from a transport bound again with the same
//! config; a dialer without tickets, or sharing a cache
//! with another key, does a full handshake; a listener whose key changed
//! is refused although we hold a ticket for the id we dial.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use p2p_router::transport::CloseReason;
use p2p_router::{Connection, DialError, NodeId};
use p2p_transport_quic::{QuicConfig, QuicTransport, SessionCache};

fn bind(key: &p2p_router::NodeKey, config: QuicConfig) -> QuicTransport {
    QuicTransport::bind(&node(key), config).unwrap()
}

fn id_of(conn: &dyn Connection) -> NodeId {
    NodeId::from_public_key(&conn.peer_key())
}

/// A first connection from `dialer` to `listener`, used and closed: the
/// listener's ticket came with the handshake, before the NodeInfo data.
async fn meet(
    (dialer, dk): (&QuicTransport, &p2p_router::NodeKey),
    (listener, lk): (&QuicTransport, &p2p_router::NodeKey),
) {
    let addr = listener.local_addrs()[0];
    let (d, a) = handshaken(dialer, dk, listener, lk, addr).await;
    assert!(!d.resumed(), "a first contact is a full handshake");
    d.close(CloseReason::Shutdown).await;
    drop(a);
}

#[tokio::test]
async fn a_reconnect_resumes_the_session_and_still_names_both_peers() {
    let (kd, kl) = (key(170), key(171));
    let (d, l) = (
        bind(&kd, quic_config("127.0.0.1:0")),
        bind(&kl, quic_config("127.0.0.1:0")),
    );
    meet((&d, &kd), (&l, &kl)).await;
    for _ in 0..2 {
        // Each resumed connection brings the ticket for the next one.
        let (again, accepted) = handshaken(&d, &kd, &l, &kl, l.local_addrs()[0]).await;
        assert!(again.resumed(), "the reconnect resumed the session");
        assert_eq!(id_of(&again), kl.node_id());
        assert_eq!(id_of(&*accepted), kd.node_id());
        again.close(CloseReason::Shutdown).await;
    }
}

#[tokio::test]
async fn a_transport_bound_again_with_the_same_config_resumes() {
    // rustls resumes only with the verifier and client certificate a
    // ticket came with; the cache keeps them across binds.
    let (kd, kl) = (key(182), key(183));
    let l = bind(&kl, quic_config("127.0.0.1:0"));
    let config = quic_config("127.0.0.1:0");
    let first = bind(&kd, config.clone());
    meet((&first, &kd), (&l, &kl)).await;
    p2p_router::transport::AsyncTransport::close(&first).await;
    drop(first);
    let again = bind(&kd, config);
    let (conn, accepted) = handshaken(&again, &kd, &l, &kl, l.local_addrs()[0]).await;
    assert!(
        conn.resumed(),
        "the rebound transport used its predecessor's ticket"
    );
    assert_eq!(id_of(&conn), kl.node_id());
    assert_eq!(id_of(&*accepted), kd.node_id());
}

#[tokio::test]
async fn a_dialer_without_tickets_falls_back_to_a_full_handshake() {
    let (kd, kl) = (key(172), key(173));
    let l = bind(&kl, quic_config("127.0.0.1:0"));
    let first = bind(&kd, quic_config("127.0.0.1:0"));
    meet((&first, &kd), (&l, &kl)).await;
    // The same node bound again with a fresh cache (as after a restart).
    let restarted = bind(&kd, quic_config("127.0.0.1:0"));
    let (conn, accepted) = handshaken(&restarted, &kd, &l, &kl, l.local_addrs()[0]).await;
    assert!(!conn.resumed());
    assert_eq!(id_of(&*accepted), kd.node_id());
}

#[tokio::test]
async fn a_cache_shared_by_two_keys_never_resumes_one_as_the_other() {
    let (ka, kb, kl) = (key(174), key(175), key(176));
    let l = bind(&kl, quic_config("127.0.0.1:0"));
    let config = quic_config("127.0.0.1:0");
    let shared = config.session_cache.clone();
    let a = bind(&ka, config.clone());
    meet((&a, &ka), (&l, &kl)).await;
    let mut other = quic_config("127.0.0.1:0");
    other.session_cache = shared;
    let b = bind(&kb, other);
    let (conn, accepted) = handshaken(&b, &kb, &l, &kl, l.local_addrs()[0]).await;
    assert!(!conn.resumed(), "a's ticket is not b's");
    assert_eq!(id_of(&*accepted), kb.node_id());
}

#[tokio::test]
async fn a_listener_whose_key_changed_is_refused_despite_our_ticket() {
    let (kd, kl, knew) = (key(177), key(178), key(179));
    let d = bind(&kd, quic_config("127.0.0.1:0"));
    let l = bind(&kl, quic_config("127.0.0.1:0"));
    meet((&d, &kd), (&l, &kl)).await;
    // Where we expect kl, a node with another key answers: it never had
    // the ticket's secret, so the handshake is a full one and fails.
    let changed = bind(&knew, quic_config("127.0.0.1:0"));
    match d.dial_quic(kl.node_id(), changed.local_addrs()[0]).await {
        Err(DialError::WrongPeer { expected, actual }) => {
            assert_eq!((expected, actual), (kl.node_id(), knew.node_id()));
        }
        other => panic!("expected WrongPeer, got {other:?}"),
    }
}

#[tokio::test]
async fn resumption_can_be_turned_off() {
    let (kd, kl) = (key(180), key(181));
    let mut config = quic_config("127.0.0.1:0");
    config.session_cache = SessionCache::new(0);
    let d = bind(&kd, config);
    let l = bind(&kl, quic_config("127.0.0.1:0"));
    let addr = l.local_addrs()[0];
    for _ in 0..2 {
        let (conn, _accepted) = handshaken(&d, &kd, &l, &kl, addr).await;
        assert!(!conn.resumed());
        conn.close(CloseReason::Shutdown).await;
    }
}
