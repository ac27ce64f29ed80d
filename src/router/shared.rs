//! State shared between the router actor, the router handle and channel
//! handles: the routing table, the counters, and what is fixed when the
//! router starts (channel table, announced `NodeInfo`s, mailbox). Locks are
//! held only for lookups and never across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::queue::SendQueue;
use super::stats::{ChannelCounters, ConnectionCounters, Stats};
use super::{Command, RouterStopped};
use crate::channel::{ChannelDescriptor, ChannelId};
use crate::identity::NodeId;
use crate::node_info::NodeInfo;
use crate::peer_manager::PeerUpdate;
use crate::transport::{BoxFuture, Connection};

/// Why an inbound message did not reach its reactor.
#[derive(Debug)]
pub(crate) enum DeliverError {
    /// It did not decode as the channel's message type.
    Decode(prost::DecodeError),
    /// The channel's receiver was dropped.
    ReceiverGone,
}

/// Decodes an inbound message and hands it to the channel's reactor,
/// waiting for room in its receive buffer.
pub(crate) type Deliver = Arc<dyn Fn(NodeId, Bytes) -> Delivery + Send + Sync>;

/// The outcome of [`Deliver`]: usually settled at once (the reactor's
/// buffer had room); a future only when it must wait, so the common case
/// allocates nothing.
pub(crate) enum Delivery {
    Done(Result<(), DeliverError>),
    Waiting(BoxFuture<'static, Result<(), DeliverError>>),
}

pub(crate) struct ChannelEntry {
    pub(crate) descriptor: ChannelDescriptor,
    pub(crate) deliver: Deliver,
    pub(crate) counters: Arc<ChannelCounters>,
}

/// Where messages to one connected peer go.
pub(crate) struct PeerRoute {
    pub(crate) conn_id: u64,
    /// For transport statistics at scrape time.
    pub(crate) conn: Arc<dyn Connection>,
    /// Sorted by channel id (by `new`): a lookup per send, cheaper
    /// searched than hashed (a peer has at most a few dozen channels).
    queues: Vec<(ChannelId, Arc<SendQueue>, Arc<ChannelCounters>)>,
}

impl PeerRoute {
    pub(crate) fn new(
        conn_id: u64,
        conn: Arc<dyn Connection>,
        mut queues: Vec<(ChannelId, Arc<SendQueue>, Arc<ChannelCounters>)>,
    ) -> Self {
        queues.sort_by_key(|(id, _, _)| *id);
        Self {
            conn_id,
            conn,
            queues,
        }
    }

    /// The send queue of `channel`, if the peer has the channel.
    pub(crate) fn queue(&self, channel: ChannelId) -> Option<&Arc<SendQueue>> {
        let i = self
            .queues
            .binary_search_by_key(&channel, |(id, _, _)| *id)
            .ok()?;
        Some(&self.queues[i].1)
    }
}

/// What is fixed when the router starts.
pub(crate) struct Started {
    /// The channel table: declared on the builder, never changed.
    pub(crate) channels: HashMap<ChannelId, ChannelEntry>,
    /// The `NodeInfo` announced on each transport, in the builder's
    /// transport order (each carries that transport's listen address).
    pub(crate) node_infos: Vec<NodeInfo>,
    /// `PeerManagerOptions::max_peers`.
    pub(crate) store_capacity: usize,
    /// The peer manager's dial target.
    pub(crate) connection_target: usize,
    pub(crate) updates: broadcast::Sender<PeerUpdate>,
    pub(crate) mailbox: mpsc::Sender<Command>,
}

pub(crate) struct Shared {
    pub(crate) self_id: NodeId,
    pub(crate) peers: RwLock<HashMap<NodeId, Arc<PeerRoute>>>,
    pub(crate) stats: Stats,
    pub(crate) connections: ConnectionCounters,
    /// Cancelled when shutdown begins (by `begin_shutdown` only).
    shutdown: CancellationToken,
    /// Set with `shutdown`, for the send path to check without the token's
    /// lock: sends fail from then on.
    stopping: AtomicBool,
    /// Cancelled once no peer task is left: receivers return what is
    /// buffered, then `None`.
    pub(crate) stopped: CancellationToken,
    started: OnceLock<Started>,
    #[cfg(feature = "test-utils")]
    pub(crate) faults: Arc<super::faults::Faults>,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn new(self_id: NodeId) -> Self {
        Self {
            self_id,
            peers: RwLock::default(),
            stats: Stats::default(),
            connections: ConnectionCounters::default(),
            shutdown: CancellationToken::new(),
            stopping: AtomicBool::new(false),
            stopped: CancellationToken::new(),
            started: OnceLock::new(),
            #[cfg(feature = "test-utils")]
            faults: Arc::default(),
        }
    }

