//! The running router: the owner that shuts it down, and the cloneable
//! handle that reactors and the node hold.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use super::stats::{ChannelStats, RouterStats};
use super::{AddressFilter, Command, PeerError, RouterBuilder, RouterStopped};
use crate::address::PeerAddress;
use crate::identity::NodeId;
use crate::local_node::LocalNode;
use crate::node_info::NodeInfo;
use crate::peer_manager::{AddError, PeerUpdate};

/// Why [`RouterHandle::add_peer`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddPeerError {
    /// The peer manager refused the address.
    #[error(transparent)]
    Refused(#[from] AddError),
    /// The router has stopped.
    #[error("router stopped")]
    RouterStopped,
}

impl From<RouterStopped> for AddPeerError {
    fn from(_: RouterStopped) -> Self {
        AddPeerError::RouterStopped
    }
}

/// What a reactor gets when the router starts it (see
/// [`RouterBuilder::reactor`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct ReactorContext {
    /// The router.
    pub router: RouterHandle,
    /// Cancelled when the router begins to shut down: the reactor should
    /// finish then.
    pub shutdown: CancellationToken,
    /// Peer Up/Down events, subscribed before anything connected.
    pub peer_updates: broadcast::Receiver<PeerUpdate>,
}

/// A cloneable handle to a running router: add peers, read its state,
/// subscribe to peer updates, report misbehaviour. Calls on a stopped
/// router fail with [`RouterStopped`] (or the operation's own variant).
#[derive(Clone)]
pub struct RouterHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RouterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterHandle")
            .field("node_id", &self.shared.self_id)
            .finish_non_exhaustive()
    }
}

