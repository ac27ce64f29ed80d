//! Bad input from a peer speaking real SecretConnection (the
//! `tendermint-p2p` crate): each closes the connection with a protocol
//! error that is reported once, never a panic; and a peer that stops
//! answering pings is dropped.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use p2p_router::transport::ProtocolViolation;
use p2p_router::{
    ChannelDescriptor, ChannelId, Connection, ConnectionError, NodeInfo, NodeKey, Transport,
};
use p2p_transport_mconn::{MconnConfig, MconnTransport};
use prost::Message;
use tendermint_p2p::secret_connection::{SecretConnection, Version};
use tendermint_proto::v0_34::p2p::{self as tm, packet::Sum};

const CHANNEL: u8 = 0x20;
const PATIENCE: Duration = Duration::from_secs(30);

fn node_info(key: &NodeKey) -> NodeInfo {
    let mut info = NodeInfo::new(key.node_id(), "hostile-chain", "node");
    info.listen_addr = "127.0.0.1:26656".into();
    info.channels = vec![CHANNEL];
    info
}

fn msg(channel: i32, eof: bool, data: Vec<u8>) -> Vec<u8> {
    tm::Packet {
        sum: Some(Sum::PacketMsg(tm::PacketMsg {
            channel_id: channel,
            eof,
            data,
        })),
    }
    .encode_length_delimited_to_vec()
}

/// A `tendermint-p2p` peer on its own thread: connects to `addr` with the
/// key of `seed`, runs `script` on the SecretConnection, then holds the
/// connection until the returned sender is dropped.
fn tendermint_peer(
    addr: std::net::SocketAddr,
    seed: [u8; 32],
    script: impl FnOnce(&mut SecretConnection<TcpStream>) + Send + 'static,
) -> std::sync::mpsc::Sender<()> {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let stream = TcpStream::connect(addr).unwrap();
        let sk = ed25519_consensus::SigningKey::from(seed);
        let mut conn = SecretConnection::new(stream, sk, Version::V0_34).unwrap();
        script(&mut conn);
        let _ = done_rx.recv();
    });
    done_tx
}

/// The NodeInfo of the peer with key `seed`, length-delimited.
fn their_node_info(seed: [u8; 32]) -> Vec<u8> {
    node_info(&NodeKey::from_seed(seed)).encode_length_delimited_to_vec()
}

async fn accept(transport: &MconnTransport) -> Box<dyn Connection> {
    tokio::time::timeout(PATIENCE, transport.accept())
        .await
        .unwrap()
        .unwrap()
}

