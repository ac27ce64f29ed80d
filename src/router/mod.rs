//! The router: moves typed messages between reactors and peers, and drives
//! the peer manager.
//!
//! One actor task owns the [`PeerManager`] and every spawned task (accept
//! loops, dials, handshakes, peer tasks) in `JoinSet`s under one
//! cancellation token; [`Router::shutdown`] stops them all and returns when
//! none is left. Channel handles talk to peers through shared per-peer,
//! per-channel queues, so sending never waits on the actor.

mod actor;
mod channel;
mod handshake;
mod ip_limit;
mod peer_task;
mod queue;
mod shared;
mod stats;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use channel::{Channel, ChannelReceiver, ChannelSender, Envelope, PeerError, SendError};
pub use handshake::HandshakeError;
pub use stats::{ChannelStats, RouterStats};

use self::stats::ChannelCounters;
pub(crate) use self::stats::DialFailureKind;
/// What the metrics collector reads.
pub(crate) type RouterMetricsSource = Shared;

use self::shared::{ChannelEntry, DeliverError, Shared};
use crate::address::PeerAddress;
use crate::channel::{ChannelDescriptor, ChannelDescriptorError, ChannelId};
use crate::identity::{NodeId, NodeKey};
use crate::node_info::{NodeInfo, MAX_CHANNELS};
use crate::peer_manager::{AddError, PeerManager, PeerUpdate};
use crate::transport::{Connection, Transport};

/// Router settings. Every default is finite.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouterOptions {
    /// Dials in flight at once (default 8).
    pub dial_concurrency: usize,
    /// Time to establish a transport connection (default 10 s).
    pub dial_timeout: Duration,
    /// Time for the NodeInfo exchange and admission (default 10 s).
    pub handshake_timeout: Duration,
    /// Time for resolving a DNS name (default 5 s).
    pub resolve_timeout: Duration,
    /// Inbound connections, handshaking or established (default 256).
    pub max_inbound: usize,
    /// Inbound handshakes in progress at once (default 32).
    pub max_inbound_handshakes: usize,
    /// Live connections per remote IP (default 8).
    pub max_connections_per_ip: usize,
    /// Connection attempts per remote IP within `ip_window` (default 16).
    pub max_attempts_per_ip: usize,
    /// The window of `max_attempts_per_ip` (default 10 s).
    pub ip_window: Duration,
    /// After this long, a new connection from a connected peer replaces the
    /// existing one (the peer restarted); younger conflicts are settled by
    /// node id (default 5 s).
    pub takeover_after: Duration,
    /// Capacity of the actor's mailbox (default 256).
    pub mailbox_capacity: usize,
    /// Peer updates buffered per subscriber before it lags (default 256).
    pub peer_update_capacity: usize,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            dial_concurrency: 8,
            dial_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(5),
            max_inbound: 256,
            max_inbound_handshakes: 32,
            max_connections_per_ip: 8,
            max_attempts_per_ip: 16,
            ip_window: Duration::from_secs(10),
            takeover_after: Duration::from_secs(5),
            mailbox_capacity: 256,
            peer_update_capacity: 256,
        }
    }
}

/// Messages to the actor.
pub(crate) enum Command {
    Report(PeerError),
    Add(PeerAddress, oneshot::Sender<Result<bool, AddError>>),
    AddMany(Vec<PeerAddress>, oneshot::Sender<usize>),
    Advertise(NodeId, usize, oneshot::Sender<Vec<PeerAddress>>),
    Known(oneshot::Sender<Vec<NodeId>>),
    Inbound(Box<dyn Connection>),
    Status(oneshot::Sender<Vec<NodeId>>),
}

/// Why [`Router::open_channel`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenChannelError {
    /// The id is already open.
    #[error("channel {0} is already open")]
    Duplicate(ChannelId),
    /// The descriptor is unusable.
    #[error(transparent)]
    Descriptor(#[from] ChannelDescriptorError),
    /// The node already has the most channels a `NodeInfo` can carry.
    #[error("at most {MAX_CHANNELS} channels")]
    TooMany,
}

/// Why a router call failed because the router is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("router stopped")]
pub struct RouterStopped;

/// Builds a [`Router`].
pub struct RouterBuilder {
    key: NodeKey,
    node_info: NodeInfo,
    peer_manager: PeerManager,
    transports: Vec<Arc<dyn Transport>>,
    options: RouterOptions,
}

