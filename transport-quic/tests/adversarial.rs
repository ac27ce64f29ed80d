//! Attacks on a router over QUIC, written as an attacker would (raw quinn
//! clients, replayed packets, hand-built streams), each while an honest
//! peer on another address sends a message every 5 ms: each attack must be
//! refused or contained, and the honest flow must never stall (no gap of
//! a second) during or after it. A table of the honest peer's rate per
//! attack is printed.

#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::time::Duration;

use common::*;
use p2p_router::test_utils::attack::{send_to_a_reader_of_nothing, HonestFlow};
use p2p_router::transport::Admission;
use p2p_router::{Connection, LocalNode, NodeInfo};
use p2p_transport_quic::QuicTransport;

struct Arena {
    target: QuicNode,
    flow: HonestFlow,
}

/// The target on 127.0.0.1 and an honest peer on 127.0.0.2 that sends it a
/// message every 5 ms.
async fn arena() -> (Arena, QuicNode) {
    let mut builder = NodeBuilder::new(key(600));
    builder.test.pex = Some(p2p_router::pex::PexOptions::default());
    let mut target = builder.start();
    let mut honest = NodeBuilder::new(key(601)).listen(&["127.0.0.2:0"]).start();
    let address = target.address_at(0);
    connect(&mut honest, &mut target, address).await;
    let flow = HonestFlow::start(&honest, target.id());
    (Arena { target, flow }, honest)
}

async fn under_attack(arena: &mut Arena, name: &str, attack: impl Future<Output = ()>) {
    arena.flow.under_attack(&arena.target, name, attack).await;
}

/// `n` raw clients presenting `cert()` with `alpn`; each must be refused.
async fn refused_clients(
    to: std::net::SocketAddr,
    n: u64,
    cert: impl Fn(u64) -> ClientCert,
    alpn: &[u8],
) {
    for i in 0..n {
        let got = raw_client(to, cert(i), alpn).await;
        assert!(got.is_err(), "client {i} was served");
    }
}

/// A raw client from `ip` (each attack has its own, so one attack's
/// per-IP limits do not decide the next).
async fn connect_from(
    ip: &str,
    to: std::net::SocketAddr,
    cert: ClientCert,
    alpn: &[u8],
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let endpoint = raw_endpoint(format!("{ip}:0").parse().unwrap(), cert, alpn);
    endpoint.connect(to, "peer").unwrap().await
}

/// A node that completed the handshake with the target over the crate's
/// transport, so that its attacks come after admission. Binds to `ip` so
/// that each attack has its own per-IP allowance.
struct Attacker {
    _transport: QuicTransport,
    conn: p2p_transport_quic::QuicConnection,
}

impl Attacker {
    fn quinn(&self) -> &quinn::Connection {
        self.conn.quinn()
    }

    /// A raw channel stream starting with `bytes` (header and all).
    async fn raw_stream(&self, bytes: &[u8]) -> quinn::SendStream {
        let mut s = within("stream credit", self.quinn().open_uni())
            .await
            .unwrap();
        s.write_all(bytes).await.unwrap();
        s
    }

    /// Waits for the target to ask for addresses (its first PEX message).
    async fn await_pex_request(&self) {
        let got = within("PEX request", self.conn.recv(PEX_CHANNEL, 1024)).await;
        assert_eq!(got.unwrap().as_ref(), PEX_REQUEST);
    }

    /// Sends PEX messages on a raw stream of channel 0.
    async fn send_pex(&self, messages: &[Vec<u8>]) {
        let mut bytes = vec![PEX_CHANNEL.0, 0];
        for m in messages {
            bytes.extend(frame(m));
        }
        let _ = self.raw_stream(&bytes).await;
    }

    /// The target drops the connection.
    async fn dropped(&self) {
        within("attacker dropped", self.quinn().closed()).await;
    }
}

