//! Handshakes that never complete, sent as an attacker would (replayed
//! QUIC Initials from a plain UDP socket): one source holds at most its
//! share of the listener's handshake slots, and under pressure a source
//! must first answer a Retry, so a spoofed flood holds none. Honest
//! dialers from other addresses still get in meanwhile.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    alpn_for, captured_initials, connect, key, node, quic_config, raw_connect, within, ClientCert,
    NodeBuilder, NETWORK,
};
use p2p_router::{AcceptError, NodeKey, Transport};
use p2p_transport_quic::QuicTransport;

/// A listener with 8 handshake slots, 2 per source, and a handshake
/// timeout far longer than any of these tests.
fn listener() -> (QuicTransport, NodeKey) {
    let k = key(400);
    let mut config = quic_config("127.0.0.1:0");
    config.listener.max_incoming_handshakes = 8;
    config.listener.max_handshakes_per_ip = 2;
    config.listener.handshake_timeout = std::time::Duration::from_secs(60);
    (QuicTransport::bind(&node(&k), config).unwrap(), k)
}

/// Sends `initials` to `to` from a UDP socket on `from`, and never answers.
async fn replay(
    initials: &[Vec<u8>],
    from: &str,
    to: std::net::SocketAddr,
) -> tokio::net::UdpSocket {
    let socket = tokio::net::UdpSocket::bind(format!("{from}:0"))
        .await
        .unwrap();
    for initial in initials {
        socket.send_to(initial, to).await.unwrap();
    }
    socket
}

/// The Retry packets `socket` has received so far (QUIC v1 long header,
/// type 3: the first byte's top four bits set).
fn retries_received(socket: &tokio::net::UdpSocket) -> usize {
    let mut buf = vec![0u8; 65536];
    let mut retries = 0;
    while let Ok(len) = socket.try_recv(&mut buf) {
        if len > 0 && buf[0] & 0xf0 == 0xf0 {
            retries += 1;
        }
    }
    retries
}

/// A node on `ip` dials the listener and is accepted.
async fn honest_dial_from(ip: &str, listener: &QuicTransport, listener_key: &NodeKey) {
    let k = key(401);
    let honest = QuicTransport::bind(&node(&k), quic_config(&format!("{ip}:0"))).unwrap();
    let endpoint = listener.listen_endpoints()[0].clone();
    // The attackers' handshakes that fail are reported to `accept` first.
    let accept = async {
        loop {
            match listener.accept().await {
                Ok(conn) => return conn,
                Err(AcceptError::Connection { remote, reason }) => {
                    eprintln!("attacker's handshake from {remote}: {reason:?}");
                }
                Err(e) => panic!("{e}"),
            }
        }
    };
    let (dialed, accepted) = tokio::join!(
        within(
            "honest dial",
            honest.dial(listener_key.node_id(), &endpoint)
        ),
        within("accept", accept)
    );
    assert_eq!(dialed.unwrap().peer_key(), listener_key.public_key());
    assert_eq!(accepted.peer_key(), k.public_key());
}

#[tokio::test]
async fn stalled_handshakes_from_one_ip_hold_only_that_ips_share() {
    let (l, lk) = listener();
    let to = l.local_addrs()[0];
    // Eight stalled handshakes would take every slot; one source gets two,
    // which is below the pressure mark, so nothing else changes.
    let initials = captured_initials(8, lk.node_id()).await;
    let attacker = replay(&initials, "127.0.0.1", to).await;
    honest_dial_from("127.0.0.2", &l, &lk).await;
    // The listener answered the attacker before the honest dialer: had
    // all eight been admitted, half the slots would have been taken and
    // the rest asked for a Retry.
    assert_eq!(retries_received(&attacker), 0, "never under pressure");
}

#[tokio::test]
async fn under_pressure_a_flood_that_never_answers_a_retry_holds_nothing_more() {
    let (l, lk) = listener();
    let to = l.local_addrs()[0];
    // Four sources, two each, would take all eight slots. The first four
    // take half: from then on a new source must answer a Retry, which
    // replayed packets never do.
    let initials = captured_initials(8, lk.node_id()).await;
    let mut attackers = Vec::new();
    for (i, pair) in initials.chunks(2).enumerate() {
        attackers.push(replay(pair, &format!("127.0.0.{}", 10 + i), to).await);
    }
    // A real client answers the Retry and gets one of the free slots.
    honest_dial_from("127.0.0.2", &l, &lk).await;
    let retried: usize = attackers.iter().map(retries_received).sum();
    assert_eq!(retried, 4, "the four after the pressure mark");
}

/// Past TLS, the router's own handshake (NodeInfo and admission) has its
/// per-IP slots too: clients that finish TLS with fresh keys and then say
/// nothing hold two of them, not all four.
#[tokio::test]
async fn silent_clients_after_tls_hold_only_their_ips_router_handshakes() {
    let mut builder = NodeBuilder::new(key(410));
    builder.test.router.max_inbound_handshakes = 4;
    builder.test.router.max_handshakes_per_ip = 2;
    builder.test.router.handshake_timeout = std::time::Duration::from_secs(60);
    let mut target = builder.start();
    let to = target.addrs[0];
    let mut silent = Vec::new();
    for i in 0..4 {
        let cert = ClientCert::Node(Box::new(key(420 + i)));
        silent.push(
            within("TLS", raw_connect(to, cert, &alpn_for(NETWORK)))
                .await
                .unwrap(),
        );
    }
    // Two of the four are refused by IP; the other two hang in their
    // handshakes (they never open the control stream).
    within(
        "refusals",
        target.router.stats_when(|s| s.refused_inbound == 2),
    )
    .await;
    let mut honest = NodeBuilder::new(key(411)).listen(&["127.0.0.2:0"]).start();
    let address = target.address_at(0);
    connect(&mut honest, &mut target, address).await;
    drop(silent);
}
