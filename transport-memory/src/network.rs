//! The hub and its transports.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use p2p_router::transport::listener::{accept_queue, AcceptQueue, AcceptSender};
use p2p_router::transport::{AsyncConnection, AsyncTransport};
use p2p_router::{AcceptError, DialError, Endpoint, EndpointAddress, NodeId, NodeKey, Protocol};
use tokio_util::sync::CancellationToken;

use crate::connection::MemoryConnection;

/// Settings of a [`MemoryNetwork`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemoryOptions {
    /// Messages buffered per channel and direction (default 16).
    pub lane_capacity: usize,
    /// Connections waiting to be accepted per transport (default 64).
    pub accept_backlog: usize,
    /// Delay added to every message (default none).
    pub latency: Duration,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            lane_capacity: 16,
            accept_backlog: 64,
            latency: Duration::ZERO,
        }
    }
}

/// The in-process network all memory transports of a test share.
#[derive(Debug, Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<NetworkInner>,
}

#[derive(Debug, Default)]
struct NetworkInner {
    options: MemoryOptions,
    listeners: Mutex<HashMap<NodeId, Listener>>,
    /// Dials still to fail, counted down by each dial.
    fail_dials: AtomicUsize,
    /// Tells a transport from its restarted successor.
    generations: AtomicUsize,
}

#[derive(Debug, Clone)]
struct Listener {
    generation: usize,
    key: VerifyingKey,
    backlog: AcceptSender<MemoryConnection>,
}

impl MemoryNetwork {
    /// A network with default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// A network with `options`.
    pub fn with_options(options: MemoryOptions) -> Self {
        Self {
            inner: Arc::new(NetworkInner {
                options,
                ..NetworkInner::default()
            }),
        }
    }

    fn listeners(&self) -> MutexGuard<'_, HashMap<NodeId, Listener>> {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the transport of the node with `key`, listening at
    /// `memory:<node-id>`. A transport created again for the same id replaces
    /// the old one (a restart).
    pub fn transport(&self, key: &NodeKey) -> MemoryTransport {
        self.transport_claiming(key, key.public_key())
    }

    /// Like [`transport`](Self::transport), but the transport authenticates
    /// to its peers as `claimed_key` (to test key-mismatch handling).
    pub fn transport_claiming(&self, key: &NodeKey, claimed_key: VerifyingKey) -> MemoryTransport {
        let closed = CancellationToken::new();
        let (tx, rx) = accept_queue(self.inner.options.accept_backlog, closed.clone());
        let id = key.node_id();
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed);
        self.listeners().insert(
            id,
            Listener {
                generation,
                key: claimed_key,
                backlog: tx,
            },
        );
        MemoryTransport {
            id,
            generation,
            key: claimed_key,
            network: self.clone(),
            backlog: rx,
            closed,
        }
    }

    /// Makes the next `n` dials on this network fail.
    pub fn fail_next_dials(&self, n: usize) {
        self.inner.fail_dials.store(n, Ordering::SeqCst);
    }

    fn take_dial_failure(&self) -> bool {
        self.inner
            .fail_dials
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// One node's endpoint on a [`MemoryNetwork`].
#[derive(Debug)]
pub struct MemoryTransport {
    id: NodeId,
    generation: usize,
    key: VerifyingKey,
    network: MemoryNetwork,
    backlog: AcceptQueue<MemoryConnection>,
    closed: CancellationToken,
}

impl MemoryTransport {
    /// This transport's endpoint.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::memory(self.id)
    }

    /// Dials `endpoint` and returns the concrete connection type (tests use
    /// it to act as a misbehaving peer).
    pub async fn dial_memory(&self, endpoint: &Endpoint) -> Result<MemoryConnection, DialError> {
        if self.closed.is_cancelled() {
            return Err(DialError::Closed);
        }
        let EndpointAddress::Memory(target) = endpoint.address else {
            return Err(DialError::UnsupportedProtocol(endpoint.protocol));
        };
        if endpoint.protocol != Protocol::Memory {
            return Err(DialError::UnsupportedProtocol(endpoint.protocol));
        }
        if self.network.take_dial_failure() {
            // As if nobody listened there.
            return Err(DialError::Refused);
        }
        let listener = self
            .network
            .listeners()
            .get(&target)
            .cloned()
            .ok_or(DialError::Refused)?;
        let options = &self.network.inner.options;
        let (ours, theirs) = MemoryConnection::pair(
            (self.id, self.key),
            (target, listener.key),
            options.lane_capacity.max(1),
            options.latency,
        );
        if !listener.backlog.try_push(theirs) {
            return Err(DialError::Refused);
        }
        Ok(ours)
    }
}

impl AsyncTransport for MemoryTransport {
    type Connection = MemoryConnection;

    fn protocols(&self) -> Vec<Protocol> {
        vec![Protocol::Memory]
    }

    fn listen_endpoints(&self) -> Vec<Endpoint> {
        vec![self.endpoint()]
    }

    async fn accept(&self) -> Result<MemoryConnection, AcceptError> {
        self.backlog.next().await
    }

    async fn dial(&self, peer: NodeId, endpoint: &Endpoint) -> Result<MemoryConnection, DialError> {
        let conn = self.dial_memory(endpoint).await?;
        // The hub authenticates the listener's key, as TLS would.
        let actual = NodeId::from_public_key(&conn.peer_key());
        if actual != peer {
            conn.kill();
            return Err(DialError::WrongPeer {
                expected: peer,
                actual,
            });
        }
        Ok(conn)
    }

    async fn close(&self) {
        self.closed.cancel();
        let mut listeners = self.network.listeners();
        // Only unregister if a restarted transport has not replaced us.
        if listeners
            .get(&self.id)
            .is_some_and(|l| l.generation == self.generation)
        {
            listeners.remove(&self.id);
        }
    }
}
