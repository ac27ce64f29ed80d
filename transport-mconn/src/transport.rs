//! The MConnection transport: TCP listeners with bounded handshakes, and
//! dialing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use p2p_router::transport::listener::{accept_queue, AcceptQueue, AcceptSender, Listener};
use p2p_router::transport::{AcceptBackoff, AcceptFailure, AsyncConnection, AsyncTransport};
use p2p_router::{AcceptError, BindError, DialError, Endpoint, NodeId, NodeKey, Protocol};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::MconnConfig;
use crate::conn::MconnConnection;
use crate::secret::{self, SecretError};

/// TCP + SecretConnection + MConnection, speaking Tendermint's wire format.
pub struct MconnTransport {
    inner: Arc<Inner>,
    local: Vec<SocketAddr>,
    tasks: Mutex<JoinSet<()>>,
}

struct Inner {
    key: NodeKey,
    config: Arc<MconnConfig>,
    accepted: AcceptQueue<MconnConnection>,
    closed: CancellationToken,
    connections: Arc<Semaphore>,
}

impl std::fmt::Debug for MconnTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MconnTransport")
            .field("listen", &self.local)
            .finish_non_exhaustive()
    }
}

impl MconnTransport {
    /// Binds the listen addresses of `config` and starts accepting. Must be
    /// called within a tokio runtime.
    pub async fn bind(key: &NodeKey, config: MconnConfig) -> Result<Self, BindError> {
        config
            .validate()
            .map_err(|e| BindError::Config(Box::new(e)))?;
        let config = Arc::new(config);
        let closed = CancellationToken::new();
        let (tx, accepted) = accept_queue(config.listener.accept_backlog, closed.clone());
        let inner = Arc::new(Inner {
            key: key.clone(),
            connections: Arc::new(Semaphore::new(config.listener.max_connections)),
            config: config.clone(),
            accepted,
            closed,
        });
        let mut tasks = JoinSet::new();
        let mut local = Vec::new();
        for &address in &config.listen {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| BindError::Socket { address, source })?;
            local.push(
                listener
                    .local_addr()
                    .map_err(|source| BindError::Socket { address, source })?,
            );
            tasks.spawn(accept_loop(inner.clone(), listener, tx.clone()));
        }
        Ok(Self {
            inner,
            local,
            tasks: Mutex::new(tasks),
        })
    }

    /// The bound addresses (with the actual ports when 0 was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local.clone()
    }

    /// Dials `peer` at `address` and returns the concrete connection type.
    pub async fn dial_mconn(
        &self,
        peer: NodeId,
        address: SocketAddr,
    ) -> Result<MconnConnection, DialError> {
        let span = tracing::debug_span!("mconn_dial", %peer, %address);
        self.inner.dial(peer, address).instrument(span).await
    }
}

impl Inner {
    async fn dial(&self, peer: NodeId, address: SocketAddr) -> Result<MconnConnection, DialError> {
        if self.closed.is_cancelled() {
            return Err(DialError::Closed);
        }
        let permit = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| DialError::LimitReached)?;
        let connect = async {
            let stream = TcpStream::connect(address).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    DialError::Refused
                } else {
                    DialError::Io(e.kind())
                }
            })?;
            secure(stream, &self.key, self.config.clone(), permit)
                .await
                .map_err(|e| match e.auth_failure() {
                    Ok(failure) => DialError::Authentication(failure),
                    Err(kind) => DialError::Io(kind),
                })
        };
        let conn = tokio::select! {
            () = self.closed.cancelled() => return Err(DialError::Closed),
            r = tokio::time::timeout(self.config.listener.handshake_timeout, connect) => match r {
                Ok(r) => r?,
                Err(_) => return Err(DialError::Timeout),
            },
        };
        let actual = NodeId::from_public_key(&conn.peer_key());
        if actual != peer {
            conn.close(p2p_router::transport::CloseReason::Refused)
                .await;
            return Err(DialError::WrongPeer {
                expected: peer,
                actual,
            });
        }
        Ok(conn)
    }
}

/// Runs the SecretConnection handshake on a fresh TCP stream.
async fn secure(
    stream: TcpStream,
    key: &NodeKey,
    config: Arc<MconnConfig>,
    permit: OwnedSemaphorePermit,
) -> Result<MconnConnection, SecretError> {
    // Packets are batched by the writer; Nagle would only add delay.
    let _ = stream.set_nodelay(true);
    let remote = stream.peer_addr().map_err(|e| SecretError::Io(e.kind()))?;
    let (read, write) = stream.into_split();
    let (reader, writer, peer_key) =
        secret::handshake(BufReader::with_capacity(64 * 1024, read), write, key).await?;
    Ok(MconnConnection::new(
        remote, peer_key, reader, writer, config, permit,
    ))
}

async fn accept_loop(
    inner: Arc<Inner>,
    listener: TcpListener,
    queue: AcceptSender<MconnConnection>,
) {
    let mut handshakes = Listener::new(queue, &inner.config.listener, inner.connections.clone());
    let mut backoff = AcceptBackoff::new();
    loop {
        let (stream, remote) = tokio::select! {
            () = inner.closed.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff.succeeded();
                    accepted
                }
                // Out of file descriptors and the like: keep serving, but
                // wait first (the error lasts until a descriptor is freed).
                Err(e) => {
                    let wait = backoff.failed();
                    tracing::warn!(error = %e, ?wait, "TCP accept failed");
                    tokio::select! {
                        () = inner.closed.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            },
            () = handshakes.reap() => continue,
        };
        // Both limits are checked before any cryptographic work.
        let (key, config) = (inner.key.clone(), inner.config.clone());
        let span = tracing::debug_span!("mconn_accept", %remote);
        // A refusal is logged by `admit`; dropping the connection (which
        // the closure owns) ends it, before any cryptographic work.
        let _ = handshakes.admit(remote, span, move |permit| async move {
            secure(stream, &key, config, permit)
                .await
                .map_err(|e| match e.auth_failure() {
                    Ok(failure) => AcceptFailure::Authentication(failure),
                    Err(kind) => AcceptFailure::Io(kind),
                })
        });
    }
}

impl AsyncTransport for MconnTransport {
    type Connection = MconnConnection;

    fn protocols(&self) -> Vec<Protocol> {
        vec![Protocol::Mconn]
    }

    fn listen_endpoints(&self) -> Vec<Endpoint> {
        self.local
            .iter()
            .map(|&a| Endpoint::ip(Protocol::Mconn, a))
            .collect()
    }

    async fn accept(&self) -> Result<MconnConnection, AcceptError> {
        self.inner.accepted.next().await
    }

    async fn dial(&self, peer: NodeId, endpoint: &Endpoint) -> Result<MconnConnection, DialError> {
        let address = endpoint.dial_addr(Protocol::Mconn)?;
        self.dial_mconn(peer, address).await
    }

    async fn close(&self) {
        self.inner.closed.cancel();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        // Dropping the listeners closes their sockets.
        tasks.shutdown().await;
    }
}
