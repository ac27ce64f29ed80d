//! Interoperability with an implementation no one here wrote: the
//! `tendermint-p2p` crate's SecretConnection (v0.34 protocol) with packets
//! from `tendermint-proto`, against our transport, in both directions.

#![allow(clippy::unwrap_used)]

mod common;

use common::tendermint::{packet, read_delimited};

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use p2p_router::transport::Admission;
use p2p_router::{ChannelId, Connection, NodeId, NodeInfo, NodeKey, Transport};
use prost::Message;
use tendermint_p2p::secret_connection::{SecretConnection, Version};
use tendermint_proto::v0_34::p2p::{self as tm, packet::Sum};

const NETWORK: &str = "interop-chain";
const CHANNEL: u8 = 0x20;
const PATIENCE: Duration = Duration::from_secs(30);

fn their_seed() -> [u8; 32] {
    [0x42; 32]
}

fn their_id() -> NodeId {
    NodeKey::from_seed(their_seed()).node_id()
}

fn their_node_info(listen: &str) -> tm::DefaultNodeInfo {
    tm::DefaultNodeInfo {
        protocol_version: Some(tm::ProtocolVersion {
            p2p: 8,
            block: 11,
            app: 0,
        }),
        default_node_id: their_id().to_string(),
        listen_addr: listen.into(),
        network: NETWORK.into(),
        version: "0.34.24".into(),
        channels: vec![CHANNEL, 0x21],
        moniker: "tendermint-rs".into(),
        other: Some(tm::DefaultNodeInfoOther {
            tx_index: "on".into(),
            rpc_address: "tcp://127.0.0.1:26657".into(),
        }),
    }
}

fn our_node_info(key: &NodeKey) -> NodeInfo {
    let mut info = NodeInfo::new(key.node_id(), NETWORK, "p2p-router");
    info.listen_addr = "tcp://127.0.0.1:26656".into();
    info.channels = vec![CHANNEL];
    info
}

/// What the Tendermint side saw of us.
struct TheirView {
    ours_seen: tm::DefaultNodeInfo,
    pong: bool,
    reply: Vec<u8>,
    remote: NodeId,
}

/// What the tendermint-rs side does on a TCP connection: the
/// SecretConnection handshake with key `sk`, send its NodeInfo and read
/// ours, send a 5000-byte message in 1024-byte packets and a ping, then
/// read packets until our 3000-byte reply is complete.
fn tendermint_side(stream: TcpStream, sk: ed25519_consensus::SigningKey) -> TheirView {
    let conn = SecretConnection::new(stream, sk, Version::V0_34).unwrap();
    let remote = conn.remote_pubkey().peer_id();
    let remote = NodeId::from_bytes(*remote.as_bytes().first_chunk::<20>().unwrap());
    let (mut send, recv) = conn.split().unwrap();
    let mut recv = BufReader::with_capacity(4096, recv);
    send.write_all(&their_node_info("tcp://127.0.0.1:1").encode_length_delimited_to_vec())
        .unwrap();
    let ours: tm::DefaultNodeInfo = read_delimited(&mut recv);

    let message: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<&[u8]> = message.chunks(1024).collect();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend(packet(Sum::PacketMsg(tm::PacketMsg {
            channel_id: i32::from(CHANNEL),
            eof: i == chunks.len() - 1,
            data: chunk.to_vec(),
        })));
    }
    out.extend(packet(Sum::PacketPing(tm::PacketPing {})));
    send.write_all(&out).unwrap();
    send.flush().unwrap();

    // Our pong and our reply may come in either order: read until both.
    let (mut pong, mut reply, mut complete) = (false, Vec::new(), false);
    while !(pong && complete) {
        let p: tm::Packet = read_delimited(&mut recv);
        match p.sum {
            Some(Sum::PacketPong(_)) => pong = true,
            Some(Sum::PacketMsg(m)) => {
                assert_eq!(m.channel_id, i32::from(CHANNEL));
                assert!(m.data.len() <= 1024, "chunks of at most 1024 bytes");
                assert!(!complete, "one reply only");
                reply.extend_from_slice(&m.data);
                complete = m.eof;
            }
            Some(Sum::PacketPing(_)) => {}
            None => panic!("empty packet"),
        }
    }
    TheirView {
        ours_seen: ours,
        pong,
        reply,
        remote,
    }
}

