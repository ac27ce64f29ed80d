//! Helpers for QUIC tests: routers on loopback QUIC, raw connection pairs,
//! and hand-built TLS clients for hostile-peer cases. Everything waits on
//! events; time bounds only turn a hang into a failure.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used
)]

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use p2p_router::conformance;
pub use p2p_router::test_utils::{self, key, send_to, text, TestNode, TestNodeBuilder, Text};
use p2p_router::{
    ChannelDescriptor, ChannelId, ChannelReceiver, ChannelSender, Connection, LocalNode, NodeId,
    NodeKey, PeerAddress, PeerManagerOptions, PeerUpdate, Router, RouterOptions, Transport,
};
pub use p2p_transport_quic::test_utils::AcceptAnyCert;
use p2p_transport_quic::{QuicConfig, QuicConnection, QuicTransport};
use tokio::sync::broadcast;

pub const NETWORK: &str = "quic-test";
pub const CHAT: ChannelId = ChannelId(1);
pub const BULK: ChannelId = ChannelId(2);

/// Upper bound for anything a test waits for: a hang becomes a failure.
pub const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Blob {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

/// The node with `key` on the tests' network.
pub fn node(key: &NodeKey) -> LocalNode {
    LocalNode::new(key.clone(), NETWORK)
}

/// Awaits `f`, failing the test if it takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    test_utils::within(PATIENCE, what, f).await
}

pub fn quic_config(listen: &str) -> QuicConfig {
    let mut config = QuicConfig::new().listen_on(listen.parse().unwrap());
    config.listener.handshake_timeout = Duration::from_secs(5);
    config
}

/// A test node on loopback QUIC with a second, bulk channel.
pub struct QuicNode {
    pub node: TestNode,
    pub bulk: ChannelSender<Blob>,
    pub bulk_rx: ChannelReceiver<Blob>,
    pub addrs: Vec<SocketAddr>,
}

impl std::ops::Deref for QuicNode {
    type Target = TestNode;
    fn deref(&self) -> &TestNode {
        &self.node
    }
}

impl std::ops::DerefMut for QuicNode {
    fn deref_mut(&mut self) -> &mut TestNode {
        &mut self.node
    }
}

impl QuicNode {
    pub fn address_at(&self, i: usize) -> PeerAddress {
        format!("quic://{}@{}", self.id(), self.addrs[i])
            .parse()
            .unwrap()
    }

    /// The first listen address with `localhost` as host (resolved by DNS
    /// at dial time).
    pub fn localhost_address(&self) -> PeerAddress {
        format!("quic://{}@localhost:{}", self.id(), self.addrs[0].port())
            .parse()
            .unwrap()
    }
}

pub struct NodeBuilder {
    pub test: TestNodeBuilder,
    pub quic: QuicConfig,
    pub bulk: ChannelDescriptor,
}

impl NodeBuilder {
    pub fn new(key: NodeKey) -> Self {
        let mut test = TestNodeBuilder::new(key);
        test.network = NETWORK.into();
        test.descriptor = ChannelDescriptor::new(CHAT, "chat").with_priority(10);
        Self {
            test,
            quic: quic_config("127.0.0.1:0"),
            bulk: ChannelDescriptor::new(BULK, "bulk")
                .with_max_message_size(32 << 20)
                .with_priority(1),
        }
    }

    pub fn listen(mut self, addrs: &[&str]) -> Self {
        self.quic.listen = addrs.iter().map(|a| a.parse().unwrap()).collect();
        self
    }

    pub fn start(self) -> QuicNode {
        let local = LocalNode::new(self.test.key.clone(), self.test.network.clone());
        let transport = Arc::new(QuicTransport::bind(&local, self.quic).unwrap());
        let addrs = transport.local_addrs();
        let address = format!("quic://{}@{}", local.node_id(), addrs[0])
            .parse()
            .unwrap();
        let bulk = self.bulk;
        let (node, (bulk, bulk_rx)) = self.test.start_declaring(transport, address, |b| {
            b.channel::<Blob>(bulk).unwrap().split()
        });
        QuicNode {
            node,
            bulk,
            bulk_rx,
            addrs,
        }
    }
}

pub async fn require_up(updates: &mut broadcast::Receiver<PeerUpdate>, peer: NodeId) {
    within("peer up", test_utils::require_up(updates, peer)).await
}

pub async fn require_down(updates: &mut broadcast::Receiver<PeerUpdate>, peer: NodeId) {
    within("peer down", test_utils::require_down(updates, peer)).await
}

/// Tracks Up/Down events until exactly `want` are up.
pub async fn wait_until_up(updates: &mut broadcast::Receiver<PeerUpdate>, want: &BTreeSet<NodeId>) {
    within("peers up", test_utils::wait_until_up(updates, want)).await
}

/// `a` dials `b` at `address`; both see each other Up.
pub async fn connect(a: &mut QuicNode, b: &mut QuicNode, address: PeerAddress) {
    within(
        "connect",
        test_utils::connect_at(&mut a.node, &mut b.node, address),
    )
    .await
}