impl RouterBuilder {
    /// Adds a transport; several may serve different protocols.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transports.push(transport);
        self
    }

    /// Sets the options.
    pub fn options(mut self, options: RouterOptions) -> Self {
        self.options = options;
        self
    }

    /// Starts the router on the current tokio runtime.
    pub fn spawn(self) -> Router {
        let (mailbox, mailbox_rx) = mpsc::channel(self.options.mailbox_capacity.max(1));
        let (updates, _) = broadcast::channel(self.options.peer_update_capacity.max(1));
        let mut node_info = self.node_info;
        node_info.node_id = self.key.node_id().to_string();
        if node_info.listen_addr.is_empty() {
            if let Some(ep) = self
                .transports
                .iter()
                .flat_map(|t| t.listen_endpoints())
                .next()
            {
                node_info.listen_addr = match ep.socket_addr() {
                    Some(addr) => addr.to_string(),
                    None => ep.to_string(),
                };
            }
        }
        node_info.channels.clear();
        let shared = Arc::new(Shared {
            self_id: self.key.node_id(),
            node_info: RwLock::new(node_info),
            channels: RwLock::new(HashMap::new()),
            peers: RwLock::new(HashMap::new()),
            stats: Default::default(),
            connections: Default::default(),
            store_capacity: self.peer_manager.options().max_peers,
            updates,
            mailbox,
        });
        let cancel = CancellationToken::new();
        let actor = actor::Actor::new(
            shared.clone(),
            self.peer_manager,
            self.transports,
            self.options,
            mailbox_rx,
            cancel.clone(),
        );
        let task = tokio::spawn(actor.run());
        Router {
            shared,
            cancel,
            task: Some(task),
        }
    }
}

/// A cloneable way to ask the actor, for the crate's own reactors.
#[derive(Clone)]
pub(crate) struct SharedHandle(Arc<Shared>);

impl SharedHandle {
    pub(crate) async fn add_peers(
        &self,
        addresses: Vec<PeerAddress>,
    ) -> Result<usize, RouterStopped> {
        self.0.ask(|tx| Command::AddMany(addresses, tx)).await
    }

    pub(crate) async fn advertise(
        &self,
        peer: NodeId,
        limit: usize,
    ) -> Result<Vec<PeerAddress>, RouterStopped> {
        self.0.ask(|tx| Command::Advertise(peer, limit, tx)).await
    }

    pub(crate) async fn connected_peers(&self) -> Result<Vec<NodeId>, RouterStopped> {
        self.0.ask(Command::Status).await
    }

    pub(crate) fn stats(&self) -> RouterStats {
        self.0.stats.snapshot()
    }

    pub(crate) fn store_capacity(&self) -> usize {
        self.0.store_capacity
    }
}

/// A running router. Dropping it stops it; [`shutdown`](Self::shutdown)
/// stops it and waits until every task is gone.
pub struct Router {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("node_id", &self.shared.self_id)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Starts building a router for the node with `key`, announcing
    /// `node_info` (its id and channels are filled in by the router).
    pub fn builder(key: NodeKey, node_info: NodeInfo, peer_manager: PeerManager) -> RouterBuilder {
        RouterBuilder {
            key,
            node_info,
            peer_manager,
            transports: Vec::new(),
            options: RouterOptions::default(),
        }
    }

    /// Our node id.
    pub fn node_id(&self) -> NodeId {
        self.shared.self_id
    }

    /// The `NodeInfo` we announce in new handshakes.
    pub fn node_info(&self) -> NodeInfo {
        self.shared.node_info()
    }

