//! CometBFT's peer exchange against types and code no one here wrote:
//! `tendermint-proto`'s PEX and NodeInfo messages (v0.34, v0.37, v0.38)
//! byte for byte, and a peer built from `tendermint-p2p`'s SecretConnection
//! and MConnection packets running a CometBFT-style exchange with a router.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::tendermint::{packet, read_delimited, try_read_delimited};
use p2p_router::pex::{PexAddress, PexMessage, PexSum, PEX_CHANNEL};
use p2p_router::test_utils::{
    key, text, within, TestNode, TestNodeBuilder, TEST_NETWORK, TEXT_CHANNEL,
};
use p2p_router::{Host, NodeId, NodeInfo, NodeKey, PeerAddress, Protocol};
use p2p_transport_mconn::{MconnConfig, MconnTransport};
use prost::Message;
use tendermint_p2p::secret_connection::{SecretConnection, Version};

const PATIENCE: Duration = Duration::from_secs(30);

/// The wire tests, once per CometBFT version's generated types.
macro_rules! wire_tests {
    ($version:ident) => {
        mod $version {
            use super::*;
            use tendermint_proto::$version::p2p as tm;

            fn their_addrs() -> tm::Message {
                let addrs = vec![
                    tm::NetAddress {
                        id: key(1).node_id().to_string(),
                        ip: "127.0.0.2".into(),
                        port: 26656,
                    },
                    tm::NetAddress {
                        id: key(2).node_id().to_string(),
                        ip: "::1".into(),
                        port: 26657,
                    },
                ];
                tm::Message {
                    sum: Some(tm::message::Sum::PexAddrs(tm::PexAddrs { addrs })),
                }
            }

            #[test]
            fn a_request_is_the_same_bytes_both_ways() {
                let theirs = tm::Message {
                    sum: Some(tm::message::Sum::PexRequest(tm::PexRequest {})),
                };
                assert_eq!(
                    PexMessage::request().encode_to_vec(),
                    theirs.encode_to_vec()
                );
                let ours = PexMessage::decode(&theirs.encode_to_vec()[..]).unwrap();
                assert!(matches!(ours.sum, Some(PexSum::Request(_))));
            }

            #[test]
            fn their_addresses_decode_as_ours_and_ours_encode_as_theirs() {
                let bytes = their_addrs().encode_to_vec();
                let ours = PexMessage::decode(&bytes[..]).unwrap();
                let Some(PexSum::Response(response)) = &ours.sum else {
                    panic!("not a response: {ours:?}");
                };
                assert_eq!(
                    response.addresses,
                    vec![
                        PexAddress::net(key(1).node_id().to_string(), "127.0.0.2", 26656),
                        PexAddress::net(key(2).node_id().to_string(), "::1", 26657),
                    ]
                );
                assert_eq!(ours.encode_to_vec(), bytes, "and back, byte for byte");
                let back = tm::Message::decode(&ours.encode_to_vec()[..]).unwrap();
                assert_eq!(back, their_addrs());
            }

            #[test]
            fn node_info_is_the_same_bytes_both_ways() {
                let mut ours = NodeInfo::new(key(3).node_id(), "chain-a", "ours");
                ours.listen_addr = "tcp://127.0.0.1:26656".into();
                ours.channels = vec![0x00, 0x20];
                let other = ours.other.clone().unwrap_or_default();
                let versions = ours.protocol_version.unwrap();
                let theirs = tm::DefaultNodeInfo {
                    protocol_version: Some(tm::ProtocolVersion {
                        p2p: versions.p2p,
                        block: versions.block,
                        app: versions.app,
                    }),
                    default_node_id: ours.node_id.clone(),
                    listen_addr: ours.listen_addr.clone(),
                    network: ours.network.clone(),
                    version: ours.version.clone(),
                    channels: ours.channels.clone(),
                    moniker: ours.moniker.clone(),
                    other: Some(tm::DefaultNodeInfoOther {
                        tx_index: other.tx_index,
                        rpc_address: other.rpc_address,
                    }),
                };
                assert_eq!(ours.encode_to_vec(), theirs.encode_to_vec());
                let decoded = NodeInfo::decode(&theirs.encode_to_vec()[..]).unwrap();
                assert_eq!(decoded, ours);
            }
        }
    };
}

wire_tests!(v0_34);
wire_tests!(v0_37);
wire_tests!(v0_38);

use tendermint_proto::v0_34::p2p as tm;
use tm::packet::Sum;

