//! Everything a router needs, declared before it starts: transports,
//! channels, reactors, the peer manager's settings. `spawn` fixes the
//! channel table and the announced `NodeInfo`s, so the first accept or
//! dial already carries every channel.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::actor::Actor;
use super::handle::{ReactorContext, Router, RouterHandle};
use super::options::{RouterOptions, RouterOptionsError};
use super::shared::{self, ChannelEntry, DeliverError, Shared, Started};
use super::stats::ChannelCounters;
use super::tasks::ReactorSpawn;
use super::{Channel, ChannelReceiver, ChannelSender, Envelope};
use crate::channel::{ChannelDescriptor, ChannelDescriptorError, ChannelId};
use crate::local_node::LocalNode;
use crate::node_info::{NodeInfo, MAX_CHANNELS};
use crate::peer_manager::{PeerManager, PeerManagerError, PeerManagerOptions};
use crate::peer_store::{MemoryPeerStore, PeerStore};
use crate::transport::Transport;

/// Why [`RouterBuilder::channel`] refused a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The id is already declared.
    #[error("channel {0} is already declared")]
    Duplicate(ChannelId),
    /// The descriptor is unusable.
    #[error(transparent)]
    Descriptor(#[from] ChannelDescriptorError),
    /// The node already has the most channels a `NodeInfo` can carry.
    #[error("at most {MAX_CHANNELS} channels")]
    TooMany,
}

/// Why [`RouterBuilder::spawn`] could not start the router.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The router options cannot work.
    #[error("router options: {0}")]
    Options(#[from] RouterOptionsError),
    /// The peer manager's options are invalid or its store did not load.
    #[error(transparent)]
    PeerManager(#[from] PeerManagerError),
}

/// Builds a [`Router`]: declare transports, channels and reactors, then
/// [`spawn`](Self::spawn). Nothing connects before `spawn`, and nothing can
/// be declared after it (the builder is consumed).
///
/// ```no_run
/// use p2p_router::{ChannelDescriptor, ChannelId, LocalNode, NodeKey, Router};
/// # #[derive(Clone, PartialEq, prost::Message)] struct Vote {}
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let mut builder = Router::builder(LocalNode::new(NodeKey::generate(), "chain"));
/// let votes = builder.channel::<Vote>(ChannelDescriptor::new(ChannelId(0x22), "votes"))?;
/// let router = builder.spawn()?;
/// # Ok(()) }
/// ```
///
/// A running router has no way to add a channel, so one can never miss
/// the peers that connected before it:
///
/// ```compile_fail
/// use p2p_router::{ChannelDescriptor, ChannelId, LocalNode, NodeKey, Router};
/// # #[derive(Clone, PartialEq, prost::Message)] struct Vote {}
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let builder = Router::builder(LocalNode::new(NodeKey::generate(), "chain"));
/// let router = builder.spawn()?;
/// let late = router.channel::<Vote>(ChannelDescriptor::new(ChannelId(0x22), "votes"))?;
/// # Ok(()) }
/// ```
pub struct RouterBuilder {
    node: LocalNode,
    shared: Arc<Shared>,
    moniker: String,
    transports: Vec<Arc<dyn Transport>>,
    options: RouterOptions,
    pm_options: PeerManagerOptions,
    store: Option<Box<dyn PeerStore>>,
    rng_seed: Option<u64>,
    channels: HashMap<ChannelId, ChannelEntry>,
    /// Declaration order, for `NodeInfo.channels`.
    channel_order: Vec<ChannelId>,
    reactors: Vec<ReactorSpawn>,
}

impl std::fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("node", &self.node)
            .field("channels", &self.channel_order)
            .finish_non_exhaustive()
    }
}

impl RouterBuilder {
    pub(crate) fn new(node: LocalNode) -> Self {
        let shared = Arc::new(Shared::new(node.node_id()));
        Self {
            moniker: format!("node-{}", &node.node_id().to_string()[..8]),
            node,
            shared,
            transports: Vec::new(),
            options: RouterOptions::default(),
            pm_options: PeerManagerOptions::default(),
            store: None,
            rng_seed: None,
            channels: HashMap::new(),
            channel_order: Vec::new(),
            reactors: Vec::new(),
        }
    }

    /// This node.
    pub fn node(&self) -> &LocalNode {
        &self.node
    }

    /// Adds a transport; several may serve different protocols. Each
    /// announces its own listen address in the `NodeInfo` its peers get.
    pub fn transport(&mut self, transport: Arc<dyn Transport>) -> &mut Self {
        self.transports.push(transport);
        self
    }

    /// Sets the router options (checked by [`spawn`](Self::spawn)).
    pub fn options(&mut self, options: RouterOptions) -> &mut Self {
        self.options = options;
        self
    }

    /// Sets the peer manager's options (default
    /// [`PeerManagerOptions::default`]).
    pub fn peer_manager(&mut self, options: PeerManagerOptions) -> &mut Self {
        self.pm_options = options;
        self
    }

    /// Sets where the peer manager keeps peers (default: in memory only).
    pub fn peer_store(&mut self, store: impl PeerStore + 'static) -> &mut Self {
        self.store = Some(Box::new(store));
        self
    }

    /// Seeds the peer manager's RNG, for reproducible tests. By default the
    /// seed is drawn from the operating system.
    pub fn rng_seed(&mut self, seed: u64) -> &mut Self {
        self.rng_seed = Some(seed);
        self
    }

    /// Sets the moniker announced in `NodeInfo` (default `node-<id prefix>`).
    pub fn moniker(&mut self, moniker: impl Into<String>) -> &mut Self {
        self.moniker = moniker.into();
        self
    }

