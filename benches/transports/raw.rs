//! Reference points without the router: raw quinn (one stream,
//! length-prefixed frames, batched writes) and raw TLS 1.3 over TCP, with
//! the TLS settings our QUIC transport uses (ed25519 certificates,
//! AES-128-GCM first) and its QUIC settings (windows, BBR, ACK frequency).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::scenarios::Sample;
use crate::wan::{self, Side};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raw {
    Quinn,
    TlsTcp,
}

impl Raw {
    pub const ALL: [Raw; 2] = [Raw::Quinn, Raw::TlsTcp];

    pub fn name(self) -> &'static str {
        match self {
            Raw::Quinn => "raw-quinn",
            Raw::TlsTcp => "raw-tls-tcp",
        }
    }
}

use p2p_transport_quic::test_utils::{client_verifier, crypto_provider, AcceptAnyCert as AnyCert};

/// Whether a client may resume the TLS session of its last connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sessions {
    /// Every handshake is a full one (first contact).
    Full,
    /// The server issues one ticket per handshake, the client keeps it
    /// and resumes with it (a reconnect), as our transport does.
    Resumed,
}

/// The client's server-certificate check, counting the handshakes that
/// made it: a resumed handshake carries no certificate, so a connection
/// that left the count alone resumed.
#[derive(Debug)]
struct CountingVerifier {
    inner: AnyCert,
    full: AtomicUsize,
}

impl CountingVerifier {
    fn full_handshakes(&self) -> usize {
        self.full.load(Ordering::Relaxed)
    }
}

impl rustls::client::danger::ServerCertVerifier for CountingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.full.fetch_add(1, Ordering::Relaxed);
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server and client TLS configurations, and the client's verifier.
/// rustls resumes by default (tickets and a session cache on both sides),
/// so `Sessions::Full` turns that off explicitly: a first-contact
/// baseline must not resume.
fn tls_configs(
    alpn: &[u8],
    sessions: Sessions,
) -> (
    rustls::ServerConfig,
    rustls::ClientConfig,
    Arc<CountingVerifier>,
) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["bench".into()])
        .expect("params")
        .self_signed(&pair)
        .expect("cert");
    let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.serialize_der()));
    let p = crypto_provider();
    // Mutual authentication, as our transport does: the client presents
    // its certificate and the server checks it with the transport's own
    // client verifier.
    let mut server = rustls::ServerConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_client_cert_verifier(client_verifier())
        .with_single_cert(vec![cert.der().clone()], key())
        .expect("server");
    server.alpn_protocols = vec![alpn.to_vec()];
    let verifier = Arc::new(CountingVerifier {
        inner: AnyCert(p.clone()),
        full: AtomicUsize::new(0),
    });
    let mut client = rustls::ClientConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_auth_cert(vec![cert.der().clone()], key())
        .expect("client");
    client.alpn_protocols = vec![alpn.to_vec()];
    match sessions {
        Sessions::Full => {
            server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            server.send_tls13_tickets = 0;
            client.resumption = rustls::client::Resumption::disabled();
        }
        Sessions::Resumed => {
            server.session_storage = rustls::server::ServerSessionMemoryCache::new(256);
            server.send_tls13_tickets = 1;
            client.resumption = rustls::client::Resumption::in_memory_sessions(256);
        }
    }
    (server, client, verifier)
}

fn quinn_transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // The transport's default windows, or those it gets on the WAN link.
    let windows = wan::windows();
    let stream = windows.map_or(128 * 1024, |w| w.stream);
    t.stream_receive_window(quinn::VarInt::from_u32(stream));
    t.receive_window(quinn::VarInt::from_u64(33 * u64::from(stream)).expect("window"));
    t.send_window(16 * 1024 * 1024);
    t.congestion_controller_factory(p2p_transport_quic::test_utils::bbr(
        windows.map(|w| w.congestion),
    ));
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.max_ack_delay(Some(Duration::from_millis(1)));
    t.ack_frequency_config(Some(ack));
    Arc::new(t)
}