impl RouterHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Our node id.
    pub fn node_id(&self) -> NodeId {
        self.shared.self_id
    }

    /// The `NodeInfo` announced on each transport, in the order the
    /// transports were added (they differ only in `listen_addr`).
    pub fn node_infos(&self) -> Vec<NodeInfo> {
        self.shared
            .started()
            .map(|s| s.node_infos.clone())
            .unwrap_or_default()
    }

    /// Subscribes to peer Up/Down events. A peer's `Up` is published before
    /// any of its messages is put in a channel's receive buffer, and its
    /// `Down` after the last one. A subscriber that falls behind by more
    /// than `peer_update_capacity` events lags (it sees
    /// `RecvError::Lagged`); the router never waits for it.
    pub fn subscribe_peer_updates(&self) -> broadcast::Receiver<PeerUpdate> {
        match self.shared.started() {
            Some(started) => started.updates.subscribe(),
            // Unreachable for a handle (handles exist only once started),
            // but a closed receiver is the honest answer.
            None => broadcast::channel(1).1,
        }
    }

    /// Adds a peer address to the peer manager; it is dialed when due.
    /// Returns whether the address was new and kept.
    pub async fn add_peer(&self, address: PeerAddress) -> Result<bool, AddPeerError> {
        Ok(self.shared.ask(|tx| Command::Add(address, tx)).await??)
    }

    /// Adds many addresses (from peer exchange) in one step. Returns how
    /// many were new and kept; our own address and addresses the peer
    /// manager declines are skipped, not errors.
    pub async fn add_peers(&self, addresses: Vec<PeerAddress>) -> Result<usize, RouterStopped> {
        self.shared.ask(|tx| Command::AddMany(addresses, tx)).await
    }

    /// Up to `limit` addresses the peer manager allows telling `peer` about
    /// (see [`PeerManager::advertise`](crate::PeerManager::advertise)).
    pub async fn advertise(
        &self,
        peer: NodeId,
        limit: usize,
    ) -> Result<Vec<PeerAddress>, RouterStopped> {
        self.advertise_matching(peer, limit, |_| true).await
    }

    /// As [`advertise`](Self::advertise), of the addresses `keep` accepts
    /// (for a peer that can dial only some, as a CometBFT peer dials only
    /// MConnection addresses with IP literals).
    pub async fn advertise_matching(
        &self,
        peer: NodeId,
        limit: usize,
        keep: impl Fn(&PeerAddress) -> bool + Send + 'static,
    ) -> Result<Vec<PeerAddress>, RouterStopped> {
        let keep: AddressFilter = Box::new(keep);
        self.shared
            .ask(|tx| Command::Advertise(peer, limit, keep, tx))
            .await
    }

    /// The peers that are up, as the actor sees them, in id order.
    pub async fn connected_peers(&self) -> Result<Vec<NodeId>, RouterStopped> {
        self.shared.ask(Command::Status).await
    }

    /// Every peer the peer manager knows, best-ranked first.
    pub async fn known_peers(&self) -> Result<Vec<NodeId>, RouterStopped> {
        self.shared.ask(Command::Known).await
    }

    /// Reports a peer's misbehaviour; the router acts on its severity.
    pub async fn report(&self, error: PeerError) -> Result<(), RouterStopped> {
        self.shared.tell(Command::Report(error)).await
    }

    /// The most peers the peer store keeps (`PeerManagerOptions::max_peers`).
    pub fn peer_store_capacity(&self) -> usize {
        self.shared
            .started()
            .map(|s| s.store_capacity)
            .unwrap_or_default()
    }

    /// How many peers the node wants connected: the peer manager's
    /// [`dial_target`](crate::PeerManagerOptions::dial_target) (0: no
    /// limit).
    pub fn connection_target(&self) -> usize {
        self.shared
            .started()
            .map(|s| s.connection_target)
            .unwrap_or_default()
    }

    /// The router's counters.
    pub fn stats(&self) -> RouterStats {
        self.shared.stats.snapshot()
    }

    /// Waits until the counters satisfy `cond` (checked now and after every
    /// change), and returns them. For tests and monitoring that must wait on
    /// an event rather than poll.
    pub async fn stats_when(&self, cond: impl Fn(&RouterStats) -> bool) -> RouterStats {
        self.shared.stats.when(cond).await
    }

    /// Per-channel counters, summed over peers, in channel id order.
    pub fn channel_stats(&self) -> Vec<ChannelStats> {
        self.shared.channel_stats()
    }

    /// Registers the router's Prometheus metrics in `registry`, under the
    /// `p2p_` prefix (see the README's metrics list). They are read from the
    /// router's counters at each scrape; after the router stops, they are
    /// left out.
    #[cfg(feature = "metrics")]
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry
            .sub_registry_with_prefix("p2p")
            .register_collector(Box::new(crate::metrics::RouterCollector {
                source: Arc::downgrade(&self.shared),
            }));
    }
}

/// A running router, and the one place that stops it. It dereferences to
/// its [`RouterHandle`]; [`handle`](Self::handle) gives clones to hold
/// elsewhere. Dropping it begins shutdown without waiting;
/// [`shutdown`](Self::shutdown) waits until every task is gone.
pub struct Router {
    handle: RouterHandle,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("node_id", &self.handle.node_id())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Starts building a router for `node`.
    pub fn builder(node: LocalNode) -> RouterBuilder {
        RouterBuilder::new(node)
    }

    pub(crate) fn new(handle: RouterHandle, task: JoinHandle<()>) -> Self {
        Self {
            handle,
            task: Some(task),
        }
    }

    /// A handle to give to reactors and other tasks.
    pub fn handle(&self) -> RouterHandle {
        self.handle.clone()
    }

    /// Stops the router: closes transports and connections, persists the
    /// peer store, stops the reactors, and returns when every task it
    /// spawned has ended. A panic of the router's actor or of a reactor is
    /// raised again here.
    pub async fn shutdown(mut self) {
        self.handle.shared.begin_shutdown();
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                if error.is_panic() {
                    std::panic::resume_unwind(error.into_panic());
                }
            }
        }
    }
}

impl std::ops::Deref for Router {
    type Target = RouterHandle;

    fn deref(&self) -> &RouterHandle {
        &self.handle
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.handle.shared.begin_shutdown();
    }
}