/// `f`'s value, which must come within `PATIENCE` and be `Ok`.
async fn patiently<T, E: std::fmt::Debug>(f: impl std::future::Future<Output = Result<T, E>>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .expect("in time")
        .unwrap()
}

/// Our side, once connected: the peer's id, NodeInfo, the 5000-byte
/// message, a reply.
async fn our_side(conn: &dyn Connection, key: &NodeKey) -> NodeInfo {
    // Node ids agree on both sides.
    assert_eq!(NodeId::from_public_key(&conn.peer_key()), their_id());
    let theirs = conn.handshake(&our_node_info(key)).await.unwrap();
    let message = patiently(conn.recv(ChannelId(CHANNEL), 1 << 20)).await;
    let want: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        message.as_ref(),
        want.as_slice(),
        "reassembled from 5 packets"
    );
    let reply = Bytes::from(vec![7u8; 3000]);
    conn.send(ChannelId(CHANNEL), reply).await.unwrap();
    theirs
}

/// Both sides saw each other right: NodeInfo both ways, our pong, our
/// 3000-byte reply reassembled on theirs.
async fn check(theirs: &NodeInfo, view: tokio::task::JoinHandle<TheirView>, our_key: &NodeKey) {
    let view = patiently(view).await;
    let ours_seen = &view.ours_seen;
    assert_eq!(view.remote, our_key.node_id());
    assert!(view.pong, "we answered their ping");
    assert_eq!(
        view.reply,
        vec![7u8; 3000],
        "reply reassembled on their side"
    );
    assert_eq!(theirs.node_id, their_id().to_string());
    assert_eq!(theirs.moniker, "tendermint-rs");
    assert_eq!(theirs.channels, vec![CHANNEL, 0x21]);
    assert_eq!(ours_seen.default_node_id, our_key.node_id().to_string());
    assert_eq!(ours_seen.network, NETWORK);
    assert_eq!(ours_seen.channels, vec![CHANNEL]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_listener_accepts_tendermint_rs() {
    let key = NodeKey::from_seed([0x11; 32]);
    let transport = common::fast_listener(&key).await;
    let addr = transport.local_addrs()[0];
    let theirs = tokio::task::spawn_blocking(move || {
        let stream = TcpStream::connect(addr).unwrap();
        let sk = ed25519_consensus::SigningKey::from(their_seed());
        tendermint_side(stream, sk)
    });
    let conn = patiently(transport.accept()).await;
    conn.send_admission(Admission::Accepted).await.unwrap();
    let their_info = our_side(&*conn, &key).await;
    check(&their_info, theirs, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_dialer_connects_to_tendermint_rs() {
    let key = NodeKey::from_seed([0x12; 32]);
    let transport = common::fast_dialer(&key).await;
    let (addr, theirs) = tendermint_listener(tendermint_side);
    let conn = patiently(transport.dial_mconn(their_id(), addr)).await;
    let their_info = our_side(&conn, &key).await;
    assert_eq!(conn.recv_admission().await.unwrap(), Admission::Accepted);
    check(&their_info, theirs, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialing_tendermint_rs_under_another_id_fails() {
    let key = NodeKey::from_seed([0x13; 32]);
    let transport = common::fast_dialer(&key).await;
    let (addr, theirs) = tendermint_listener(|stream, sk| {
        // The handshake itself succeeds on their side.
        SecretConnection::new(stream, sk, Version::V0_34).is_ok()
    });
    let wrong = NodeKey::from_seed([0x99; 32]).node_id();
    let got = transport.dial_mconn(wrong, addr).await;
    assert!(matches!(
        got,
        Err(p2p_router::DialError::WrongPeer { expected, actual }) if expected == wrong && actual == their_id()
    ));
    assert!(theirs.await.unwrap());
}

/// A tendermint-rs listener on a loopback port, with their key, running
/// `side` on the first connection on a blocking thread.
fn tendermint_listener<T: Send + 'static>(
    side: impl FnOnce(TcpStream, ed25519_consensus::SigningKey) -> T + Send + 'static,
) -> (SocketAddr, tokio::task::JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let theirs = tokio::task::spawn_blocking(move || {
        let (stream, _) = listener.accept().unwrap();
        side(stream, ed25519_consensus::SigningKey::from(their_seed()))
    });
    (addr, theirs)
}
