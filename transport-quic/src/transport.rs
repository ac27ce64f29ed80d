//! The QUIC transport: UDP endpoints, the accept loops with their limits,
//! and dialing.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use p2p_router::transport::listener::{accept_queue, AcceptQueue, AcceptSender, Listener};
use p2p_router::transport::{AcceptFailure, AsyncTransport, IncompatibleKind};
use p2p_router::{
    AcceptError, BindError, DialError, Endpoint, LocalNode, NodeId, NodeKey, Protocol,
};
use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::codes::CloseCode;
use crate::config::QuicConfig;
use crate::connection::QuicConnection;
use crate::failures::{accept_failure, dial_error};
use crate::socket::bind_udp;
use crate::tls::{self, CertificateError, Identity, ServerVerifier};

/// The QUIC transport: see the crate documentation.
pub struct QuicTransport {
    inner: Arc<Inner>,
    /// Accept loops (each owning its handshake tasks); aborted on drop.
    tasks: Mutex<JoinSet<()>>,
}

struct Inner {
    config: Arc<QuicConfig>,
    /// How we dial: our TLS identity, one verifier for every dial (a
    /// session resumes only with the verifier that checked it), tickets
    /// filed under our node id in the config's session cache.
    client: quinn::ClientConfig,
    verifier: Arc<ServerVerifier>,
    identity: Identity,
    alpn: Vec<u8>,
    endpoint_config: quinn::EndpointConfig,
    listeners: Vec<quinn::Endpoint>,
    /// Client-only endpoints for address families we do not listen on.
    dialers: Mutex<HashMap<bool, quinn::Endpoint>>,
    accepted: AcceptQueue<QuicConnection>,
    closed: CancellationToken,
    /// Live connections, both directions.
    connections: Arc<Semaphore>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("listen", &self.local_addrs())
            .finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// Binds the listen addresses of `config` and starts accepting, as
    /// `node` (its key is the TLS identity, its network goes into ALPN).
    /// Must be called within a tokio runtime.
    pub fn bind(node: &LocalNode, config: QuicConfig) -> Result<Self, BindError> {
        let key = node.key();
        config
            .validate()
            .map_err(|e| BindError::Config(Box::new(e)))?;
        let config = Arc::new(config);
        // Kept by the session cache across binds: our tickets resume only
        // with the certificate and verifier they were received with.
        let (identity, verifier) = config
            .session_cache
            .tls_state(key)
            .map_err(|e| BindError::Identity(Box::new(e)))?;
        let alpn = tls::alpn(node.network());
        let endpoint_config = endpoint_config(key);

        let sessions = config.listener.max_connections;
        let server_tls = tls::server_config(&identity, alpn.clone(), sessions)
            .map_err(|e| BindError::Identity(Box::new(e)))?;
        let server_crypto =
            QuicServerConfig::try_from(server_tls).map_err(|e| BindError::Identity(Box::new(e)))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        let transport = |server| {
            config
                .transport(server)
                .map_err(|e| BindError::Config(Box::new(e)))
        };
        server.transport_config(transport(true)?);
        // Connections waiting for `Incoming` handling; our accept loop takes
        // them at once, so this only absorbs bursts.
        server.max_incoming(
            config
                .listener
                .max_incoming_handshakes
                .saturating_mul(2)
                .max(16),
        );

        let closed = CancellationToken::new();
        let (tx, accepted) = accept_queue(config.listener.accept_backlog, closed.clone());
        let mut listeners = Vec::new();
        for &address in &config.listen {
            let socket = bind_udp(address, config.socket_buffer)
                .map_err(|source| BindError::Socket { address, source })?;
            let endpoint = quinn::Endpoint::new(
                endpoint_config.clone(),
                Some(server.clone()),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(|source| BindError::Socket { address, source })?;
            listeners.push(endpoint);
        }
        let resumption = config.session_cache.resumption(node.node_id());
        let client_tls = tls::client_config(&identity, alpn.clone(), resumption, verifier.clone())
            .map_err(|e| BindError::Identity(Box::new(e)))?;
        let client_crypto =
            QuicClientConfig::try_from(client_tls).map_err(|e| BindError::Identity(Box::new(e)))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport(false)?);
        let inner = Arc::new(Inner {
            client,
            verifier,
            connections: Arc::new(Semaphore::new(config.listener.max_connections)),
            config,
            identity,
            alpn,
            endpoint_config,
            listeners,
            dialers: Mutex::default(),
            accepted,
            closed,
        });
        let mut tasks = JoinSet::new();
        for endpoint in &inner.listeners {
            tasks.spawn(accept_loop(inner.clone(), endpoint.clone(), tx.clone()));
        }
        Ok(Self {
            inner,
            tasks: Mutex::new(tasks),
        })
    }

