//! The router actor: one task, one `select!`, handlers that never await
//! network IO. Slow work (dials, handshakes, peer IO, reactors, store
//! writes) runs in tasks it owns. Its handlers for dials live in `dial.rs`,
//! for inbound connections in `inbound.rs`; this file has the loop, peer
//! admission and teardown.

use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::clock::Clock;
use super::dial::{dial, DialOutcome};
use super::handshake::new_connection_wins;
use super::inbound::{accept_loop, InboundOutcome};
use super::ip_limit::IpLimiter;
use super::peer_task::{PeerChannel, PeerExit, PeerTask};
use super::queue::{ReadySet, SendQueue};
use super::shared::{PeerRoute, Shared};
use super::store_writer::StoreWriter;
use super::tasks::{Joined, Owned};
use super::{Command, RouterOptions};
use crate::address::{PeerAddress, Protocol};
use crate::identity::NodeId;
use crate::node_info::NodeInfo;
use crate::peer_manager::{Direction, PeerManager};
use crate::transport::{BoxFuture, CloseReason, Connection, Transport};

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
}

impl Active {
    /// Ends the connection, telling the peer `reason`.
    pub(super) fn drop_with(&self, reason: CloseReason) {
        let _ = self.close.set(reason);
        self.cancel.cancel();
    }
}

pub(super) struct Actor {
    pub(super) shared: Arc<Shared>,
    pub(super) pm: PeerManager,
    /// Writes the peer manager's changes on a blocking thread.
    pub(super) writer: StoreWriter,
    pub(super) transports: Vec<Arc<dyn Transport>>,
    pub(super) options: RouterOptions,
    pub(super) mailbox: mpsc::Receiver<Command>,
    pub(super) cancel: CancellationToken,
    pub(super) clock: Clock,
    /// Reactors not yet spawned (they start with the actor).
    pub(super) pending_reactors: Vec<(&'static str, BoxFuture<'static, ()>)>,
    pub(super) reactors: JoinSet<()>,
    pub(super) reactor_names: Owned<&'static str>,
    /// The first reactor panic, raised again when the router has stopped.
    pub(super) reactor_panic: Option<Box<dyn Any + Send>>,
    pub(super) accept_loops: JoinSet<()>,
    pub(super) dials: JoinSet<DialOutcome>,
    pub(super) dialing: Owned<PeerAddress>,
    pub(super) handshakes: JoinSet<InboundOutcome>,
    pub(super) handshake_ips: Owned<Option<IpAddr>>,
    pub(super) peers: JoinSet<PeerExit>,
    pub(super) peer_tasks: Owned<(NodeId, u64)>,
    /// Connections being closed after a refusal, at most
    /// `max_inbound_handshakes` at once (see `close_in_background`).
    pub(super) closers: JoinSet<()>,
    pub(super) active: HashMap<NodeId, Active>,
    pub(super) ip_limiter: IpLimiter,
    pub(super) next_conn_id: u64,
}

impl Actor {
    pub(super) fn new(
        shared: Arc<Shared>,
        pm: PeerManager,
        store: Box<dyn crate::peer_store::PeerStore>,
        transports: Vec<Arc<dyn Transport>>,
        options: RouterOptions,
        mailbox: mpsc::Receiver<Command>,
        reactors: Vec<(&'static str, BoxFuture<'static, ()>)>,
    ) -> Self {
        let ip_limiter = IpLimiter::new(
            options.max_connections_per_ip,
            options.max_attempts_per_ip,
            options.ip_window,
        );
        Self {
            cancel: shared.shutdown.clone(),
            shared,
            pm,
            writer: StoreWriter::spawn(store),
            transports,
            options,
            mailbox,
            clock: Clock::new(),
            pending_reactors: reactors,
            reactors: JoinSet::new(),
            reactor_names: Owned::default(),
            reactor_panic: None,
            accept_loops: JoinSet::new(),
            dials: JoinSet::new(),
            dialing: Owned::default(),
            handshakes: JoinSet::new(),
            handshake_ips: Owned::default(),
            peers: JoinSet::new(),
            peer_tasks: Owned::default(),
            closers: JoinSet::new(),
            active: HashMap::new(),
            ip_limiter,
            next_conn_id: 0,
        }
    }

