//! Attacks on a router over MConnection, written as an attacker would
//! (raw TCP, a SecretConnection built by hand, hand-encoded packets), each
//! while an honest MConnection peer sends a message every 5 ms: each
//! attack must be refused or contained, and the honest flow must never
//! stall (no gap of a second) during or after it. A table of the honest
//! peer's rate per attack is printed.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::attacker::{tcp_from, until_closed, AuthMessage, KeyMessage, Sealed, FRAME_DATA};
use p2p_router::pex::PexOptions;
use p2p_router::test_utils::attack::{send_to_a_reader_of_nothing, HonestFlow};
use p2p_router::test_utils::{
    self, key, text, TestNode, TestNodeBuilder, TEST_NETWORK, TEXT_CHANNEL,
};
use p2p_router::{NodeInfo, NodeKey};
use p2p_transport_mconn::{MconnConfig, MconnTransport};
use prost::Message;
use tendermint_proto::v0_34::p2p::{self as tm, packet::Sum};
use tokio::io::AsyncWriteExt;

const PATIENCE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    test_utils::within(PATIENCE, what, f).await
}

/// A router over MConnection listening on `ip`.
async fn mconn_node(builder: TestNodeBuilder, ip: &str) -> TestNode {
    let mut config = MconnConfig::fast().listen_on(format!("{ip}:0").parse().unwrap());
    // Short, so that the connections that never finish end quickly.
    config.listener.handshake_timeout = Duration::from_secs(2);
    let transport = MconnTransport::bind(&builder.key, config).await.unwrap();
    let address = format!(
        "mconn://{}@{}",
        builder.key.node_id(),
        transport.local_addrs()[0]
    )
    .parse()
    .unwrap();
    builder.start(Arc::new(transport), address)
}

struct Arena {
    target: TestNode,
    _honest: TestNode,
    flow: HonestFlow,
}

/// The target on 127.0.0.1 (running PEX, skipping private addresses) and
/// an honest peer on 127.0.0.2 that sends it a message every 5 ms.
async fn arena() -> Arena {
    let mut builder = TestNodeBuilder::new(key(650));
    let mut pex = PexOptions::default();
    pex.strict_addresses = true;
    builder.pex = Some(pex);
    let mut target = mconn_node(builder, "127.0.0.1").await;
    let mut honest = mconn_node(TestNodeBuilder::new(key(651)), "127.0.0.2").await;
    // The target dials, so the honest peer is outbound for it and no
    // inbound limit an attack fills can touch it.
    test_utils::connect(&mut target, &mut honest).await;
    let flow = HonestFlow::start(&honest, target.id());
    Arena {
        target,
        _honest: honest,
        flow,
    }
}

impl Arena {
    fn addr(&self) -> std::net::SocketAddr {
        let address = self.target.address().to_string();
        address.rsplit('@').next().unwrap().parse().unwrap()
    }
}

fn seed(n: u8) -> [u8; 32] {
    [n; 32]
}

/// A handshake the target must end by closing the connection.
async fn refused(to: SocketAddr, ip: &str, n: u8, key: KeyMessage, auth: AuthMessage) {
    let stream = tcp_from(ip, to).await;
    match Sealed::handshake(stream, seed(n), key, auth).await {
        Err((_, mut stream)) => within("closed", until_closed(&mut stream)).await,
        // The target sends its own auth message before it checks ours: it
        // must close now.
        Ok(mut sealed) => within("closed", sealed.until_closed()).await,
    }
}

/// A peer through the SecretConnection and the NodeInfo exchange.
async fn admitted(to: SocketAddr, ip: &str, n: u8) -> Sealed {
    let stream = tcp_from(ip, to).await;
    let mut sealed = Sealed::handshake(stream, seed(n), KeyMessage::Fresh, AuthMessage::Honest)
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let k = NodeKey::from_seed(seed(n));
    let mut info = NodeInfo::new(k.node_id(), TEST_NETWORK, "attacker");
    info.listen_addr = format!("{ip}:1");
    info.channels = vec![0x00, TEXT_CHANNEL.0];
    sealed
        .write(&info.encode_length_delimited_to_vec())
        .await
        .unwrap();
    within("their NodeInfo", sealed.read_delimited())
        .await
        .unwrap();
    sealed
}