    /// The bound addresses (with the actual ports when 0 was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .listeners
            .iter()
            .filter_map(|e| e.local_addr().ok())
            .collect()
    }

    /// Dials `peer` at `address` and returns the concrete connection type.
    pub async fn dial_quic(
        &self,
        peer: NodeId,
        address: SocketAddr,
    ) -> Result<QuicConnection, DialError> {
        self.inner.dial(peer, address).await
    }

    /// The certificate this node presents.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.inner.identity.cert.clone()
    }
}

/// The endpoint settings: the stateless-reset key and the key that signs
/// our connection ids are derived from the node key, so after a restart the
/// node still recognises its old connection ids as its own and resets its
/// peers' stale connections instead of leaving them to time out.
fn endpoint_config(key: &NodeKey) -> quinn::EndpointConfig {
    let derive = |label: &[u8]| {
        let mut hasher = Sha256::new();
        hasher.update(label);
        hasher.update(key.seed());
        hasher.finalize()
    };
    let reset_key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &derive(b"p2p-router quic stateless reset v1"),
    );
    let cid_digest = derive(b"p2p-router quic connection id v1");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid_digest[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

impl Inner {
    fn client_endpoint(&self, v6: bool) -> Result<quinn::Endpoint, DialError> {
        // Dialing from the listening socket lets the peer see (and reach) us
        // at our listen port.
        if let Some(listener) = self
            .listeners
            .iter()
            .find(|e| e.local_addr().is_ok_and(|a| a.is_ipv6() == v6))
        {
            return Ok(listener.clone());
        }
        let mut dialers = self.dialers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(endpoint) = dialers.get(&v6) {
            return Ok(endpoint.clone());
        }
        let any: SocketAddr = if v6 {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket =
            bind_udp(any, self.config.socket_buffer).map_err(|e| DialError::Io(e.kind()))?;
        let endpoint = quinn::Endpoint::new(
            self.endpoint_config.clone(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| DialError::Io(e.kind()))?;
        dialers.insert(v6, endpoint.clone());
        Ok(endpoint)
    }

    async fn dial(&self, peer: NodeId, address: SocketAddr) -> Result<QuicConnection, DialError> {
        let span = tracing::debug_span!("quic_dial", %peer, %address);
        let result = self.dial_inner(peer, address).instrument(span).await;
        if let Err(e) = &result {
            tracing::debug!(%peer, %address, error = %e, "QUIC dial failed");
        }
        result
    }

    async fn dial_inner(
        &self,
        peer: NodeId,
        address: SocketAddr,
    ) -> Result<QuicConnection, DialError> {
        if self.closed.is_cancelled() {
            return Err(DialError::Closed);
        }
        let endpoint = self.client_endpoint(address.is_ipv6())?;
        let permit = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| DialError::LimitReached)?;
        let local = |error: &dyn std::fmt::Display| {
            tracing::error!(%error, "QUIC dial could not start");
            DialError::Local
        };
        // The verifier tells this dial why it refused, or that it saw no
        // certificate (a resumed session).
        let watch = self.verifier.verdicts.watch(peer);
        let server_name = peer.to_string();
        let connecting = endpoint
            .connect_with(self.client.clone(), address, &server_name)
            .map_err(|e| match e {
                quinn::ConnectError::InvalidRemoteAddress(_) => DialError::Refused,
                quinn::ConnectError::EndpointStopping => DialError::Closed,
                quinn::ConnectError::CidsExhausted => DialError::LimitReached,
                other => local(&other),
            })?;
        let conn = tokio::select! {
            () = self.closed.cancelled() => return Err(DialError::Closed),
            r = tokio::time::timeout(self.config.listener.handshake_timeout, connecting) => match r {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return Err(dial_error(e, watch.verdict().refusal)),
                Err(_) => return Err(DialError::Timeout),
            },
        };
        let key = self.check_peer(&conn).map_err(|e| match e {
            PeerCheck::Alpn => DialError::Incompatible(IncompatibleKind::Alpn),
            PeerCheck::Certificate(e) => DialError::Authentication(e.auth_failure()),
        })?;
        let actual = NodeId::from_public_key(&key);
        if actual != peer {
            // Unreachable with our verifier; kept as a second line.
            conn.close(CloseCode::ProtocolViolation.varint(), b"wrong node");
            return Err(DialError::WrongPeer {
                expected: peer,
                actual,
            });
        }
        let conn = QuicConnection::new(conn, key, true, self.config.clone(), permit);
        Ok(conn.with_resumed(!watch.verdict().checked))
    }

    /// Checks what TLS negotiated and returns the peer's key.
    fn check_peer(
        &self,
        conn: &quinn::Connection,
    ) -> Result<ed25519_dalek::VerifyingKey, PeerCheck> {
        let protocol = conn
            .handshake_data()
            .and_then(|d| d.downcast::<HandshakeData>().ok())
            .and_then(|d| d.protocol);
        if protocol.as_deref() != Some(self.alpn.as_slice()) {
            conn.close(CloseCode::ProtocolViolation.varint(), b"alpn");
            return Err(PeerCheck::Alpn);
        }
        let certs = conn
            .peer_identity()
            .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok());
        let Some(cert) = certs.as_deref().and_then(|c| c.first()) else {
            conn.close(CloseCode::ProtocolViolation.varint(), b"no certificate");
            return Err(PeerCheck::Certificate(CertificateError::Missing));
        };
        tls::certificate_key(cert).map_err(|e| {
            conn.close(CloseCode::ProtocolViolation.varint(), b"certificate");
            PeerCheck::Certificate(e)
        })
    }
}

/// Why a connection's negotiated TLS state is not acceptable.
enum PeerCheck {
    Alpn,
    Certificate(CertificateError),
}

/// An ephemeral address of the family `endpoint` listens on.
fn spare_address(endpoint: &quinn::Endpoint) -> SocketAddr {
    match endpoint.local_addr() {
        Ok(SocketAddr::V6(_)) => SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        _ => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    }
}

async fn accept_loop(
    inner: Arc<Inner>,
    endpoint: quinn::Endpoint,
    queue: AcceptSender<QuicConnection>,
) {
    let mut handshakes = Listener::new(queue, &inner.config.listener, inner.connections.clone());
    loop {
        let incoming = tokio::select! {
            () = inner.closed.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            () = handshakes.reap() => continue,
        };
        // Under pressure a source must first prove it receives at its
        // address: a spoofed one then costs one stateless Retry packet,
        // and holds no handshake slot.
        if handshakes.under_pressure()
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            let _ = incoming.retry();
            continue;
        }
        // The limits are checked before any TLS work; a refused `Incoming`
        // is dropped, which refuses it.
        let remote = incoming.remote_address();
        let span = tracing::debug_span!("quic_accept", %remote);
        let inner2 = inner.clone();
        // A refusal is logged by `admit`; dropping the connection (which
        // the closure owns) ends it, before any cryptographic work.
        let _ = handshakes.admit(remote, span, move |permit| async move {
            let conn = incoming
                .accept()
                .map_err(|e| accept_failure(&e))?
                .await
                .map_err(|e| accept_failure(&e))?;
            let key = inner2.check_peer(&conn).map_err(|e| match e {
                PeerCheck::Alpn => AcceptFailure::Incompatible(IncompatibleKind::Alpn),
                PeerCheck::Certificate(e) => AcceptFailure::Authentication(e.auth_failure()),
            })?;
            Ok(QuicConnection::new(
                conn,
                key,
                false,
                inner2.config.clone(),
                permit,
            ))
        });
    }
}