    pub(super) async fn run(mut self) {
        let span = tracing::info_span!("router", node = %self.shared.self_id);
        // Receivers must end even if this task panics.
        let _stopped = self.shared.stopped.clone().drop_guard();
        let panic = async move {
            for (name, reactor) in std::mem::take(&mut self.pending_reactors) {
                let span = tracing::info_span!("reactor", name);
                let handle = self.reactors.spawn(reactor.instrument(span));
                self.reactor_names.insert(handle.id(), name);
            }
            for (index, transport) in self.transports.clone().into_iter().enumerate() {
                let mailbox = self.mailbox_sender();
                let cancel = self.cancel.clone();
                self.accept_loops
                    .spawn(accept_loop(transport, index, mailbox, cancel));
            }
            loop {
                self.drive();
                let wake = self.wakeup();
                tokio::select! {
                    () = self.cancel.cancelled() => break,
                    Some(command) = self.mailbox.recv() => self.on_command(command),
                    Some(done) = self.dials.join_next_with_id(), if !self.dials.is_empty() => {
                        self.on_dial_task(done);
                    }
                    Some(done) = self.handshakes.join_next_with_id(), if !self.handshakes.is_empty() => {
                        self.on_handshake_task(done);
                    }
                    Some(done) = self.peers.join_next_with_id(), if !self.peers.is_empty() => {
                        self.on_peer_task(done);
                    }
                    Some(done) = self.reactors.join_next_with_id(), if !self.reactors.is_empty() => {
                        self.on_reactor_task(done);
                    }
                    Some(_) = self.closers.join_next(), if !self.closers.is_empty() => {}
                    () = sleep_until(wake) => {}
                }
            }
            self.stop().await
        }
        .instrument(span)
        .await;
        if let Some(panic) = panic {
            std::panic::resume_unwind(panic);
        }
    }

    pub(super) fn mailbox_sender(&self) -> mpsc::Sender<Command> {
        self.shared
            .started()
            .map(|s| s.mailbox.clone())
            .expect("the builder sets the start-time state before spawning the actor")
    }

    pub(super) fn node_info(&self, transport: usize) -> NodeInfo {
        self.shared
            .started()
            .and_then(|s| s.node_infos.get(transport).cloned())
            .unwrap_or_default()
    }