/// A peer completes the SecretConnection and NodeInfo exchange, then
/// writes `bytes` and keeps the connection open. Returns our side, with
/// the channel limited to 4096 bytes.
async fn after_handshake(
    config: MconnConfig,
    bytes: Vec<u8>,
) -> (
    MconnTransport,
    Box<dyn Connection>,
    std::sync::mpsc::Sender<()>,
) {
    let key = NodeKey::from_seed([0x31; 32]);
    let transport = MconnTransport::bind(&key, config.listen_on("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let addr = transport.local_addrs()[0];
    let done_tx = tendermint_peer(addr, [0x32; 32], move |conn| {
        conn.write_all(&their_node_info([0x32; 32])).unwrap();
        conn.write_all(&bytes).unwrap();
        conn.flush().unwrap();
    });
    let conn = accept(&transport).await;
    conn.handshake(&node_info(&key)).await.unwrap();
    conn.prepare_channel(
        &ChannelDescriptor::new(ChannelId(CHANNEL), "c").with_max_message_size(4096),
    );
    (transport, conn, done_tx)
}

/// The protocol error the connection reports for `bytes`.
async fn violation(bytes: Vec<u8>) -> ProtocolViolation {
    let (_t, conn, _done) = after_handshake(MconnConfig::fast(), bytes).await;
    let got = tokio::time::timeout(PATIENCE, conn.recv(ChannelId(CHANNEL), 4096))
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, conn.closed()).await.unwrap();
    // Reported once; after that the connection is simply closed.
    assert_eq!(
        conn.recv(ChannelId(CHANNEL), 4096).await,
        Err(ConnectionError::Closed)
    );
    match got {
        Err(ConnectionError::Protocol(reason)) => reason,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// Each malformed packet stream closes the connection with its own
/// violation.
#[tokio::test]
async fn malformed_packets_close_the_connection_with_their_reason() {
    let cases: [(&str, Vec<u8>, ProtocolViolation); 5] = [
        // A length prefix of 1 MiB, far over one 1024-byte chunk: refused
        // before it is read.
        (
            "oversized",
            vec![0x80, 0x80, 0x40],
            ProtocolViolation::PacketLength,
        ),
        (
            "unknown channel",
            msg(0x55, true, vec![1]),
            ProtocolViolation::UnknownChannel(0x55),
        ),
        (
            "negative channel",
            msg(-1, true, vec![1]),
            ProtocolViolation::UnknownChannel(-1),
        ),
        (
            "undecodable",
            vec![0x02, 0xff, 0xff],
            ProtocolViolation::UndecodablePacket,
        ),
        // An empty Packet: no kind set.
        ("no kind", vec![0x00], ProtocolViolation::UnknownPacketType),
    ];
    for (what, bytes, want) in cases {
        assert_eq!(violation(bytes).await, want, "{what}");
    }
}

#[tokio::test]
async fn reassembly_beyond_the_channel_maximum_closes_the_connection() {
    let mut bytes = Vec::new();
    for _ in 0..5 {
        bytes.extend(msg(i32::from(CHANNEL), false, vec![0; 1024]));
    }
    let reason = violation(bytes).await;
    assert_eq!(reason, ProtocolViolation::MessageTooLarge);
}

#[tokio::test]
async fn a_message_within_the_limit_after_many_chunks_is_delivered() {
    let mut bytes = Vec::new();
    for i in 0..4 {
        bytes.extend(msg(i32::from(CHANNEL), i == 3, vec![i; 1024]));
    }
    let (_t, conn, _done) = after_handshake(MconnConfig::fast(), bytes).await;
    let got = conn.recv(ChannelId(CHANNEL), 4096).await.unwrap();
    assert_eq!(got.len(), 4096);
    assert_eq!(got[4095], 3);
}

#[tokio::test]
async fn a_peer_that_answers_no_ping_is_dropped() {
    let mut config = MconnConfig::fast();
    config.ping_interval = Duration::from_millis(300);
    config.pong_timeout = Duration::from_millis(150);
    // The peer sends nothing after its NodeInfo and reads nothing.
    let (_t, conn, _done) = after_handshake(config, Vec::new()).await;
    tokio::time::timeout(PATIENCE, conn.closed()).await.unwrap();
    // Silence is not a protocol violation: just closed.
    assert_eq!(
        conn.recv(ChannelId(CHANNEL), 4096).await,
        Err(ConnectionError::Closed)
    );
}

#[tokio::test]
async fn a_peer_that_sends_anything_instead_of_pongs_is_kept() {
    // Tendermint v0.35 peers may answer a ping with other traffic; any
    // packet within the pong timeout proves the peer alive.
    let key = NodeKey::from_seed([0x33; 32]);
    let mut config = MconnConfig::fast().listen_on("127.0.0.1:0".parse().unwrap());
    config.ping_interval = Duration::from_millis(300);
    config.pong_timeout = Duration::from_millis(150);
    let transport = MconnTransport::bind(&key, config).await.unwrap();
    let addr = transport.local_addrs()[0];
    const COUNT: u8 = 30;
    let _peer = tendermint_peer(addr, [0x34; 32], |conn| {
        conn.write_all(&their_node_info([0x34; 32])).unwrap();
        // A message every 50 ms for 1.5 s (five ping intervals), never a
        // pong: the peer's pace is what is under test here.
        for n in 0..COUNT {
            conn.write_all(&msg(i32::from(CHANNEL), true, vec![n]))
                .unwrap();
            conn.flush().unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let conn = accept(&transport).await;
    conn.handshake(&node_info(&key)).await.unwrap();
    for n in 0..COUNT {
        let got = tokio::time::timeout(PATIENCE, conn.recv(ChannelId(CHANNEL), 4096))
            .await
            .unwrap();
        assert_eq!(got.unwrap().as_ref(), [n], "still connected at message {n}");
    }
}

#[tokio::test]
async fn an_oversized_node_info_fails_the_handshake() {
    let key = NodeKey::from_seed([0x35; 32]);
    let transport = common::fast_listener(&key).await;
    let addr = transport.local_addrs()[0];
    // Claims 20,000 bytes; the limit is 10,240.
    let _done = tendermint_peer(addr, [0x36; 32], |conn| {
        conn.write_all(&[0xa0, 0x9c, 0x01]).unwrap();
        conn.flush().unwrap();
    });
    let conn = accept(&transport).await;
    let got = conn.handshake(&node_info(&key)).await;
    assert_eq!(
        got.err(),
        Some(ConnectionError::Oversized {
            size: 20_000,
            max: 10_240
        })
    );
}