/// Completes the handshake as `info` describes (edited by `edit`) and
/// returns the admission the target answered.
async fn handshake_as(
    target: &QuicNode,
    ip: &str,
    n: u64,
    edit: impl FnOnce(&mut NodeInfo),
) -> (Result<Admission, p2p_router::ConnectionError>, Attacker) {
    let k = key(n);
    let t = QuicTransport::bind(
        &LocalNode::new(k.clone(), NETWORK),
        quic_config(&format!("{ip}:0")),
    )
    .unwrap();
    let conn = within("dial", t.dial_quic(target.id(), target.addrs[0]))
        .await
        .unwrap();
    let mut info = NodeInfo::new(k.node_id(), NETWORK, "attacker");
    info.listen_addr = format!("{ip}:1");
    info.channels = vec![PEX_CHANNEL.0, CHAT.0, BULK.0];
    edit(&mut info);
    let admission = match within("handshake", conn.handshake(&info)).await {
        Ok(_) => within("admission", conn.recv_admission()).await,
        Err(e) => Err(e),
    };
    let attacker = Attacker {
        _transport: t,
        conn,
    };
    (admission, attacker)
}

/// A peer admitted by the target, from `ip`.
async fn admitted(target: &QuicNode, ip: &str, n: u64) -> Attacker {
    let (admission, attacker) = handshake_as(target, ip, n, |_| ()).await;
    assert_eq!(admission.unwrap(), Admission::Accepted);
    attacker
}

/// A handshake the target must refuse.
async fn refused_handshake(target: &QuicNode, ip: &str, n: u64, edit: impl FnOnce(&mut NodeInfo)) {
    let (admission, attacker) = handshake_as(target, ip, n, edit).await;
    assert!(
        !matches!(admission, Ok(Admission::Accepted | Admission::Visiting)),
        "admitted: {admission:?}"
    );
    attacker.dropped().await;
}

const PEX_CHANNEL: p2p_router::ChannelId = p2p_router::ChannelId(0);
/// A PEX request (`Message { pex_request {} }`).
const PEX_REQUEST: &[u8] = &[0x0a, 0x00];

/// A PEX response carrying `urls`, built by hand (PROTOCOL.md §9).
fn pex_response(urls: &[String]) -> Vec<u8> {
    let mut addrs = Vec::new();
    for url in urls {
        let mut address = vec![0x22];
        push_varint(&mut address, url.len() as u64);
        address.extend_from_slice(url.as_bytes());
        addrs.push(0x0a);
        push_varint(&mut addrs, address.len() as u64);
        addrs.extend(address);
    }
    let mut message = vec![0x12];
    push_varint(&mut message, addrs.len() as u64);
    message.extend(addrs);
    message
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A frame: varint length, then the message.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_varint(&mut out, message.len() as u64);
    out.extend_from_slice(message);
    out
}

/// The stream code the target stopped `stream` with.
async fn stopped_with(stream: &quinn::SendStream) -> u64 {
    let code = within("stop", stream.stopped()).await.unwrap();
    code.expect("stopped, not finished").into_inner()
}