fn packet(sum: Sum) -> Vec<u8> {
    tm::Packet { sum: Some(sum) }.encode_length_delimited_to_vec()
}

fn msg(channel: i32, eof: bool, data: Vec<u8>) -> Vec<u8> {
    packet(Sum::PacketMsg(tm::PacketMsg {
        channel_id: channel,
        eof,
        data,
    }))
}

/// An admitted peer writes `bytes` (sealed) and must be dropped for it.
async fn dropped_for(to: SocketAddr, ip: &str, n: u8, bytes: Vec<u8>) {
    let mut sealed = admitted(to, ip, n).await;
    let _ = sealed.write(&bytes).await;
    within("dropped", sealed.until_closed()).await;
}

/// A known point of order 8 on Curve25519.
const ORDER_8: [u8; 32] = [
    0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
    0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_over_mconn_contains_each_attack_and_keeps_serving_an_honest_peer() {
    let mut a = arena().await;
    let to = a.addr();
    let Arena { target, flow, .. } = &mut a;
    let target = &*target;

    flow.under_attack(target, "20 TCP connections that never send a key", async {
        let mut silent = Vec::new();
        for _ in 0..20 {
            silent.push(tcp_from("127.0.0.3", to).await);
        }
        // Refused at once past the per-IP share, timed out otherwise.
        for stream in &mut silent {
            within("closed", until_closed(stream)).await;
        }
    })
    .await;
    // Handshakes the target refuses: (what, the key message, the auth
    // message), each from its own key.
    let bad_handshakes = [
        (
            "an ephemeral key of order 8",
            KeyMessage::Point(ORDER_8),
            AuthMessage::Honest,
        ),
        (
            "an all-zero ephemeral key (all-zero secret)",
            KeyMessage::Point([0; 32]),
            AuthMessage::Honest,
        ),
        // A BytesValue of 3 bytes, then a length prefix of 2^28.
        (
            "a malformed key message",
            KeyMessage::Raw(vec![5, 0x0a, 3, 1, 2, 3]),
            AuthMessage::Honest,
        ),
        (
            "a key message of 2^28 bytes",
            KeyMessage::Raw(vec![0xff, 0xff, 0xff, 0x7f]),
            AuthMessage::Honest,
        ),
        (
            "an auth signature of the wrong challenge",
            KeyMessage::Fresh,
            AuthMessage::WrongChallenge,
        ),
        (
            "a secp256k1 key in the auth message",
            KeyMessage::Fresh,
            AuthMessage::Secp256k1,
        ),
    ];
    for (n, (name, key_message, auth_message)) in bad_handshakes.into_iter().enumerate() {
        flow.under_attack(target, name, async {
            refused(to, "127.0.0.4", 1 + n as u8, key_message, auth_message).await;
        })
        .await;
    }

    flow.under_attack(target, "a sealed frame claiming 2,000 data bytes", async {
        let mut sealed = admitted(to, "127.0.0.5", 10).await;
        let frame = sealed.seal(2_000, &[0; 16]);
        sealed.stream.write_all(&frame).await.unwrap();
        within("dropped", sealed.until_closed()).await;
    })
    .await;
    flow.under_attack(target, "a frame that fails to authenticate", async {
        let mut sealed = admitted(to, "127.0.0.5", 11).await;
        let mut frame = sealed.seal(4, &[0x02, 0x0a, 0x00, 0x00]);
        frame[7] ^= 1;
        sealed.stream.write_all(&frame).await.unwrap();
        within("dropped", sealed.until_closed()).await;
    })
    .await;
    flow.under_attack(target, "a packet on an unknown channel", async {
        dropped_for(to, "127.0.0.5", 12, msg(0x55, true, vec![1])).await;
    })
    .await;
    flow.under_attack(
        target,
        "reassembly past the channel maximum (eof=false x 1,100)",
        async {
            let mut bytes = Vec::new();
            for _ in 0..1_100 {
                bytes.extend(msg(
                    i32::from(TEXT_CHANNEL.0),
                    false,
                    vec![0; FRAME_DATA - 16],
                ));
            }
            dropped_for(to, "127.0.0.5", 13, bytes).await;
        },
    )
    .await;
    flow.under_attack(target, "an undecodable packet", async {
        dropped_for(to, "127.0.0.5", 14, vec![0x02, 0xff, 0xff]).await;
    })
    .await;
    flow.under_attack(target, "a packet length over the maximum", async {
        dropped_for(to, "127.0.0.5", 15, vec![0x80, 0x80, 0x40]).await;
    })
    .await;

    let before = test_utils::process_rss_bytes();
    flow.under_attack(target, "100,000 pings, no pong read", async {
        let mut sealed = admitted(to, "127.0.0.6", 16).await;
        let ping = packet(Sum::PacketPing(tm::PacketPing {}));
        let burst: Vec<u8> = ping
            .iter()
            .copied()
            .cycle()
            .take(ping.len() * 1_000)
            .collect();
        for _ in 0..100 {
            if sealed.write(&burst).await.is_err() {
                break;
            }
        }
    })
    .await;
    let grown = test_utils::process_rss_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "RSS grew by {} MB", grown >> 20);

    let sealed = admitted(to, "127.0.0.7", 17).await;
    let reader_id = NodeKey::from_seed(seed(17)).node_id();
    let tx = target.tx.clone();
    let before = test_utils::process_rss_bytes();
    flow.under_attack(
        target,
        "a peer that stops reading, sent 64 KiB for 3 s",
        async {
            let line = text("x".repeat(64 << 10));
            send_to_a_reader_of_nothing(&tx, reader_id, line, 20_000, Duration::from_secs(3)).await;
        },
    )
    .await;
    let grown = test_utils::process_rss_bytes().saturating_sub(before);
    assert!(grown < 128 << 20, "RSS grew by {} MB", grown >> 20);
    drop(sealed);

    flow.under_attack(
        target,
        "private-range addresses in a CometBFT PEX response",
        async {
            let mut sealed = admitted(to, "127.0.0.8", 18).await;
            // The target asks first (its first request goes out at once).
            loop {
                let body = within("PEX request", sealed.read_delimited())
                    .await
                    .unwrap();
                let packet = tm::Packet::decode(&body[..]).unwrap();
                if let Some(Sum::PacketMsg(m)) = packet.sum {
                    if m.channel_id == 0 {
                        break;
                    }
                }
            }
            let addrs = [
                "10.1.2.3",
                "192.168.1.1",
                "172.16.0.9",
                "127.0.0.99",
                "169.254.0.1",
            ]
            .iter()
            .enumerate()
            .map(|(i, ip)| tm::NetAddress {
                id: key(300 + i as u64).node_id().to_string(),
                ip: (*ip).into(),
                port: 26656,
            })
            .collect();
            let response = tm::Message {
                sum: Some(tm::message::Sum::PexAddrs(tm::PexAddrs { addrs })),
            };
            let bytes = msg(0, true, response.encode_to_vec());
            sealed.write(&bytes).await.unwrap();
            // A valid answer: the peer stays, nothing of it is kept.
            let ping = packet(Sum::PacketPing(tm::PacketPing {}));
            sealed.write(&ping).await.unwrap();
            loop {
                let body = within("pong", sealed.read_delimited()).await.unwrap();
                if matches!(
                    tm::Packet::decode(&body[..]).unwrap().sum,
                    Some(Sum::PacketPong(_))
                ) {
                    break;
                }
            }
        },
    )
    .await;
    let known = target.known_set().await;
    for i in 0..5 {
        assert!(
            !known.contains(&key(300 + i).node_id()),
            "a private address was kept"
        );
    }

    println!("{}", flow.table());
}