    /// Begins shutdown: sends fail from now on, and every task waiting on
    /// the shutdown token wakes.
    pub(crate) fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.shutdown.cancel();
    }

    /// Whether shutdown has begun. A load, where the token's check takes a
    /// lock: every send asks.
    pub(crate) fn shutting_down(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The shutdown token, to wait on (cancel it through `begin_shutdown`).
    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Fixes the start-time state; called once, by the builder.
    pub(crate) fn start(&self, started: Started) {
        // The builder is consumed by `spawn`, so this runs once.
        let _ = self.started.set(started);
    }

    /// The start-time state; `None` before the router started.
    pub(crate) fn started(&self) -> Option<&Started> {
        self.started.get()
    }

    /// Sends the actor a command carrying a reply slot, and waits for the
    /// reply.
    pub(crate) async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RouterStopped> {
        let mailbox = &self.started().ok_or(RouterStopped)?.mailbox;
        let (tx, rx) = oneshot::channel();
        mailbox.send(command(tx)).await.map_err(|_| RouterStopped)?;
        rx.await.map_err(|_| RouterStopped)
    }

    /// Sends the actor a command without a reply.
    pub(crate) async fn tell(&self, command: Command) -> Result<(), RouterStopped> {
        let mailbox = &self.started().ok_or(RouterStopped)?.mailbox;
        mailbox.send(command).await.map_err(|_| RouterStopped)
    }

    /// Every channel's counters, with its queued messages summed over peers.
    pub(crate) fn channel_stats(&self) -> Vec<super::ChannelStats> {
        let Some(started) = self.started() else {
            return Vec::new();
        };
        let mut queued: HashMap<ChannelId, u64> = HashMap::new();
        for route in read(&self.peers).values() {
            for (id, queue, _) in &route.queues {
                *queued.entry(*id).or_default() += queue.len() as u64;
            }
        }
        let mut out: Vec<_> = started
            .channels
            .iter()
            .map(|(id, entry)| {
                let q = queued.get(id).copied().unwrap_or(0);
                entry
                    .counters
                    .snapshot(*id, entry.descriptor.name.clone(), q)
            })
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }

    /// Path statistics of the open connections that measure them, per
    /// transport (in `stats::TRANSPORTS` order).
    #[cfg(feature = "metrics")]
    pub(crate) fn path_stats_by_transport(
        &self,
    ) -> [Vec<crate::transport::PathStats>; super::stats::TRANSPORTS.len()] {
        let mut out: [Vec<_>; super::stats::TRANSPORTS.len()] = Default::default();
        for route in read(&self.peers).values() {
            if let Some(path) = route.conn.path_stats() {
                out[super::stats::slot(route.conn.remote_endpoint().protocol)].push(path);
            }
        }
        out
    }

    pub(crate) fn route(&self, peer: &NodeId) -> Option<Arc<PeerRoute>> {
        read(&self.peers).get(peer).cloned()
    }

    pub(crate) fn routes(&self) -> Vec<(NodeId, Arc<PeerRoute>)> {
        read(&self.peers)
            .iter()
            .map(|(id, r)| (*id, r.clone()))
            .collect()
    }

    pub(crate) fn insert_route(&self, peer: NodeId, route: Arc<PeerRoute>) {
        write(&self.peers).insert(peer, route);
    }

    /// Removes the route of `peer` if it still belongs to `conn_id`, and
    /// closes its queues: messages still queued are dropped and counted.
    pub(crate) fn remove_route(&self, peer: &NodeId, conn_id: u64) {
        let removed = {
            let mut peers = write(&self.peers);
            if peers.get(peer).is_some_and(|r| r.conn_id == conn_id) {
                peers.remove(peer)
            } else {
                None
            }
        };
        let Some(route) = removed else {
            return;
        };
        // Its packets stay counted after it is gone.
        self.connections.connection_closed(
            route.conn.remote_endpoint().protocol,
            route.conn.path_stats(),
        );
        for (_, queue, counters) in &route.queues {
            let dropped = queue.close() as u64;
            if dropped > 0 {
                ChannelCounters::add(&counters.dropped_disconnected, dropped);
                self.stats.add(&self.stats.dropped_disconnected, dropped);
            }
        }
    }
}