impl AsyncTransport for QuicTransport {
    type Connection = QuicConnection;

    fn protocols(&self) -> Vec<Protocol> {
        vec![Protocol::Quic]
    }

    fn listen_endpoints(&self) -> Vec<Endpoint> {
        self.local_addrs()
            .into_iter()
            .map(|a| Endpoint::ip(Protocol::Quic, a))
            .collect()
    }

    async fn accept(&self) -> Result<QuicConnection, AcceptError> {
        self.inner.accepted.next().await
    }

    async fn dial(&self, peer: NodeId, endpoint: &Endpoint) -> Result<QuicConnection, DialError> {
        let address = endpoint.dial_addr(Protocol::Quic)?;
        self.inner.dial(peer, address).await
    }

    async fn close(&self) {
        self.inner.closed.cancel();
        let code = CloseCode::Shutdown;
        let dialers: Vec<_> = self
            .inner
            .dialers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for endpoint in self.inner.listeners.iter().chain(&dialers) {
            endpoint.set_server_config(None);
            endpoint.close(code.varint(), code.phrase());
        }
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        tasks.shutdown().await;
        for endpoint in self.inner.listeners.iter().chain(&dialers) {
            let _ =
                tokio::time::timeout(self.inner.config.close_drain_timeout, endpoint.wait_idle())
                    .await;
        }
        // Give the listen ports back now, not when quinn's endpoint
        // task next runs: a node restarted in the same process must be
        // able to bind them again at once. Each rebind keeps the socket
        // it replaces until the next one, so two drop ours.
        for endpoint in &self.inner.listeners {
            for _ in 0..2 {
                if let Ok(spare) = std::net::UdpSocket::bind(spare_address(endpoint)) {
                    let _ = endpoint.rebind(spare);
                }
            }
        }
    }
}