    /// Declares a channel carrying messages of type `M`, announced in every
    /// handshake. Typed errors for a duplicate id, too many channels or an
    /// invalid descriptor.
    pub fn channel<M>(&mut self, descriptor: ChannelDescriptor) -> Result<Channel<M>, ChannelError>
    where
        M: prost::Message + Default + Send + 'static,
    {
        descriptor.validate()?;
        let id = descriptor.id;
        if self.channels.contains_key(&id) {
            return Err(ChannelError::Duplicate(id));
        }
        if self.channels.len() >= MAX_CHANNELS {
            return Err(ChannelError::TooMany);
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
                // channel's backpressure), and for a few slots rather
                // than one, so that the reactor and this peer's receive
                // task do not wake each other for every message.
                Err(mpsc::error::TrySendError::Full(envelope)) => {
                    let tx = tx.clone();
                    shared::Delivery::Waiting(Box::pin(async move {
                        let mut room = tx
                            .reserve_many(resume_room(tx.max_capacity()))
                            .await
                            .map_err(|_| DeliverError::ReceiverGone)?;
                        if let Some(permit) = room.next() {
                            permit.send(envelope);
                        }
                        // The other slots go back: the messages after this
                        // one find them free.
                        Ok(())
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
        self.channels.insert(
            id,
            ChannelEntry {
                descriptor,
                deliver,
                counters,
            },
        );
        self.channel_order.push(id);
        let receiver = ChannelReceiver::new(id, rx, self.shared.stopped.clone());
        Ok(Channel::new(sender, receiver))
    }

    /// Declares a reactor: `start` is called by [`spawn`](Self::spawn), and
    /// the future it returns runs under the router's ownership.
    /// [`Router::shutdown`] cancels `ReactorContext::shutdown` and returns
    /// only once the future has finished; a reactor that panics is logged
    /// and its panic is raised again by `shutdown`.
    ///
    /// The context's `peer_updates` receiver is subscribed before anything
    /// connects, so the reactor sees every peer's Up.
    pub fn reactor<F, Fut>(&mut self, name: &'static str, start: F) -> &mut Self
    where
        F: FnOnce(ReactorContext) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.reactors.push(ReactorSpawn {
            name,
            start: Box::new(move |cx| Box::pin(start(cx))),
        });
        self
    }

    /// The fault injector of this router's tasks, for tests.
    #[cfg(feature = "test-utils")]
    pub fn faults(&self) -> Arc<super::faults::Faults> {
        self.shared.faults.clone()
    }

    /// Starts the router on the current tokio runtime: fixes the channel
    /// table and the announced `NodeInfo`s, builds the peer manager, starts
    /// the reactors, then starts accepting and dialing.
    pub fn spawn(self) -> Result<Router, StartError> {
        self.options.validate()?;
        let node_id = self.node.node_id();
        let seed = self.rng_seed.unwrap_or_else(rand::random);
        let mut store: Box<dyn PeerStore> = self
            .store
            .unwrap_or_else(|| Box::new(MemoryPeerStore::new()));
        let store_capacity = self.pm_options.max_peers;
        let connection_target = self.pm_options.dial_target();
        // Loaded here, written by the router's store writer: the peer
        // manager itself never touches the disk.
        let loaded = store.load().map_err(PeerManagerError::Store)?;
        let pm = PeerManager::from_loaded(node_id, self.pm_options, loaded, seed)?;

        let channel_ids: Vec<u8> = self.channel_order.iter().map(|id| id.0).collect();
        let node_infos = self
            .transports
            .iter()
            .map(|transport| {
                let mut info = NodeInfo::new(node_id, self.node.network(), self.moniker.clone());
                info.channels = channel_ids.clone();
                // Each transport's peers are told where that transport
                // listens: an mconn peer must never store our QUIC port.
                info.listen_addr = match transport.listen_endpoints().into_iter().next() {
                    Some(ep) => match ep.socket_addr() {
                        Some(addr) => addr.to_string(),
                        None => ep.to_string(),
                    },
                    // Dial only: port 0 says "not dialable".
                    None => "0.0.0.0:0".to_owned(),
                };
                info
            })
            .collect();
        let (mailbox, mailbox_rx) = mpsc::channel(self.options.mailbox_capacity);
        let (updates, _) = broadcast::channel(self.options.peer_update_capacity);
        self.shared.start(Started {
            channels: self.channels,
            node_infos,
            store_capacity,
            connection_target,
            updates,
            mailbox,
        });
        let handle = RouterHandle::new(self.shared.clone());
        let shutdown = self.shared.shutdown_token().clone();
        // Reactors subscribe now, before the actor can report any Up.
        let reactors = self
            .reactors
            .into_iter()
            .map(|r| {
                let cx = ReactorContext {
                    router: handle.clone(),
                    shutdown: shutdown.child_token(),
                    peer_updates: handle.subscribe_peer_updates(),
                };
                (r.name, (r.start)(cx))
            })
            .collect();
        let actor = Actor::new(
            self.shared.clone(),
            pm,
            store,
            self.transports,
            self.options,
            mailbox_rx,
            reactors,
        );
        let task = tokio::spawn(actor.run());
        Ok(Router::new(handle, task))
    }
}

/// How many free slots a full receive queue of `capacity` must have before
/// a waiting delivery resumes: a quarter of it, at most 64 (a receive
/// batch), at least 1.
fn resume_room(capacity: usize) -> usize {
    (capacity / 4).clamp(1, 64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_waiting_delivery_resumes_with_a_quarter_of_the_buffer_free() {
        assert_eq!(super::resume_room(1), 1);
        assert_eq!(super::resume_room(8), 2);
        assert_eq!(super::resume_room(1024), 64);
    }
}