/// The CometBFT-style peer's key.
fn their_key() -> NodeKey {
    NodeKey::from_seed([0x42; 32])
}

/// A router on MConnection with PEX, knowing a few addresses: two it may
/// tell a CometBFT peer about, and two it must not (QUIC, a DNS name).
async fn router() -> (TestNode, SocketAddr) {
    let k = key(0);
    let mut config = MconnConfig::fast().listen_on("127.0.0.1:0".parse().unwrap());
    config.listener.handshake_timeout = Duration::from_secs(5);
    let transport = MconnTransport::bind(&k, config).await.unwrap();
    let listen = transport.local_addrs()[0];
    let address = PeerAddress::new(
        Protocol::Mconn,
        k.node_id(),
        Host::from(listen.ip()),
        listen.port(),
    );
    let node = TestNodeBuilder::new(k)
        .with_pex()
        .start(Arc::new(transport), address);
    // Loopback addresses where nobody listens: dials to them fail at once.
    for (n, url) in [
        (10, "mconn://{}@127.0.0.10:9"),
        (11, "mconn://{}@[::1]:9"),
        (12, "quic://{}@127.0.0.12:9"),
        (13, "mconn://{}@localhost:9"),
    ] {
        let url = url.replace("{}", &key(n).node_id().to_string());
        node.router.add_peer(url.parse().unwrap()).await.unwrap();
    }
    (node, listen)
}

/// A PEX message on channel 0x00 in MConnection packets.
fn pex_packet(message: &tm::Message) -> Vec<u8> {
    packet(Sum::PacketMsg(tm::PacketMsg {
        channel_id: i32::from(PEX_CHANNEL.0),
        eof: true,
        data: message.encode_to_vec(),
    }))
}

fn request() -> tm::Message {
    tm::Message {
        sum: Some(tm::message::Sum::PexRequest(tm::PexRequest {})),
    }
}

/// What the CometBFT-style peer saw.
struct Exchange {
    /// Requests the router sent us.
    requests: usize,
    /// The addresses of the router's two answers.
    answers: Vec<Vec<tm::NetAddress>>,
    /// Whether the router hung up after our third, early request.
    hung_up: bool,
}

/// The CometBFT-style peer's NodeInfo, with a listen address nobody serves
/// (the router may dial it in vain).
fn their_node_info() -> tm::DefaultNodeInfo {
    tm::DefaultNodeInfo {
        protocol_version: Some(tm::ProtocolVersion {
            p2p: 8,
            block: 11,
            app: 0,
        }),
        default_node_id: their_key().node_id().to_string(),
        listen_addr: "tcp://127.0.0.1:9".into(),
        network: TEST_NETWORK.into(),
        version: "0.38.17".into(),
        channels: vec![PEX_CHANNEL.0],
        moniker: "cometbft-peer".into(),
        other: Some(tm::DefaultNodeInfoOther {
            tx_index: "on".into(),
            rpc_address: String::new(),
        }),
    }
}

/// The peer: handshake and NodeInfo, then two requests (CometBFT lets the
/// first two pass free), an answer to the router's request, and a third
/// request at once, which CometBFT's rules forbid.
fn cometbft_peer(router: SocketAddr, router_id: NodeId) -> Exchange {
    let stream = TcpStream::connect(router).unwrap();
    let signing = ed25519_consensus::SigningKey::from(their_key().seed());
    let conn = SecretConnection::new(stream, signing, Version::V0_34).unwrap();
    let (mut send, recv) = conn.split().unwrap();
    let mut recv = BufReader::with_capacity(4096, recv);
    let info = their_node_info();
    send.write_all(&info.encode_length_delimited_to_vec())
        .unwrap();
    let theirs: tm::DefaultNodeInfo = read_delimited(&mut recv);
    assert_eq!(theirs.default_node_id, router_id.to_string());

    send.write_all(&pex_packet(&request())).unwrap();
    let mut exchange = Exchange {
        requests: 0,
        answers: Vec::new(),
        hung_up: false,
    };
    let mut partial: HashMap<i32, Vec<u8>> = HashMap::new();
    loop {
        let Some(packet) = try_read_delimited::<tm::Packet>(&mut recv) else {
            exchange.hung_up = true;
            return exchange;
        };
        let message = match packet.sum {
            Some(Sum::PacketMsg(m)) => {
                let buffer = partial.entry(m.channel_id).or_default();
                buffer.extend_from_slice(&m.data);
                if !m.eof {
                    continue;
                }
                assert_eq!(m.channel_id, i32::from(PEX_CHANNEL.0), "only PEX is shared");
                let bytes = std::mem::take(buffer);
                tm::Message::decode(&bytes[..]).unwrap()
            }
            Some(Sum::PacketPing(_)) => {
                send.write_all(&packet_pong()).unwrap();
                continue;
            }
            _ => continue,
        };
        match message.sum {
            Some(tm::message::Sum::PexRequest(_)) => {
                exchange.requests += 1;
                let addrs = tm::PexAddrs {
                    addrs: vec![
                        net_address(key(20).node_id(), "127.0.0.20", 26656),
                        net_address(key(21).node_id(), "::1", 26657),
                        // Their address book would skip these two.
                        net_address(key(22).node_id(), "0.0.0.0", 26656),
                        tm::NetAddress {
                            id: "not-an-id".into(),
                            ip: "127.0.0.23".into(),
                            port: 26656,
                        },
                    ],
                };
                let answer = tm::Message {
                    sum: Some(tm::message::Sum::PexAddrs(addrs)),
                };
                send.write_all(&pex_packet(&answer)).unwrap();
            }
            Some(tm::message::Sum::PexAddrs(addrs)) => {
                exchange.answers.push(addrs.addrs);
                // The second request passes free; the third, at once, is
                // too soon.
                send.write_all(&pex_packet(&request())).unwrap();
            }
            None => panic!("empty PEX message"),
        }
    }
}

