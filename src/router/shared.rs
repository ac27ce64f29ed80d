//! State shared between the router actor and channel handles: the channel
//! table and the routing table. Locks are held only for lookups and never
//! across an await.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

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
    pub(crate) queues: HashMap<ChannelId, Arc<SendQueue>>,
}

pub(crate) struct Shared {
    pub(crate) self_id: NodeId,
    pub(crate) node_info: RwLock<NodeInfo>,
    pub(crate) channels: RwLock<HashMap<ChannelId, ChannelEntry>>,
    pub(crate) peers: RwLock<HashMap<NodeId, Arc<PeerRoute>>>,
    pub(crate) stats: Stats,
    pub(crate) connections: ConnectionCounters,
    /// `PeerManagerOptions::max_peers`, fixed at start.
    pub(crate) store_capacity: usize,
    pub(crate) updates: broadcast::Sender<PeerUpdate>,
    pub(crate) mailbox: mpsc::Sender<Command>,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Sends the actor a command carrying a reply slot, and waits for the
    /// reply.
    pub(crate) async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RouterStopped> {
        let (tx, rx) = oneshot::channel();
        self.mailbox
            .send(command(tx))
            .await
            .map_err(|_| RouterStopped)?;
        rx.await.map_err(|_| RouterStopped)
    }

    pub(crate) fn node_info(&self) -> NodeInfo {
        read(&self.node_info).clone()
    }

    pub(crate) fn node_info_mut(&self) -> RwLockWriteGuard<'_, NodeInfo> {
        write(&self.node_info)
    }

    pub(crate) fn channels(&self) -> RwLockReadGuard<'_, HashMap<ChannelId, ChannelEntry>> {
        read(&self.channels)
    }

    pub(crate) fn channels_mut(&self) -> RwLockWriteGuard<'_, HashMap<ChannelId, ChannelEntry>> {
        write(&self.channels)
    }

    /// Every open channel's counters, with its queued messages summed
    /// over peers.
    pub(crate) fn channel_stats(&self) -> Vec<super::ChannelStats> {
        let mut queued: HashMap<ChannelId, u64> = HashMap::new();
        for route in read(&self.peers).values() {
            for (id, queue) in &route.queues {
                *queued.entry(*id).or_default() += queue.len() as u64;
            }
        }
        let mut out: Vec<_> = self
            .channels()
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

    /// Path statistics of every open connection that measures them.
    pub(crate) fn path_stats(&self) -> Vec<crate::transport::PathStats> {
        read(&self.peers)
            .values()
            .filter_map(|r| r.conn.path_stats())
            .collect()
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

    /// Removes the route of `peer` if it still belongs to `conn_id`.
    pub(crate) fn remove_route(&self, peer: &NodeId, conn_id: u64) {
        let mut peers = write(&self.peers);
        if peers.get(peer).is_some_and(|r| r.conn_id == conn_id) {
            if let Some(route) = peers.remove(peer) {
                for queue in route.queues.values() {
                    queue.close();
                }
            }
        }
    }
}
