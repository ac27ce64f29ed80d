//! TLS session resumption: a reconnect to a peer we dialed before skips
//! the certificate exchange and its signatures.
//!
//! Why the node id check stays exact on a resumed session:
//! - rustls offers a ticket only to the server name it was issued under,
//!   and our server name is the peer's node id. The ticket's secret was
//!   agreed in a full handshake in which the peer's certificate proved
//!   that node id, and only a party that holds the secret can finish the
//!   resumed handshake.
//! - The certificates of that first handshake come back with the session,
//!   so `peer_identity` (and the router's NodeInfo check against it) sees
//!   the same key as before.
//! - A peer whose key changed has another node id. A dial of the old id
//!   that reaches a listener with a new key offers the old ticket to a
//!   server that never had its secret: the handshake falls back to a full
//!   one, and our verifier refuses the certificate (`WrongNodeId`).
//! - Tickets are filed under our own node id too, so a cache shared by
//!   transports of different keys never resumes one node as another (a
//!   resumed session carries the client certificate of the first one).
//!
//! - rustls resumes a session only with the same verifier and the same
//!   client certificate (the very `Arc`s) that made it. The cache keeps
//!   both for each node that used it, so a transport bound again with the
//!   same config (and key) can use the tickets its predecessor received.
//!
//! Nothing is sent as 0-RTT data: the session is resumed, then used.

use std::sync::{Arc, Mutex};

use p2p_router::{NodeId, NodeKey};
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue,
    Tls12Resumption, Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

use crate::tls::{Identity, ServerVerifier};

/// Nodes whose dialing TLS state one cache keeps (normally one: a cache
/// belongs to a node's config); past this the oldest is forgotten, and its
/// tickets are then of no use to a new transport.
const MAX_NODES: usize = 8;

/// Session tickets from the peers this node dialed, for resuming the next
/// connection to them. Bounded (the least recently used peer goes first);
/// clones share one cache, so a node that binds its transport again with
/// the same [`QuicConfig`](crate::QuicConfig) keeps its tickets. Tickets
/// live in memory only: after a restart the first dial of each peer is a
/// full handshake again.
#[derive(Clone)]
pub struct SessionCache {
    inner: Arc<ClientSessionMemoryCache>,
    peers: usize,
    /// Per node that dialed with this cache: the certificate it presented
    /// and the verifier that checked its peers, which its tickets are tied
    /// to, in the order the nodes first bound.
    dialers: Arc<Mutex<Vec<DialingTls>>>,
}

/// What a node's tickets are tied to.
struct DialingTls {
    node: NodeId,
    identity: Identity,
    verifier: Arc<ServerVerifier>,
}

impl SessionCache {
    /// A cache for the tickets of up to `peers` peers (0 turns resumption
    /// off).
    pub fn new(peers: usize) -> Self {
        Self {
            inner: Arc::new(ClientSessionMemoryCache::new(peers)),
            peers,
            dialers: Arc::default(),
        }
    }

    /// The TLS identity and server verifier a transport of `key` uses: the
    /// ones an earlier transport of the same key and cache used, so that
    /// its tickets resume, else new ones (remembered for the next).
    pub(crate) fn tls_state(
        &self,
        key: &NodeKey,
    ) -> Result<(Identity, Arc<ServerVerifier>), rcgen::Error> {
        let id = key.node_id();
        if self.peers == 0 {
            return Ok((Identity::new(key)?, Arc::default()));
        }
        let mut dialers = self.dialers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = dialers.iter().find(|d| d.node == id) {
            return Ok((known.identity.clone(), known.verifier.clone()));
        }
        let (identity, verifier) = (Identity::new(key)?, Arc::<ServerVerifier>::default());
        if dialers.len() >= MAX_NODES {
            dialers.remove(0);
        }
        dialers.push(DialingTls {
            node: id,
            identity: identity.clone(),
            verifier: verifier.clone(),
        });
        Ok((identity, verifier))
    }

    /// The rustls resumption policy of a transport whose node is `ours`.
    pub(crate) fn resumption(&self, ours: NodeId) -> Resumption {
        if self.peers == 0 {
            return Resumption::disabled();
        }
        let scoped = Scoped {
            ours: ours.to_string(),
            inner: self.inner.clone(),
        };
        Resumption::store(Arc::new(scoped)).tls12_resumption(Tls12Resumption::Disabled)
    }
}

impl Default for SessionCache {
    /// Tickets of 1,024 peers.
    fn default() -> Self {
        Self::new(1024)
    }
}

/// Shows the bound, never a ticket.
impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionCache({} peers)", self.peers)
    }
}

/// The shared cache seen by one node: every entry is filed under
/// `<peer id>.<our id>`.
#[derive(Debug)]
struct Scoped {
    ours: String,
    inner: Arc<ClientSessionMemoryCache>,
}

impl Scoped {
    /// Our file for `server`; `None` for a name that is not a peer's id
    /// (nothing is stored or found for it).
    fn name(&self, server: &ServerName<'_>) -> Option<ServerName<'static>> {
        match server {
            ServerName::DnsName(peer) => {
                ServerName::try_from(format!("{}.{}", peer.as_ref(), self.ours)).ok()
            }
            _ => None,
        }
    }
}

impl ClientSessionStore for Scoped {
    fn set_kx_hint(&self, server: ServerName<'static>, group: NamedGroup) {
        if let Some(name) = self.name(&server) {
            self.inner.set_kx_hint(name, group);
        }
    }

    fn kx_hint(&self, server: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(&self.name(server)?)
    }

    // TLS 1.2 is never negotiated (the configs allow 1.3 alone).
    fn set_tls12_session(&self, _: ServerName<'static>, _: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, server: ServerName<'static>, value: Tls13ClientSessionValue) {
        if let Some(name) = self.name(&server) {
            self.inner.insert_tls13_ticket(name, value);
        }
    }

    fn take_tls13_ticket(&self, server: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(&self.name(server)?)
    }
}