fn packet_pong() -> Vec<u8> {
    packet(Sum::PacketPong(tm::PacketPong {}))
}

fn net_address(id: NodeId, ip: &str, port: u32) -> tm::NetAddress {
    tm::NetAddress {
        id: id.to_string(),
        ip: ip.into(),
        port,
    }
}

/// CometBFT's `NetAddressFromProto` plus `Valid`: the IP parses and is
/// neither unspecified nor broadcast, the port fits 16 bits and is not 0,
/// the id is 20 bytes of hex.
fn valid_for_cometbft(a: &tm::NetAddress) -> bool {
    let ip_ok =
        a.ip.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.is_unspecified() && ip != std::net::Ipv4Addr::BROADCAST);
    let id_ok = a.id.len() == 40 && a.id.bytes().all(|b| b.is_ascii_hexdigit());
    ip_ok && id_ok && a.port > 0 && a.port < 65536
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cometbft_peer_exchanges_addresses_by_their_rules() {
    let (mut node, listen) = router().await;
    let router_id = node.id();
    let peer = tokio::task::spawn_blocking(move || cometbft_peer(listen, router_id));
    let exchange = within(PATIENCE, "the exchange", peer).await.unwrap();

    // The router asked once (a new peer is asked at once; the next request
    // may come only after CometBFT's interval).
    assert_eq!(exchange.requests, 1);
    // Its answers hold only what a CometBFT peer can dial and check.
    assert_eq!(exchange.answers.len(), 2, "two requests pass free");
    for answer in &exchange.answers {
        assert!(!answer.is_empty());
        for a in answer {
            assert!(valid_for_cometbft(a), "{a:?}");
        }
        let ids: Vec<String> = answer.iter().map(|a| a.id.clone()).collect();
        assert!(ids.contains(&key(10).node_id().to_string()));
        assert!(ids.contains(&key(11).node_id().to_string()));
        for never in [12, 13] {
            assert!(!ids.contains(&key(never).node_id().to_string()), "{never}");
        }
    }
    // The third request, too soon, cost the peer its connection.
    assert!(exchange.hung_up);
    p2p_router::test_utils::require_down(&mut node.updates, their_key().node_id()).await;

    // What it told us is stored as MConnection addresses; what its book
    // would skip is not.
    let known = node.router.advertise(key(99).node_id(), 100).await.unwrap();
    let urls: Vec<String> = known.iter().map(ToString::to_string).collect();
    for want in [
        format!("mconn://{}@127.0.0.20:26656", key(20).node_id()),
        format!("mconn://{}@[::1]:26657", key(21).node_id()),
    ] {
        assert!(urls.contains(&want), "{want} in {urls:?}");
    }
    assert!(!node.known_set().await.contains(&key(22).node_id()));
}