    /// Opens a typed channel. Its id is announced in later handshakes.
    pub fn open_channel<M>(
        &self,
        descriptor: ChannelDescriptor,
    ) -> Result<Channel<M>, OpenChannelError>
    where
        M: prost::Message + Default + Send + 'static,
    {
        descriptor.validate()?;
        let id = descriptor.id;
        let mut channels = self.shared.channels_mut();
        if channels.contains_key(&id) {
            return Err(OpenChannelError::Duplicate(id));
        }
        if channels.len() >= MAX_CHANNELS {
            return Err(OpenChannelError::TooMany);
        }
        let (tx, rx) = mpsc::channel::<Envelope<M>>(descriptor.receive_capacity);
        let deliver: shared::Deliver = Arc::new(move |peer, bytes| {
            let message = match M::decode(bytes) {
                Ok(message) => message,
                Err(e) => return shared::Delivery::Done(Err(DeliverError::Decode(e))),
            };
            match tx.try_send(Envelope { peer, message }) {
                Ok(()) => shared::Delivery::Done(Ok(())),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    shared::Delivery::Done(Err(DeliverError::ReceiverGone))
                }
                // The reactor is behind: wait for room (this is the
                // channel's backpressure).
                Err(mpsc::error::TrySendError::Full(envelope)) => {
                    let tx = tx.clone();
                    shared::Delivery::Waiting(Box::pin(async move {
                        tx.send(envelope)
                            .await
                            .map_err(|_| DeliverError::ReceiverGone)
                    }))
                }
            }
        });
        let counters = Arc::new(ChannelCounters::default());
        let sender = ChannelSender::new(
            id,
            descriptor.max_message_size,
            self.shared.clone(),
            counters.clone(),
        );
        channels.insert(
            id,
            ChannelEntry {
                descriptor,
                deliver,
                counters,
            },
        );
        self.shared.node_info_mut().channels.push(id.0);
        Ok(Channel::new(sender, ChannelReceiver::new(id, rx)))
    }

    /// Subscribes to peer Up/Down events. A subscriber that falls behind by
    /// more than `peer_update_capacity` events lags (it sees
    /// `RecvError::Lagged`); the router never waits for it.
    pub fn subscribe_peer_updates(&self) -> broadcast::Receiver<PeerUpdate> {
        self.shared.updates.subscribe()
    }

    /// Adds a peer address to the peer manager; it is dialed when due.
    pub async fn add_peer(
        &self,
        address: PeerAddress,
    ) -> Result<Result<bool, AddError>, RouterStopped> {
        self.shared.ask(|tx| Command::Add(address, tx)).await
    }

    /// Adds many addresses (from peer exchange) in one step. Returns how
    /// many were new and kept; our own address and addresses the peer
    /// manager declines are skipped, not errors.
    pub async fn add_peers(&self, addresses: Vec<PeerAddress>) -> Result<usize, RouterStopped> {
        self.handle().add_peers(addresses).await
    }

    /// Up to `limit` addresses the peer manager allows telling `peer` about
    /// (see [`PeerManager::advertise`]).
    pub async fn advertise(
        &self,
        peer: NodeId,
        limit: usize,
    ) -> Result<Vec<PeerAddress>, RouterStopped> {
        self.handle().advertise(peer, limit).await
    }

    /// The peers that are up, as the actor sees them.
    pub async fn connected_peers(&self) -> Result<Vec<NodeId>, RouterStopped> {
        self.handle().connected_peers().await
    }

    pub(crate) fn handle(&self) -> SharedHandle {
        SharedHandle(self.shared.clone())
    }

    /// A token cancelled when the router stops, for reactors it owns.
    pub(crate) fn child_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// Every peer the peer manager knows, best-ranked first.
    pub async fn known_peers(&self) -> Result<Vec<NodeId>, RouterStopped> {
        self.shared.ask(Command::Known).await
    }

    /// The most peers the peer store keeps (`PeerManagerOptions::max_peers`).
    pub fn peer_store_capacity(&self) -> usize {
        self.shared.store_capacity
    }

    /// The router's counters.
    pub fn stats(&self) -> RouterStats {
        self.shared.stats.snapshot()
    }

    /// Registers the router's Prometheus metrics in `registry`, under the
    /// `p2p_` prefix (see the README's metrics list). They are read from the
    /// router's counters at each scrape; after the router stops, they are
    /// left out.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry
            .sub_registry_with_prefix("p2p")
            .register_collector(Box::new(crate::metrics::RouterCollector {
                source: Arc::downgrade(&self.shared),
            }));
    }

    /// Per-channel counters, summed over peers, in channel id order.
    pub fn channel_stats(&self) -> Vec<ChannelStats> {
        self.shared.channel_stats()
    }

    /// Waits until the counters satisfy `cond` (checked now and after every
    /// change), and returns them. For tests and monitoring that must wait on
    /// an event rather than poll.
    pub async fn stats_when(&self, cond: impl Fn(&RouterStats) -> bool) -> RouterStats {
        self.shared.stats.when(cond).await
    }

    /// Stops the router: closes transports and connections, persists the
    /// peer store, and returns when every task it spawned has ended.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
