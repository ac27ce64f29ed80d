//! The actor's admitted peers: settling a second connection to a peer,
//! starting a peer's task, and tearing it down however the task ends
//! (returned, failed or panicked), keeping the routes, the IP slots, the
//! per-direction gauges and the peer manager in step.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::actor::Actor;
use super::handshake::new_connection_wins;
use super::peer_task::{PeerChannel, PeerExit, PeerTask};
use super::queue::{ReadySet, SendQueue};
use super::shared::PeerRoute;
use super::tasks::{Ended, Joined};
use crate::address::Protocol;
use crate::error_budget::ErrorBudget;
use crate::identity::NodeId;
use crate::node_info::NodeInfo;
use crate::peer_manager::Direction;
use crate::transport::{Admission, CloseReason, Connection};

/// An admitted connection.
pub(super) struct Active {
    pub(super) conn_id: u64,
    pub(super) direction: Direction,
    /// The transport's protocol, for the per-transport gauges.
    pub(super) protocol: Protocol,
    pub(super) since: Instant,
    pub(super) cancel: CancellationToken,
    /// Why we drop the connection, for the close the peer sees; set before
    /// `cancel` (the first reason wins).
    pub(super) close: Arc<OnceLock<CloseReason>>,
    pub(super) ip: Option<IpAddr>,
    /// The peer's minor errors in the current window.
    pub(super) errors: ErrorBudget,
}

impl Active {
    /// Ends the connection, telling the peer `reason`.
    pub(super) fn drop_with(&self, reason: CloseReason) {
        let _ = self.close.set(reason);
        self.cancel.cancel();
    }
}

impl Actor {
    pub(super) fn on_peer_task(&mut self, done: Joined<PeerExit>) {
        match self.peer_tasks.ended(done) {
            Ended::Returned(_, exit) => self.on_peer_exit(exit),
            Ended::Failed(None, _) => {}
            Ended::Failed(Some((peer, conn_id)), error) => {
                tracing::error!(%peer, %error, "peer task failed");
                // The connection was owned by the task; close it here.
                if let Some(route) = self.shared.route(&peer).filter(|r| r.conn_id == conn_id) {
                    let conn = route.conn.clone();
                    self.closers
                        .spawn(async move { conn.close(CloseReason::Normal).await });
                }
                self.on_peer_exit(PeerExit {
                    peer,
                    conn_id,
                    reason: "peer task failed".to_owned(),
                });
            }
        }
    }

    /// Keeps the per-direction peer gauges in step with `active`, without
    /// walking it (the actor's loop must stay O(1) per event).
    pub(super) fn count_peer(&self, protocol: Protocol, direction: Direction, up: bool) {
        let c = self.shared.connections.of(protocol);
        let gauge = match direction {
            Direction::Inbound => &c.inbound_peers,
            Direction::Outbound => &c.outbound_peers,
        };
        if up {
            gauge.fetch_add(1, Ordering::Relaxed);
        } else {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(super) fn observe_handshake(&self, started: Instant) {
        #[cfg(not(feature = "metrics"))]
        let _ = started;
        #[cfg(feature = "metrics")]
        self.shared
            .connections
            .handshake_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Settles a second connection to `peer`: returns whether the new one
    /// (in `direction`) may proceed, closing the existing one if it loses.
    pub(super) fn make_room(&mut self, peer: NodeId, direction: Direction) -> bool {
        let Some(existing) = self.active.get(&peer) else {
            return true;
        };
        let wins = new_connection_wins(
            self.shared.self_id,
            peer,
            existing.direction,
            existing.since.elapsed(),
            direction,
            self.options.takeover_after,
        );
        if wins {
            tracing::debug!(%peer, "new connection replaces the existing one");
            if let Some(old) = self.active.remove(&peer) {
                self.count_peer(old.protocol, old.direction, false);
                old.drop_with(CloseReason::Replaced);
                self.shared.remove_route(&peer, old.conn_id);
                if let Some(ip) = old.ip {
                    self.ip_limiter.release(ip);
                }
            }
            self.pm.disconnected(self.clock.now(), peer);
        }
        wins
    }

    pub(super) fn start_peer(
        &mut self,
        peer: NodeId,
        conn: Arc<dyn Connection>,
        info: &NodeInfo,
        direction: Direction,
        ip: Option<IpAddr>,
    ) {
        self.next_conn_id += 1;
        let conn_id = self.next_conn_id;
        let protocol = conn.remote_endpoint().protocol;
        let mut channels = Vec::new();
        let mut queues = Vec::new();
        let shared = self.shared.clone();
        let Some(started) = shared.started() else {
            return;
        };
        let shared_channels: Vec<_> = started
            .channels
            .iter()
            .filter(|(id, _)| info.has_channel(**id))
            .collect();
        // One wake-up for all of this peer's queues: its one sender.
        let ready = Arc::new(ReadySet::new(shared_channels.len()));
        for (index, (id, entry)) in shared_channels.into_iter().enumerate() {
            let d = &entry.descriptor;
            conn.prepare_channel(d);
            let queue = Arc::new(
                SendQueue::new(d.send_capacity, d.full_policy).waking(ready.clone(), index),
            );
            queues.push((*id, queue.clone(), entry.counters.clone()));
            channels.push(PeerChannel {
                id: *id,
                queue,
                max_message_size: d.max_message_size,
                deliver: entry.deliver.clone(),
                counters: entry.counters.clone(),
            });
        }
        let mut ids: Vec<_> = channels.iter().map(|c| c.id).collect();
        ids.sort();
        self.shared.insert_route(
            peer,
            Arc::new(PeerRoute::new(conn_id, conn.clone(), queues)),
        );
        let cancel = self.cancel.child_token();
        let close = Arc::new(OnceLock::new());
        let task = PeerTask {
            peer,
            ready,
            conn_id,
            conn,
            channels,
            admission: (direction == Direction::Inbound).then(|| {
                if self.pm.is_transient(peer) {
                    Admission::Visiting
                } else {
                    Admission::Accepted
                }
            }),
            cancel: cancel.clone(),
            close_reason: close.clone(),
            router_cancel: self.cancel.clone(),
            shared: self.shared.clone(),
        };
        self.active.insert(
            peer,
            Active {
                conn_id,
                direction,
                protocol,
                since: Instant::now(),
                cancel,
                close,
                ip,
                errors: ErrorBudget::new(Instant::now()),
            },
        );
        self.count_peer(protocol, direction, true);
        tracing::info!(%peer, ?direction, "peer up");
        self.pm.ready(peer, ids, protocol);
        // Up reaches every subscriber before the task can deliver any of
        // the peer's messages.
        self.publish_updates();
        let handle = self.peers.spawn(task.run());
        self.peer_tasks.insert(handle.id(), (peer, conn_id));
    }

    pub(super) fn on_peer_exit(&mut self, exit: PeerExit) {
        self.shared.remove_route(&exit.peer, exit.conn_id);
        let current = self
            .active
            .get(&exit.peer)
            .is_some_and(|a| a.conn_id == exit.conn_id);
        if !current {
            return; // a replaced connection
        }
        if let Some(old) = self.active.remove(&exit.peer) {
            self.count_peer(old.protocol, old.direction, false);
            if let Some(ip) = old.ip {
                self.ip_limiter.release(ip);
            }
        }
        tracing::info!(peer = %exit.peer, reason = %exit.reason, "peer down");
        self.pm.disconnected(self.clock.now(), exit.peer);
    }
}