/// A UDP socket of `side` (see [`wan`]).
fn udp_socket(side: Side) -> std::net::UdpSocket {
    // A socket lives in the namespace it is created in.
    let s = wan::on_side(side, || {
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
    })
    .expect("udp");
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    let addr = SocketAddr::new(wan::bind_ip(side), 0);
    s.bind(&addr.into()).expect("bind");
    s.into()
}

struct QuinnPair {
    _server: quinn::Endpoint,
    _client: quinn::Endpoint,
    a: quinn::Connection,
    b: quinn::Connection,
}

fn quinn_endpoints(
    sessions: Sessions,
) -> (quinn::Endpoint, quinn::Endpoint, Arc<CountingVerifier>) {
    let (server_tls, client_tls, verifier) = tls_configs(b"bench", sessions);
    let mut server_cfg = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).expect("quic server"),
    ));
    server_cfg.transport_config(quinn_transport());
    let server = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_cfg),
        udp_socket(Side::B),
        Arc::new(quinn::TokioRuntime),
    )
    .expect("server");
    let mut client_cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).expect("quic client"),
    ));
    client_cfg.transport_config(quinn_transport());
    let mut client = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        udp_socket(Side::A),
        Arc::new(quinn::TokioRuntime),
    )
    .expect("client");
    client.set_default_client_config(client_cfg);
    (server, client, verifier)
}

async fn quinn_connect(
    server: &quinn::Endpoint,
    client: &quinn::Endpoint,
) -> (quinn::Connection, quinn::Connection) {
    let addr = server.local_addr().expect("addr");
    tokio::join!(
        async {
            client
                .connect(addr, "bench")
                .expect("connect")
                .await
                .expect("handshake")
        },
        async {
            server
                .accept()
                .await
                .expect("incoming")
                .await
                .expect("accept")
        }
    )
}

async fn quinn_pair() -> QuinnPair {
    let (server, client, _) = quinn_endpoints(Sessions::Full);
    let (a, b) = quinn_connect(&server, &client).await;
    QuinnPair {
        _server: server,
        _client: client,
        a,
        b,
    }
}

/// Length-prefixed frames (4-byte big-endian length) from a byte stream.
fn frames(buf: &mut BytesMut) -> usize {
    let mut n = 0;
    loop {
        if buf.len() < 4 {
            return n;
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if buf.len() < 4 + len {
            return n;
        }
        buf.advance(4 + len);
        n += 1;
    }
}

fn framed(size: usize) -> Bytes {
    let mut v = Vec::with_capacity(4 + size);
    v.extend_from_slice(&(size as u32).to_be_bytes());
    v.resize(4 + size, 0xa5);
    Bytes::from(v)
}

/// Bulk (64 KiB frames) or small (100-byte frames, batched 64 KiB per
/// write) for `duration`: MB/s or msg/s at the receiver.
pub async fn throughput(raw: Raw, small: bool, duration: Duration) -> Sample {
    let frame = framed(if small { 100 } else { 64 * 1024 });
    // Small frames are written in 64 KiB batches, as a buffered writer would.
    let batch: Bytes = if small {
        let mut b = BytesMut::new();
        while b.len() + frame.len() <= 64 * 1024 {
            b.extend_from_slice(&frame);
        }
        b.freeze()
    } else {
        frame.clone()
    };
    let unit = move |bytes: usize, frames: usize| if small { frames } else { bytes };
    let measure = |rx_total: Arc<std::sync::atomic::AtomicUsize>| async move {
        tokio::time::sleep(duration / 5).await;
        let start_total = rx_total.load(std::sync::atomic::Ordering::Relaxed);
        let t = Instant::now();
        tokio::time::sleep(duration).await;
        let got = rx_total.load(std::sync::atomic::Ordering::Relaxed) - start_total;
        got as f64 / t.elapsed().as_secs_f64()
    };
    let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rate = match raw {
        Raw::Quinn => {
            let p = quinn_pair().await;
            let mut send = p.a.open_uni().await.expect("open");
            let sender = tokio::spawn(async move {
                loop {
                    if send.write_chunk(batch.clone()).await.is_err() {
                        return;
                    }
                }
            });
            let counter = total.clone();
            let receiver = tokio::spawn(async move {
                let mut recv = p.b.accept_uni().await.expect("accept");
                let mut buf = BytesMut::new();
                while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
                    let bytes = chunk.bytes.len();
                    buf.extend_from_slice(&chunk.bytes);
                    let n = frames(&mut buf);
                    counter.fetch_add(unit(bytes, n), std::sync::atomic::Ordering::Relaxed);
                }
            });
            let rate = measure(total).await;
            sender.abort();
            receiver.abort();
            p.a.close(0u32.into(), b"");
            rate
        }
        Raw::TlsTcp => {
            let (mut client, mut server) = tls_pair().await;
            let sender = tokio::spawn(async move {
                loop {
                    if client.write_all(&batch).await.is_err() {
                        return;
                    }
                }
            });
            let counter = total.clone();
            let receiver = tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(256 * 1024);
                loop {
                    match server.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(bytes) => {
                            let n = frames(&mut buf);
                            counter.fetch_add(unit(bytes, n), std::sync::atomic::Ordering::Relaxed);
                            if buf.capacity() - buf.len() < 64 * 1024 {
                                buf.reserve(256 * 1024);
                            }
                        }
                    }
                }
            });
            let rate = measure(total).await;
            sender.abort();
            receiver.abort();
            rate
        }
    };
    Sample {
        value: if small { rate } else { rate / 1e6 },
        ..Sample::default()
    }
}