/// Waits until `cond` holds on the router's counters.
pub async fn wait_for_stats(
    router: &Router,
    what: &str,
    cond: impl Fn(&p2p_router::RouterStats) -> bool,
) {
    within(what, router.stats_when(cond)).await;
}

/// A listening transport and a dialing one, connected and handshaken with
/// the conformance suite's `NodeInfo` (channels 1 to 4).
pub struct RawPair {
    pub listener: Arc<QuicTransport>,
    pub dialer: Arc<QuicTransport>,
    pub pair: conformance::Pair,
}

pub async fn raw_pair() -> RawPair {
    let (ka, kb) = (key(101), key(102));
    let dialer = Arc::new(QuicTransport::bind(&node(&ka), quic_config("127.0.0.1:0")).unwrap());
    let listener = Arc::new(QuicTransport::bind(&node(&kb), quic_config("127.0.0.1:0")).unwrap());
    let pair = conformance::connect(&*dialer, &ka, &*listener, &kb).await;
    RawPair {
        listener,
        dialer,
        pair,
    }
}

/// A peer that completed the handshake with a listener and may then
/// misbehave through `conn.quinn()`; `accepted` is the listener's side.
pub struct Hostile {
    pub transport: QuicTransport,
    pub conn: QuicConnection,
    pub accepted: Box<dyn p2p_router::Connection>,
}

/// Dials `listener` and completes the handshake (channels 1 to 4).
pub async fn hostile_pair(listener: &QuicTransport, listener_key: &NodeKey) -> Hostile {
    let hostile_key = key(103);
    let hostile = QuicTransport::bind(&node(&hostile_key), quic_config("127.0.0.1:0")).unwrap();
    let addr = listener.local_addrs()[0];
    let (dialed, accepted) = tokio::join!(
        hostile.dial_quic(listener_key.node_id(), addr),
        listener.accept()
    );
    let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap());
    use p2p_router::transport::Admission;
    use p2p_router::Connection;
    let (a, b) = (
        conformance::node_info(&hostile_key),
        conformance::node_info(listener_key),
    );
    let (x, y) = tokio::join!(dialed.handshake(&a), accepted.handshake(&b));
    x.unwrap();
    y.unwrap();
    let (s, r) = tokio::join!(
        accepted.send_admission(Admission::Accepted),
        dialed.recv_admission()
    );
    s.unwrap();
    assert_eq!(r.unwrap(), Admission::Accepted);
    Hostile {
        transport: hostile,
        conn: dialed,
        accepted,
    }
}

/// The client certificate a raw client presents.
pub enum ClientCert {
    None,
    /// A self-signed certificate of `key` (what a real node presents).
    Node(Box<NodeKey>),
    /// A self-signed ECDSA P-256 certificate.
    Ecdsa,
    /// Two certificates of `key`: a chain, where one is required.
    Chain(Box<NodeKey>),
    /// `shown`'s self-signed certificate, but handshake signatures made
    /// with `signer`: someone claiming a key they do not hold.
    Impostor {
        shown: Box<NodeKey>,
        signer: Box<NodeKey>,
    },
}

fn pkcs8(key: &NodeKey) -> rustls::pki_types::PrivatePkcs8KeyDer<'static> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&key.seed());
    rustls::pki_types::PrivatePkcs8KeyDer::from(der)
}

fn self_signed(key: &NodeKey) -> rustls::pki_types::CertificateDer<'static> {
    let pair =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8(key), &rcgen::PKCS_ED25519).unwrap();
    rcgen::CertificateParams::new(vec!["x".into()])
        .unwrap()
        .self_signed(&pair)
        .unwrap()
        .der()
        .clone()
}

