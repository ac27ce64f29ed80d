//! TCP connections that never send their SecretConnection key: one source
//! holds at most its share of the listener's handshake slots, so a peer
//! from another address still gets in while they hang.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use p2p_router::{NodeId, NodeKey, Transport};
use p2p_transport_mconn::{MconnConfig, MconnTransport};
use tendermint_p2p::secret_connection::{SecretConnection, Version};

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn silent_connections_from_one_ip_hold_only_that_ips_share() {
    let key = NodeKey::from_seed([0x41; 32]);
    let mut config = MconnConfig::fast().listen_on("127.0.0.1:0".parse().unwrap());
    config.listener.max_incoming_handshakes = 4;
    config.listener.max_handshakes_per_ip = 2;
    config.listener.handshake_timeout = Duration::from_secs(60);
    let listener = MconnTransport::bind(&key, config).await.unwrap();
    let addr = listener.local_addrs()[0];

    // Four silent connections would take every slot for a minute.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }

    // A real peer from 127.0.0.2 completes its SecretConnection.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.unwrap().into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    let seed = [0x42; 32];
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let sk = ed25519_consensus::SigningKey::from(seed);
        let conn = SecretConnection::new(stream, sk, Version::V0_34);
        let _ = done_rx.recv();
        conn.is_ok()
    });
    let accepted = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("the honest peer is accepted while the silent ones hang")
        .unwrap();
    assert_eq!(
        NodeId::from_public_key(&accepted.peer_key()),
        NodeKey::from_seed(seed).node_id()
    );
    drop(done_tx);
    assert!(peer.join().unwrap());
    drop(silent);
}