struct TlsSetup {
    verifier: Arc<CountingVerifier>,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

async fn tls_setup(sessions: Sessions) -> TlsSetup {
    let (server_tls, client_tls, verifier) = tls_configs(b"bench", sessions);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    TlsSetup {
        verifier,
        listener,
        addr,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server_tls)),
        connector: tokio_rustls::TlsConnector::from(Arc::new(client_tls)),
    }
}

async fn tls_connect(
    setup: &TlsSetup,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) {
    tokio::join!(
        async {
            let tcp = tokio::net::TcpStream::connect(setup.addr)
                .await
                .expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            setup
                .connector
                .connect(ServerName::try_from("bench").expect("name"), tcp)
                .await
                .expect("tls client")
        },
        async {
            let (tcp, _) = setup.listener.accept().await.expect("accept");
            tcp.set_nodelay(true).expect("nodelay");
            setup.acceptor.accept(tcp).await.expect("tls server")
        }
    )
}

async fn tls_pair() -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) {
    tls_connect(&tls_setup(Sessions::Full).await).await
}

/// 64-byte ping-pong round trips, µs.
pub async fn rtt(raw: Raw, rounds: usize) -> Sample {
    let msg = framed(60);
    let mut latencies = Vec::with_capacity(rounds);
    match raw {
        Raw::Quinn => {
            let p = quinn_pair().await;
            let (mut send, mut recv) = p.a.open_bi().await.expect("open");
            send.write_all(&msg).await.expect("first");
            let b = p.b.clone();
            let echo = tokio::spawn(async move {
                let (mut s, mut r) = b.accept_bi().await.expect("accept");
                let mut buf = [0u8; 64];
                while r.read_exact(&mut buf).await.is_ok() {
                    if s.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
            let mut buf = [0u8; 64];
            recv.read_exact(&mut buf).await.expect("first echo");
            for i in 0..rounds + rounds / 10 {
                let t = Instant::now();
                send.write_all(&msg).await.expect("send");
                recv.read_exact(&mut buf).await.expect("echo");
                if i >= rounds / 10 {
                    latencies.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            echo.abort();
        }
        Raw::TlsTcp => {
            let (mut client, mut server) = tls_pair().await;
            let echo = tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while server.read_exact(&mut buf).await.is_ok() {
                    if server.write_all(&buf).await.is_err() {
                        return;
                    }
                    let _ = server.flush().await;
                }
            });
            let mut buf = [0u8; 64];
            for i in 0..rounds + rounds / 10 {
                let t = Instant::now();
                client.write_all(&msg).await.expect("send");
                client.flush().await.expect("flush");
                client.read_exact(&mut buf).await.expect("echo");
                if i >= rounds / 10 {
                    latencies.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            echo.abort();
        }
    }
    Sample {
        latencies: crate::scenarios::Latencies::from_us(&latencies),
        ..Sample::default()
    }
}

/// First-contact connection set-up (a full TLS handshake, mutual
/// authentication included), µs, over `count` connections.
pub async fn handshake(raw: Raw, count: usize) -> Sample {
    connections(raw, count, Sessions::Full).await
}

/// Set-up of a connection that resumes the TLS session of the one before
/// (what our transport's reconnect does, without the router), µs, over
/// `count` connections after a first one that is not counted.
pub async fn reconnect(raw: Raw, count: usize) -> Sample {
    connections(raw, count, Sessions::Resumed).await
}

/// `count` timed connections, each checked to have made the handshake
/// `sessions` asks for.
async fn connections(raw: Raw, count: usize, sessions: Sessions) -> Sample {
    let warmup = usize::from(sessions == Sessions::Resumed);
    let mut latencies = Vec::with_capacity(count);
    // Only connections that made the handshake `sessions` asks for are
    // counted: the verifier saw one more certificate for a full handshake,
    // none for a resumed one. A reconnect whose ticket was lost with a
    // packet makes a full one; a few may, most must not.
    let mut off = 0;
    let mut counts = |verifier: &CountingVerifier, before: usize, i: usize| {
        let full = verifier.full_handshakes() - before;
        let as_asked = full == usize::from(sessions == Sessions::Full);
        off += usize::from(i >= warmup && !as_asked);
        i >= warmup && as_asked
    };
    match raw {
        Raw::Quinn => {
            let (server, client, verifier) = quinn_endpoints(sessions);
            for i in 0..count + warmup {
                let before = verifier.full_handshakes();
                let t = Instant::now();
                let (a, b) = quinn_connect(&server, &client).await;
                let elapsed = t.elapsed();
                if counts(&verifier, before, i) {
                    latencies.push(elapsed.as_secs_f64() * 1e6);
                }
                if sessions == Sessions::Resumed {
                    // The ticket for the next connection follows the
                    // handshake: a byte sent after it has arrived once read.
                    let mut send = b.open_uni().await.expect("open");
                    send.write_all(&[1]).await.expect("write");
                    let _ = send.finish();
                    let mut recv = a.accept_uni().await.expect("accept");
                    let _ = recv.read_to_end(1).await;
                }
                a.close(0u32.into(), b"");
            }
        }
        Raw::TlsTcp => {
            let setup = tls_setup(sessions).await;
            for i in 0..count + warmup {
                let before = setup.verifier.full_handshakes();
                let t = Instant::now();
                let (mut c, mut s) = tls_connect(&setup).await;
                let elapsed = t.elapsed();
                if counts(&setup.verifier, before, i) {
                    latencies.push(elapsed.as_secs_f64() * 1e6);
                }
                if sessions == Sessions::Resumed {
                    // As above: the ticket has arrived once a byte sent
                    // after it is read.
                    s.write_all(&[1]).await.expect("write");
                    s.flush().await.expect("flush");
                    let mut byte = [0u8; 1];
                    c.read_exact(&mut byte).await.expect("read");
                }
                drop((c, s));
            }
        }
    }
    assert!(
        off * 10 <= count,
        "{off} of {count} {sessions:?} connections made the other kind of handshake"
    );
    Sample {
        latencies: crate::scenarios::Latencies::from_us(&latencies),
        ..Sample::default()
    }
}