/// Always presents one certified key, checked or not.
#[derive(Debug)]
struct Present(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Present {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A raw quinn client's connection to `addr` with the given certificate
/// and ALPN, once the client's side of the TLS handshake is done.
pub async fn raw_connect(
    addr: SocketAddr,
    cert: ClientCert,
    alpn: &[u8],
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let endpoint = raw_endpoint("127.0.0.1:0".parse().unwrap(), cert, alpn);
    endpoint.connect(addr, "peer").unwrap().await
}

/// A raw quinn client endpoint bound to `bind`, presenting `cert` and
/// offering `alpn`.
pub fn raw_endpoint(bind: SocketAddr, cert: ClientCert, alpn: &[u8]) -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider.clone())));
    let mut tls = match cert {
        ClientCert::None => builder.with_no_client_auth(),
        ClientCert::Node(key) => builder
            .with_client_auth_cert(vec![self_signed(&key)], pkcs8(&key).into())
            .unwrap(),
        ClientCert::Chain(key) => builder
            .with_client_auth_cert(
                vec![self_signed(&key), self_signed(&key)],
                pkcs8(&key).into(),
            )
            .unwrap(),
        ClientCert::Impostor { shown, signer } => {
            let signing = provider
                .key_provider
                .load_private_key(pkcs8(&signer).into())
                .unwrap();
            let certified = rustls::sign::CertifiedKey::new(vec![self_signed(&shown)], signing);
            builder.with_client_cert_resolver(Arc::new(Present(Arc::new(certified))))
        }
        ClientCert::Ecdsa => {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["x".into()])
                .unwrap()
                .self_signed(&pair)
                .unwrap();
            let key = rustls::pki_types::PrivatePkcs8KeyDer::from(pair.serialize_der());
            builder
                .with_client_auth_cert(vec![cert.der().clone()], key.into())
                .unwrap()
        }
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(bind).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// The first datagram (a QUIC Initial) of `n` fresh client connections to
/// the node `server`, caught on a local socket instead of reaching anyone:
/// replayed to that node's listener, each starts a handshake that never
/// completes.
pub async fn captured_initials(n: u64, server: NodeId) -> Vec<Vec<u8>> {
    let mut initials = Vec::new();
    let mut buf = vec![0u8; 65536];
    for i in 0..n {
        // A sink per connection: what a closing client sends later (its
        // CONNECTION_CLOSE) must not pass for the next one's Initial.
        let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = sink.local_addr().unwrap();
        let cert = ClientCert::Node(Box::new(key(300 + i)));
        let endpoint = raw_endpoint("127.0.0.1:0".parse().unwrap(), cert, &alpn_for(NETWORK));
        let connecting = endpoint.connect(to, &server.to_string()).unwrap();
        let (len, _) = within("an Initial", sink.recv_from(&mut buf))
            .await
            .unwrap();
        initials.push(buf[..len].to_vec());
        drop(connecting);
        endpoint.close(0u32.into(), b"");
    }
    initials
}

/// Connects a raw quinn client to `addr` with the given certificate and
/// ALPN, and returns how the connection ended (or `Ok` if it is still up
/// after the handshake completed and a round trip of stream data).
pub async fn raw_client(
    addr: SocketAddr,
    cert: ClientCert,
    alpn: &[u8],
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let conn = raw_connect(addr, cert, alpn).await?;
    // TLS 1.3 lets the client finish before the server has checked the
    // client's certificate: a round trip shows the server's verdict.
    let (mut send, mut recv) = conn.open_bi().await?;
    let _ = send.write_all(&[0]).await;
    let mut byte = [0u8; 1];
    match recv.read_exact(&mut byte).await {
        Ok(()) => Ok(conn),
        Err(_) => Err(conn.closed().await),
    }
}

/// The listener's ALPN for [`NETWORK`], computed independently of the
/// crate's code (from the protocol document).
pub fn alpn_for(network: &str) -> Vec<u8> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(network.as_bytes());
    let mut out = b"p2p-router/1/".to_vec();
    out.extend_from_slice(hex_lower(&digest[..8]).as_bytes());
    out
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every transport test owns its transports; this closes one.
pub async fn close(t: &dyn Transport) {
    t.close().await;
}

/// A UDP relay on loopback: peers talking through it lose each other the
/// moment it is killed, without any close frame (a crash or a cut cable).
pub struct UdpProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl UdpProxy {
    /// Relays between the first client that sends to `addr` and `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(target).await.unwrap();
        let addr = front.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut client = None;
            let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                tokio::select! {
                    r = front.recv_from(&mut up) => {
                        let Ok((n, from)) = r else { return };
                        client = Some(from);
                        let _ = back.send(&up[..n]).await;
                    }
                    r = back.recv(&mut down) => {
                        let Ok(n) = r else { continue };
                        if let Some(c) = client {
                            let _ = front.send_to(&down[..n], c).await;
                        }
                    }
                }
            }
        });
        Self { addr, task }
    }

    /// Drops everything from now on; its port is free when this returns.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Dials `listener_key` at `addr` from `dialer` and completes the
/// handshake with `listener`.
pub async fn handshaken(
    dialer: &QuicTransport,
    dialer_key: &p2p_router::NodeKey,
    listener: &QuicTransport,
    listener_key: &p2p_router::NodeKey,
    addr: SocketAddr,
) -> (QuicConnection, Box<dyn p2p_router::Connection>) {
    let (d, a) = tokio::join!(
        dialer.dial_quic(listener_key.node_id(), addr),
        listener.accept()
    );
    let (d, a) = (d.unwrap(), a.unwrap());
    let (di, li) = (
        conformance::node_info(dialer_key),
        conformance::node_info(listener_key),
    );
    let (x, y) = tokio::join!(d.handshake(&di), a.handshake(&li));
    x.unwrap();
    y.unwrap();
    let (s, r) = tokio::join!(
        a.send_admission(p2p_router::transport::Admission::Accepted),
        d.recv_admission()
    );
    s.unwrap();
    r.unwrap();
    (d, a)
}