    pub(super) fn on_peer_task(&mut self, done: Joined<PeerExit>) {
        match done {
            Ok((id, exit)) => {
                self.peer_tasks.take(id);
                self.on_peer_exit(exit);
            }
            Err(error) => {
                let Some((peer, conn_id)) = self.peer_tasks.take(error.id()) else {
                    return;
                };
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

    pub(super) fn on_reactor_task(&mut self, done: Joined<()>) {
        match done {
            Ok((id, ())) => {
                let name = self.reactor_names.take(id).unwrap_or("?");
                tracing::debug!(reactor = name, "reactor finished");
            }
            Err(error) => {
                let name = self.reactor_names.take(error.id()).unwrap_or("?");
                tracing::error!(reactor = name, %error, "reactor failed");
                if error.is_panic() && self.reactor_panic.is_none() {
                    self.reactor_panic = Some(error.into_panic());
                }
            }
        }
    }

    /// When to wake for the peer manager, unless an event comes first.
    pub(super) fn wakeup(&mut self) -> Option<Instant> {
        let now = self.clock.now();
        let at = self.pm.next_wakeup(now)?;
        if at <= now && self.dials.len() >= self.options.dial_concurrency {
            // Due now but no dial slot: a finishing dial wakes us instead.
            return None;
        }
        Some(self.clock.instant(at))
    }

    /// Starts due dials, performs evictions, fans out updates, persists.
    pub(super) fn drive(&mut self) {
        let now = self.clock.now();
        while self.dials.len() < self.options.dial_concurrency {
            let Some(address) = self.pm.dial_next(now) else {
                break;
            };
            let protocol = address.protocol();
            let dial = dial(
                address.clone(),
                self.transports.clone(),
                self.shared.clone(),
                self.options.clone(),
            );
            let handle = self.dials.spawn(dial);
            self.dialing.insert(handle.id(), address);
            self.shared.connections.dial_started(protocol);
        }
        while let Some(peer) = self.pm.evict_next() {
            match self.active.get(&peer) {
                Some(active) => {
                    tracing::debug!(%peer, "evicting");
                    // With the reason recorded when it was marked, if any.
                    active.drop_with(CloseReason::Normal);
                }
                None => self.pm.disconnected(now, peer),
            }
        }
        self.publish_updates();
        if let Some(batch) = self.pm.take_store_batch() {
            self.writer.submit(batch);
        }
        self.shared
            .stats
            .set_gauges(self.pm.peer_count(), self.pm.connected_count());
    }

    /// Fans the peer manager's updates out to subscribers.
    pub(super) fn publish_updates(&mut self) {
        let Some(started) = self.shared.started() else {
            return;
        };
        while let Some(update) = self.pm.take_update() {
            // No subscriber is fine; a lagging one lags.
            let _ = started.updates.send(update);
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

    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Report(error) => {
                self.shared.stats.bump(&self.shared.stats.peer_errors);
                tracing::info!(peer = %error.peer, severity = ?error.severity, kind = %error.kind, "peer error");
                let evict = if error.is_fatal() {
                    true
                } else {
                    self.pm.adjust_score(error.peer, -1);
                    self.pm.is_full()
                };
                if evict {
                    self.pm.errored(error.peer);
                    // If it is evicted, the peer learns why.
                    if let Some(active) = self.active.get(&error.peer) {
                        let _ = active.close.set(CloseReason::PeerError);
                    }
                }
            }
            Command::Add(address, reply) => {
                let _ = reply.send(self.pm.add(address));
            }
            Command::AddMany(addresses, reply) => {
                let added = addresses
                    .into_iter()
                    .map(|a| self.pm.add(a))
                    .filter(|added| matches!(added, Ok(true)))
                    .count();
                let _ = reply.send(added);
            }
            Command::Advertise(peer, limit, reply) => {
                let _ = reply.send(self.pm.advertise(peer, limit));
            }
            Command::Known(reply) => {
                let _ = reply.send(self.pm.peers());
            }
            Command::Inbound(conn, transport) => self.on_accepted(conn, transport),
            Command::Status(reply) => {
                let mut up: Vec<NodeId> = self.active.keys().copied().collect();
                up.sort();
                let _ = reply.send(up);
            }
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
        let mut queues = HashMap::new();
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
            queues.insert(*id, (queue.clone(), entry.counters.clone()));
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
            Arc::new(PeerRoute {
                conn_id,
                conn: conn.clone(),
                queues,
            }),
        );
        let cancel = self.cancel.child_token();
        let close = Arc::new(OnceLock::new());
        let task = PeerTask {
            peer,
            ready,
            conn_id,
            conn,
            channels,
            admission: direction == Direction::Inbound,
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
            },
        );
        self.count_peer(protocol, direction, true);
        tracing::info!(%peer, ?direction, "peer up");
        self.pm.ready(peer, ids);
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

    /// Stops everything and returns the first reactor panic, if any.
    async fn stop(mut self) -> Option<Box<dyn Any + Send>> {
        // Callers waiting on a reply learn that the router stopped; nothing
        // new is queued.
        self.mailbox.close();
        while self.mailbox.try_recv().is_ok() {}
        for transport in &self.transports {
            transport.close().await;
        }
        self.accept_loops.shutdown().await;
        self.dials.shutdown().await;
        self.handshakes.shutdown().await;
        // Peer tasks see the cancelled token and close their connections.
        while let Some(done) = self.peers.join_next_with_id().await {
            if let Err(error) = done {
                if error.is_panic() {
                    tracing::error!(%error, "peer task failed during shutdown");
                }
            }
        }
        self.closers.shutdown().await;
        let now = self.clock.now();
        for peer in self.active.keys().copied().collect::<Vec<_>>() {
            self.pm.disconnected(now, peer);
        }
        self.publish_updates();
        if let Some(batch) = self.pm.take_store_batch() {
            self.writer.submit(batch);
        }
        self.writer.close().await;
        // No message can arrive any more: receivers drain, then end.
        self.shared.stopped.cancel();
        while let Some(done) = self.reactors.join_next_with_id().await {
            self.on_reactor_task(done);
        }
        self.reactor_panic
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