/// Addresses nobody listens on, on loopback (a node that dials them sends
/// nothing beyond this machine).
fn unreachable_url(n: u64) -> String {
    format!("quic://{}@127.0.0.1:{}", key(n).node_id(), 1 + n % 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_contains_each_attack_and_keeps_serving_an_honest_peer() {
    let (mut a, _honest) = arena().await;
    let to = a.target.addrs[0];
    let alpn = alpn_for(NETWORK);

    under_attack(
        &mut a,
        "10 clients without a certificate",
        refused_clients(to, 10, |_| ClientCert::None, &alpn),
    )
    .await;
    under_attack(
        &mut a,
        "10 ECDSA certificates",
        refused_clients(to, 10, |_| ClientCert::Ecdsa, &alpn),
    )
    .await;
    under_attack(
        &mut a,
        "10 certificate chains",
        refused_clients(to, 10, |i| ClientCert::Chain(Box::new(key(700 + i))), &alpn),
    )
    .await;
    under_attack(
        &mut a,
        "10 keys shown but not held",
        refused_clients(
            to,
            10,
            |i| ClientCert::Impostor {
                shown: Box::new(key(720 + i)),
                signer: Box::new(key(740 + i)),
            },
            &alpn,
        ),
    )
    .await;
    under_attack(
        &mut a,
        "10 clients with another ALPN",
        refused_clients(to, 10, |i| ClientCert::Node(Box::new(key(760 + i))), b"h3"),
    )
    .await;

    let target_id = a.target.id();
    under_attack(
        &mut a,
        "100 handshakes that never complete (replayed Initials)",
        async {
            let initials = captured_initials(100, target_id).await;
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            for initial in &initials {
                socket.send_to(initial, to).await.unwrap();
            }
        },
    )
    .await;

    under_attack(&mut a, "8 clients silent after TLS", async {
        let mut silent = Vec::new();
        for i in 0..8 {
            let cert = ClientCert::Node(Box::new(key(780 + i)));
            // Past the per-IP limits some are refused at once; the rest
            // hold router handshake slots.
            if let Ok(conn) = connect_from("127.0.0.3", to, cert, &alpn).await {
                silent.push(conn);
            }
        }
        // They hold what they got until the router's handshake timeout
        // (5 s here, a quarter of it under pressure) ends them.
        for conn in &silent {
            within("router timeout", conn.closed()).await;
        }
    })
    .await;

    under_attack(&mut a, "10 control streams of garbage", async {
        for i in 0..10 {
            let cert = ClientCert::Node(Box::new(key(800 + i)));
            let conn = connect_from("127.0.0.4", to, cert, &alpn).await.unwrap();
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            let _ = send.write_all(&[0xff; 64]).await;
            let _ = send.finish();
            let closed = within("close", conn.closed()).await;
            assert!(
                matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if u64::from(c.error_code) == 0x10),
                "{closed:?}"
            );
        }
    })
    .await;

    under_attack(&mut a, "30 connect-and-drop cycles from one IP", async {
        for i in 0..30 {
            let cert = ClientCert::Node(Box::new(key(820 + i)));
            if let Ok(conn) = connect_from("127.0.0.5", to, cert, &alpn).await {
                conn.close(0u32.into(), b"");
            }
        }
    })
    .await;

    under_attack(&mut a, "5 dialers of another network", async {
        for i in 0..5 {
            let k = key(860 + i);
            let other =
                QuicTransport::bind(&LocalNode::new(k, "elsewhere"), quic_config("127.0.0.1:0"))
                    .unwrap();
            assert!(other.dial_quic(target_id, to).await.is_err());
        }
    })
    .await;

    let attacker = admitted(&a.target, "127.0.0.6", 880).await;
    under_attack(&mut a, "40 bad streams from an admitted peer", async {
        let quinn = attacker.quinn().clone();
        for i in 0..40u8 {
            let Ok(mut s) = quinn.open_uni().await else {
                break;
            };
            // Unknown channels, then garbage on a real one.
            let bytes: &[u8] = if i % 2 == 0 {
                &[9, 0, 1, 0]
            } else {
                &[CHAT.0, 0, 0xff, 0xff, 0xff]
            };
            let _ = s.write_all(bytes).await;
            let _ = s.finish();
        }
        // Its errors spend its budget: the router drops it.
        within("attacker dropped", quinn.closed()).await;
    })
    .await;

    more_before_admission(&mut a).await;
    after_admission(&mut a).await;
    router_and_pex(&mut a).await;
    println!("{}", a.flow.table());
}

/// The control stream's other malformations, floods, and a listener
/// that is not the node the target meant to dial.
async fn more_before_admission(a: &mut Arena) {
    let to = a.target.addrs[0];
    let alpn = alpn_for(NETWORK);
    let closed_with_0x10 = |closed: &quinn::ConnectionError| matches!(closed, quinn::ConnectionError::ApplicationClosed(c) if u64::from(c.error_code) == 0x10);
    // Bad control streams close the connection as a protocol violation:
    // (what, the bytes, whether the stream is then finished).
    let eleven_bytes = [[0xff; 10].as_slice(), &[0x01]].concat();
    let bad_control = [
        (
            "a control stream with an eleven-byte varint",
            eleven_bytes,
            false,
        ),
        (
            "a control stream finished inside its length",
            vec![0x80],
            true,
        ),
    ];
    for (n, (name, bytes, finish)) in bad_control.into_iter().enumerate() {
        under_attack(a, name, async {
            let cert = ClientCert::Node(Box::new(key(930 + n as u64)));
            let conn = connect_from("127.0.3.1", to, cert, &alpn).await.unwrap();
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            let _ = send.write_all(&bytes).await;
            if finish {
                let _ = send.finish();
            }
            let closed = within("close", conn.closed()).await;
            assert!(closed_with_0x10(&closed), "{closed:?}");
        })
        .await;
    }
    under_attack(a, "a channel stream before admission", async {
        let conn = connect_from("127.0.3.2", to, ClientCert::Node(Box::new(key(932))), &alpn)
            .await
            .unwrap();
        // No stream credit before the handshake: the open never completes,
        // and the silent client is closed at the handshake timeout.
        let opened = tokio::select! {
            opened = conn.open_uni() => opened.map(|_| ()),
            closed = conn.closed() => Err(closed),
        };
        assert!(opened.is_err(), "a stream opened before admission");
    })
    .await;
    under_attack(a, "50 simultaneous connections from one IP", async {
        let mut tries = tokio::task::JoinSet::new();
        for i in 0..50 {
            let alpn = alpn.clone();
            let cert = ClientCert::Node(Box::new(key(940 + i)));
            tries.spawn(async move { connect_from("127.0.3.3", to, cert, &alpn).await });
        }
        let results = tries.join_all().await;
        let refused = results.iter().filter(|r| r.is_err()).count();
        // At most the per-IP handshake share gets through TLS at once.
        assert!(refused >= 40, "{refused} of 50 refused");
    })
    .await;
    let target = &a.target;
    a.flow
        .under_attack(target, "NodeInfo of another network (same ALPN)", async {
            refused_handshake(target, "127.0.3.4", 990, |i| i.network = "elsewhere".into()).await;
        })
        .await;
    let k = key(991);
    let imposter =
        QuicTransport::bind(&LocalNode::new(k, NETWORK), quic_config("127.0.3.5:0")).unwrap();
    let meant = key(992).node_id();
    let wrong: p2p_router::PeerAddress = format!("quic://{meant}@{}", imposter.local_addrs()[0])
        .parse()
        .unwrap();
    a.flow
        .under_attack(target, "a listener whose key is not the dialed id", async {
            target.router.add_peer(wrong).await.unwrap();
            // The target refuses it in the TLS handshake (certificate_unknown).
            let got = within("the refused dial", p2p_router::Transport::accept(&imposter)).await;
            assert!(got.is_err(), "the target accepted the wrong key");
        })
        .await;
    assert!(!a.target.connected_set().await.contains(&meant));
}

/// Attacks by a peer the target admitted, on its channel streams.
async fn after_admission(a: &mut Arena) {
    let chat_max = NodeBuilder::new(key(0)).test.descriptor.max_message_size as u64;

    let attacker = admitted(&a.target, "127.0.1.1", 900).await;
    under_attack(a, "a stream for a channel not shared", async {
        let s = attacker.raw_stream(&[0x42, 0]).await;
        assert_eq!(stopped_with(&s).await, 0x02);
    })
    .await;
    under_attack(a, "a second stream with the same generation", async {
        let first = attacker.raw_stream(&[CHAT.0, 0]).await;
        let second = attacker.raw_stream(&[CHAT.0, 0]).await;
        // Their headers are read concurrently: whichever arrives second
        // is the duplicate.
        let code = tokio::select! {
            code = stopped_with(&first) => code,
            code = stopped_with(&second) => code,
        };
        assert_eq!(code, 0x03);
    })
    .await;
    let attacker = admitted(&a.target, "127.0.1.2", 901).await;
    let bulk_rx = a.target.bulk_rx.clone();
    a.flow
        .under_attack(&a.target, "generations racing, out of order", async {
            // Generation 3 comes first: a message on it shows it is read.
            let blob = [0x0a, 0x01, 0x07];
            let mut bytes = vec![BULK.0, 3];
            bytes.extend(frame(&blob));
            let _current = attacker.raw_stream(&bytes).await;
            within("blob", bulk_rx.recv()).await.unwrap();
            for g in [1, 2, 3] {
                let s = attacker.raw_stream(&[BULK.0, g]).await;
                assert_eq!(stopped_with(&s).await, 0x03, "generation {g}");
            }
            // 5 and 6 race: 6 replaces a waiting 5 (0x06), or arrives
            // first and makes 5 a stale generation (0x03).
            let five = attacker.raw_stream(&[BULK.0, 5]).await;
            let _six = attacker.raw_stream(&[BULK.0, 6]).await;
            let code = stopped_with(&five).await;
            assert!(code == 0x06 || code == 0x03, "stopped with {code}");
        })
        .await;
    let attacker = admitted(&a.target, "127.0.1.3", 902).await;
    // Bad lengths: the target stops the stream with the code shown.
    let length = |generation: u8, prefix: &[u8]| [&[CHAT.0, generation][..], prefix].concat();
    let varint = |v: u64| {
        let mut bytes = Vec::new();
        push_varint(&mut bytes, v);
        bytes
    };
    let eleven_bytes = [[0xff; 10].as_slice(), &[0x01]].concat();
    let bad_lengths = [
        ("a length prefix of 2^40", length(0, &varint(1 << 40)), 0x04),
        (
            "a maximal varint length (2^64 - 1)",
            length(1, &varint(u64::MAX)),
            0x04,
        ),
        (
            "a varint length of eleven bytes",
            length(2, &eleven_bytes),
            0x05,
        ),
        (
            "a message one byte over the channel maximum",
            length(3, &varint(chat_max + 1)),
            0x04,
        ),
    ];
    for (name, bytes, code) in bad_lengths {
        under_attack(a, name, async {
            let s = attacker.raw_stream(&bytes).await;
            assert_eq!(stopped_with(&s).await, code);
        })
        .await;
    }
    let attacker = admitted(&a.target, "127.0.1.4", 903).await;
    // Streams cut short or carrying garbage, then finished: the target
    // stops reading them (and reports the attacker).
    let mut undecodable = vec![CHAT.0, 1];
    undecodable.extend(frame(&[0xff, 0xff, 0xff]));
    let finished = [
        ("a truncated frame, then FIN", vec![CHAT.0, 0, 10, 1, 2, 3]),
        ("FIN inside the header", vec![BULK.0, 0x80]),
        ("an undecodable protobuf in a valid frame", undecodable),
    ];
    for (name, bytes) in finished {
        under_attack(a, name, async {
            let mut s = attacker.raw_stream(&bytes).await;
            s.finish().unwrap();
            within("finished", s.stopped()).await.unwrap();
        })
        .await;
    }
    // Each of those counted against the attacker; it is still connected
    // (a few reports stay within the error budget).
    assert!(attacker.quinn().close_reason().is_none());

    let attacker = admitted(&a.target, "127.0.1.7", 906).await;
    let before = test_utils::process_rss_bytes();
    under_attack(a, "100 streams opened at once, past the credit", async {
        let mut streams = Vec::new();
        for g in 0..100u8 {
            // The credit is 2 x the 3 shared channels. The target stops
            // each replaced stream, but a stream the attacker never
            // finishes or resets still counts: past the credit the open
            // waits. The wait is bounded only to end the attack.
            let open =
                tokio::time::timeout(Duration::from_millis(500), attacker.quinn().open_uni());
            let Ok(Ok(mut s)) = open.await else { break };
            let _ = s.write_all(&[BULK.0, g]).await;
            streams.push(s);
        }
        assert!(
            (1..=6).contains(&streams.len()),
            "{} streams open at once",
            streams.len()
        );
    })
    .await;
    let grown = test_utils::process_rss_bytes().saturating_sub(before);
    assert!(grown < 32 << 20, "RSS grew by {} MB", grown >> 20);

    let attacker = admitted(&a.target, "127.0.1.5", 904).await;
    let before = test_utils::process_rss_bytes();
    let bulk = a.target.bulk.clone();
    let attacker_id = key(904).node_id();
    under_attack(
        a,
        "a peer that never reads, sent 1 MiB messages for 3 s",
        async {
            let blob = Blob {
                data: vec![7; 1 << 20],
            };
            send_to_a_reader_of_nothing(&bulk, attacker_id, blob, 500, Duration::from_secs(3))
                .await;
        },
    )
    .await;
    let grown = test_utils::process_rss_bytes().saturating_sub(before);
    assert!(grown < 256 << 20, "RSS grew by {} MB", grown >> 20);
    drop(attacker);

    let target = &a.target;
    let known_before = target.known_set().await.len();
    let mut refused = 0;
    let churn = async {
        let k = key(905);
        let t = QuicTransport::bind(
            &LocalNode::new(k.clone(), NETWORK),
            quic_config("127.0.1.6:0"),
        )
        .unwrap();
        let mut info = NodeInfo::new(k.node_id(), NETWORK, "churner");
        info.listen_addr = "127.0.1.6:1".into();
        info.channels = vec![CHAT.0];
        for _ in 0..50 {
            // Past the listener's attempt limit the dial is refused before
            // any TLS work (CONNECTION_REFUSED).
            let Ok(conn) = within("dial", t.dial_quic(target.id(), target.addrs[0])).await else {
                refused += 1;
                continue;
            };
            if within("handshake", conn.handshake(&info)).await.is_ok() {
                let _ = within("admission", conn.recv_admission()).await;
            }
            conn.quinn().close(0u32.into(), b"");
        }
    };
    a.flow
        .under_attack(&a.target, "50 admissions and drops by one node", churn)
        .await;
    assert!(refused >= 30, "only {refused} of 50 reconnections refused");
    // One node churning is one more known peer, however often it came.
    let known = a.target.known_set().await.len();
    assert!(
        known <= known_before + 1,
        "{known_before} peers known before the churn, {known} after"
    );
}

/// Attacks on the handshake's `NodeInfo` and on peer exchange.
async fn router_and_pex(a: &mut Arena) {
    let target = &a.target;
    a.flow
        .under_attack(target, "NodeInfo naming another node id", async {
            refused_handshake(target, "127.0.2.1", 910, |i| {
                i.node_id = key(911).node_id().to_string()
            })
            .await;
        })
        .await;
    a.flow
        .under_attack(target, "NodeInfo with 64 channels", async {
            refused_handshake(target, "127.0.2.1", 912, |i| i.channels = (0..64).collect()).await;
        })
        .await;
    let alpn = alpn_for(NETWORK);
    a.flow
        .under_attack(target, "NodeInfo with a 20 KB moniker", async {
            // Sent by hand: the crate's own handshake will not write it.
            let mut info = NodeInfo::new(key(913).node_id(), NETWORK, "m".repeat(20_000));
            info.listen_addr = "127.0.2.1:1".into();
            let cert = ClientCert::Node(Box::new(key(913)));
            let conn = connect_from("127.0.2.1", target.addrs[0], cert, &alpn).await.unwrap();
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            let _ = send.write_all(&prost::Message::encode_length_delimited_to_vec(&info)).await;
            let closed = within("close", conn.closed()).await;
            assert!(
                matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if u64::from(c.error_code) == 0x10),
                "{closed:?}"
            );
        })
        .await;
    a.flow
        .under_attack(target, "NodeInfo with escape codes in its version", async {
            refused_handshake(target, "127.0.2.1", 914, |i| {
                i.version = "1\n\x1b[31m".into()
            })
            .await;
        })
        .await;

    // PEX abuse that gets the attacker dropped: (what, whether it waits
    // for the target's request first, the messages it sends).
    let abuse = [
        (
            "PEX requests back to back",
            false,
            vec![PEX_REQUEST.to_vec(); 3],
        ),
        (
            // One answer to the target's request, then a second nobody
            // asked for.
            "an unsolicited PEX response",
            true,
            vec![pex_response(&[unreachable_url(1)]); 2],
        ),
        (
            "a PEX response with 101 addresses",
            true,
            vec![pex_response(
                &(0..101).map(unreachable_url).collect::<Vec<_>>(),
            )],
        ),
        (
            "a PEX response with an unparsable address",
            true,
            vec![pex_response(&[
                unreachable_url(2),
                "quic://nonsense\n\x1b[2J".to_owned(),
            ])],
        ),
    ];
    for (i, (name, after_request, messages)) in abuse.into_iter().enumerate() {
        let ip = format!("127.0.2.{}", 2 + i);
        let attacker = admitted(target, &ip, 915 + i as u64).await;
        a.flow
            .under_attack(target, name, async {
                if after_request {
                    attacker.await_pex_request().await;
                }
                attacker.send_pex(&messages).await;
                attacker.dropped().await;
            })
            .await;
    }
    let attacker = admitted(target, "127.0.2.6", 919).await;
    let own = format!("quic://{}@{}", target.id(), target.addrs[0]);
    a.flow
        .under_attack(
            target,
            "a PEX response with the target's own address",
            async {
                attacker.await_pex_request().await;
                attacker.send_pex(&[pex_response(&[own])]).await;
                // Taken as a valid answer (the target asks again later), and
                // its own address is never kept.
                attacker.await_pex_request().await;
            },
        )
        .await;
    assert!(!a.target.known_set().await.contains(&a.target.id()));
    assert!(attacker.quinn().close_reason().is_none());
}