/// A CometBFT seed as the router meets it: the router dials it, it answers
/// the router's request once and hangs up. The answer is kept, and the
/// hang-up is no violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cometbft_seed_answers_once_and_hangs_up() {
    let (mut node, _) = router().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let seed_at = listener.local_addr().unwrap();
    let router_id = node.id();
    let seed = tokio::task::spawn_blocking(move || {
        let (stream, _) = listener.accept().unwrap();
        let signing = ed25519_consensus::SigningKey::from(their_key().seed());
        let conn = SecretConnection::new(stream, signing, Version::V0_34).unwrap();
        let (mut send, recv) = conn.split().unwrap();
        let mut recv = BufReader::with_capacity(4096, recv);
        let mut info = their_node_info();
        info.listen_addr = format!("tcp://{seed_at}");
        send.write_all(&info.encode_length_delimited_to_vec())
            .unwrap();
        let theirs: tm::DefaultNodeInfo = read_delimited(&mut recv);
        assert_eq!(theirs.default_node_id, router_id.to_string());
        // Wait for the router's request, answer, hang up.
        loop {
            let packet: tm::Packet = read_delimited(&mut recv);
            let Some(Sum::PacketMsg(m)) = packet.sum else {
                continue;
            };
            let message = tm::Message::decode(&m.data[..]).unwrap();
            if let Some(tm::message::Sum::PexRequest(_)) = message.sum {
                let addrs = tm::PexAddrs {
                    addrs: vec![net_address(key(30).node_id(), "127.0.0.30", 26656)],
                };
                let answer = tm::Message {
                    sum: Some(tm::message::Sum::PexAddrs(addrs)),
                };
                send.write_all(&pex_packet(&answer)).unwrap();
                send.flush().unwrap();
                return;
            }
        }
    });
    let seed_url = format!("mconn://{}@{seed_at}", their_key().node_id());
    node.router
        .add_peer(seed_url.parse().unwrap())
        .await
        .unwrap();
    within(PATIENCE, "the seed's answer", seed).await.unwrap();
    p2p_router::test_utils::require_down(&mut node.updates, their_key().node_id()).await;
    within(PATIENCE, "the learned address", async {
        loop {
            let seen = node.router.stats();
            if node.known_set().await.contains(&key(30).node_id()) {
                return;
            }
            node.router
                .stats_when(move |s| s.known_peers != seen.known_peers)
                .await;
        }
    })
    .await;
    assert_eq!(
        node.router.stats().peer_errors,
        0,
        "a seed's hang-up is no violation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_peer_sends_right_before_it_hangs_up_is_all_delivered() {
    const COUNT: usize = 300;
    let (node, listen) = router().await;
    let router_id = node.id();
    let peer = tokio::task::spawn_blocking(move || {
        let stream = std::net::TcpStream::connect(listen).unwrap();
        let raw = stream.try_clone().unwrap();
        let signing = ed25519_consensus::SigningKey::from(their_key().seed());
        let conn = SecretConnection::new(stream, signing, Version::V0_34).unwrap();
        let (mut send, recv) = conn.split().unwrap();
        let mut recv = BufReader::with_capacity(4096, recv);
        let mut info = their_node_info();
        info.channels = vec![PEX_CHANNEL.0, TEXT_CHANNEL.0];
        send.write_all(&info.encode_length_delimited_to_vec())
            .unwrap();
        let theirs: tm::DefaultNodeInfo = read_delimited(&mut recv);
        assert_eq!(theirs.default_node_id, router_id.to_string());
        // Everything at once, then the connection is dropped.
        let mut bytes = Vec::new();
        for n in 0..COUNT {
            bytes.extend(packet(Sum::PacketMsg(tm::PacketMsg {
                channel_id: i32::from(TEXT_CHANNEL.0),
                eof: true,
                data: text(format!("{n}")).encode_to_vec(),
            })));
        }
        send.write_all(&bytes).unwrap();
        send.flush().unwrap();
        // Hang up cleanly: FIN, then read what the router still sends
        // until it closes too (unread data would make the kernel reset
        // the connection, and a reset discards what the router's kernel
        // had not yet handed it).
        raw.shutdown(std::net::Shutdown::Write).unwrap();
        let mut sink = [0u8; 4096];
        let mut raw = raw;
        while matches!(std::io::Read::read(&mut raw, &mut sink), Ok(n) if n > 0) {}
    });
    // Read while the peer writes: the router's queues are bounded.
    for n in 0..COUNT {
        let got = tokio::time::timeout(PATIENCE, node.rx.recv()).await;
        let got = got.unwrap_or_else(|_| panic!("message {n} of {COUNT} never came"));
        assert_eq!(got.unwrap().message.text, format!("{n}"));
    }
    within(PATIENCE, "the peer's hang-up", peer).await.unwrap();
}
