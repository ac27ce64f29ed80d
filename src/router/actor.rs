//! The router actor: one task, one `select!`, handlers that never await
//! network IO. Slow work (dials, handshakes, peer IO) runs in `JoinSet`s it
//! owns.

use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::{self, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::handle::ReactorContext;
use super::handshake::{check_peer_info, new_connection_wins, HandshakeError};
use super::ip_limit::IpLimiter;
use super::peer_task::{PeerChannel, PeerExit, PeerTask};
use super::queue::{ReadySet, SendQueue};
use super::shared::{PeerRoute, Shared};
use super::stats::DialFailureKind;
use super::store_writer::StoreWriter;
use super::{Command, RouterOptions};
use crate::address::PeerAddress;
use crate::identity::NodeId;
use crate::node_info::NodeInfo;
use crate::peer_manager::{AdmitError, Direction, PeerManager};
use crate::transport::{
    AcceptError, Admission, BoxFuture, CloseReason, Connection, DialError, RefusalReason, Transport,
};

/// A reactor declared on the builder: its name and how to start it.
pub(super) struct ReactorSpawn {
    pub(super) name: &'static str,
    pub(super) start: Box<dyn FnOnce(ReactorContext) -> BoxFuture<'static, ()> + Send>,
}

/// Maps the tokio clock (pausable in tests) to the wall-clock times the
/// peer manager persists.
struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    fn now(&self) -> SystemTime {
        self.wall + self.mono.elapsed()
    }

    fn instant(&self, t: SystemTime) -> Instant {
        self.mono + t.duration_since(self.wall).unwrap_or(Duration::ZERO)
    }
}

/// A connection handed from a handshake to the actor.
struct Handshaken {
    conn: Arc<dyn Connection>,
    info: NodeInfo,
    peer: NodeId,
}

struct DialOutcome {
    address: PeerAddress,
    started: Instant,
    result: Result<Handshaken, DialFailure>,
}

#[derive(Debug, thiserror::Error)]
enum DialFailure {
    #[error("resolving: {0}")]
    Resolve(#[from] crate::resolve::ResolveError),
    #[error("no transport serves any endpoint")]
    NoTransport,
    #[error("dial {endpoint}: {error}")]
    Dial {
        endpoint: crate::resolve::Endpoint,
        error: DialError,
    },
    #[error("dial {0}: timed out")]
    DialTimeout(crate::resolve::Endpoint),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
}

struct InboundOutcome {
    ip: Option<IpAddr>,
    started: Instant,
    result: Result<Handshaken, (Option<NodeId>, HandshakeError)>,
}

/// An admitted connection.
struct Active {
    conn_id: u64,
    direction: Direction,
    since: Instant,
    cancel: CancellationToken,
    /// Why we drop the connection, for the close the peer sees; set before
    /// `cancel` (the first reason wins).
    close: Arc<OnceLock<CloseReason>>,
    ip: Option<IpAddr>,
}

impl Active {
    /// Ends the connection, telling the peer `reason`.
    fn drop_with(&self, reason: CloseReason) {
        let _ = self.close.set(reason);
        self.cancel.cancel();
    }
}

/// What a task in one of the actor's `JoinSet`s owns: looked up by task id
/// when it ends, so a task that panicked is cleaned up exactly like one
/// that returned.
struct Owned<T> {
    by_task: HashMap<task::Id, T>,
}

impl<T> Default for Owned<T> {
    fn default() -> Self {
        Self {
            by_task: HashMap::new(),
        }
    }
}

impl<T> Owned<T> {
    fn insert(&mut self, id: task::Id, what: T) {
        self.by_task.insert(id, what);
    }

    fn take(&mut self, id: task::Id) -> Option<T> {
        self.by_task.remove(&id)
    }
}

/// The task id of a finished task and its output, or why it has none.
type Joined<T> = Result<(task::Id, T), JoinError>;

pub(super) struct Actor {
    shared: Arc<Shared>,
    pm: PeerManager,
    /// Writes the peer manager's changes on a blocking thread.
    writer: StoreWriter,
    transports: Vec<Arc<dyn Transport>>,
    options: RouterOptions,
    mailbox: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    clock: Clock,
    /// Reactors not yet spawned (they start with the actor).
    pending_reactors: Vec<(&'static str, BoxFuture<'static, ()>)>,
    reactors: JoinSet<()>,
    reactor_names: Owned<&'static str>,
    /// The first reactor panic, raised again when the router has stopped.
    reactor_panic: Option<Box<dyn Any + Send>>,
    accept_loops: JoinSet<()>,
    dials: JoinSet<DialOutcome>,
    dialing: Owned<PeerAddress>,
    handshakes: JoinSet<InboundOutcome>,
    handshake_ips: Owned<Option<IpAddr>>,
    peers: JoinSet<PeerExit>,
    peer_tasks: Owned<(NodeId, u64)>,
    /// Connections being closed after a refusal, at most
    /// `max_inbound_handshakes` at once (see `close_in_background`).
    closers: JoinSet<()>,
    active: HashMap<NodeId, Active>,
    ip_limiter: IpLimiter,
    next_conn_id: u64,
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

    fn mailbox_sender(&self) -> mpsc::Sender<Command> {
        self.shared
            .started()
            .map(|s| s.mailbox.clone())
            .expect("the builder sets the start-time state before spawning the actor")
    }

    fn node_info(&self, transport: usize) -> NodeInfo {
        self.shared
            .started()
            .and_then(|s| s.node_infos.get(transport).cloned())
            .unwrap_or_default()
    }

    fn on_dial_task(&mut self, done: Joined<DialOutcome>) {
        match done {
            Ok((id, outcome)) => {
                self.dialing.take(id);
                self.on_dialed(outcome);
            }
            Err(error) => {
                let Some(address) = self.dialing.take(error.id()) else {
                    return;
                };
                tracing::error!(%address, %error, "dial task failed");
                self.shared
                    .connections
                    .dial_failed(DialFailureKind::Unreachable);
                self.pm.dial_failed(self.clock.now(), &address);
            }
        }
    }

    fn on_handshake_task(&mut self, done: Joined<InboundOutcome>) {
        match done {
            Ok((id, outcome)) => {
                self.handshake_ips.take(id);
                self.on_inbound(outcome);
            }
            Err(error) => {
                let ip = self.handshake_ips.take(error.id()).flatten();
                tracing::error!(?ip, %error, "inbound handshake task failed");
                self.shared
                    .stats
                    .bump(&self.shared.stats.handshake_failures);
                if let Some(ip) = ip {
                    self.ip_limiter.release(ip);
                }
            }
        }
    }

    fn on_peer_task(&mut self, done: Joined<PeerExit>) {
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

    fn on_reactor_task(&mut self, done: Joined<()>) {
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
    fn wakeup(&mut self) -> Option<Instant> {
        let now = self.clock.now();
        let at = self.pm.next_wakeup(now)?;
        if at <= now && self.dials.len() >= self.options.dial_concurrency {
            // Due now but no dial slot: a finishing dial wakes us instead.
            return None;
        }
        Some(self.clock.instant(at))
    }

    /// Starts due dials, performs evictions, fans out updates, persists.
    fn drive(&mut self) {
        let now = self.clock.now();
        while self.dials.len() < self.options.dial_concurrency {
            let Some(address) = self.pm.dial_next(now) else {
                break;
            };
            let dial = dial(
                address.clone(),
                self.transports.clone(),
                self.shared.clone(),
                self.options.clone(),
            );
            let handle = self.dials.spawn(dial);
            self.dialing.insert(handle.id(), address);
            self.shared
                .connections
                .dials
                .fetch_add(1, Ordering::Relaxed);
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
    fn publish_updates(&mut self) {
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
    fn count_peer(&self, direction: Direction, up: bool) {
        let c = &self.shared.connections;
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

    fn on_command(&mut self, command: Command) {
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

    /// A transport accepted a connection: apply the limits that need no
    /// handshake, then handshake in the background.
    fn on_accepted(&mut self, conn: Box<dyn Connection>, transport: usize) {
        let conn: Arc<dyn Connection> = Arc::from(conn);
        let ip = conn.remote_endpoint().socket_addr().map(|a| a.ip());
        // The gauge is kept in step at connect and disconnect: no walk over
        // every peer on each accept.
        let inbound_peers = self
            .shared
            .connections
            .inbound_peers
            .load(Ordering::Relaxed);
        let inbound = usize::try_from(inbound_peers).unwrap_or(usize::MAX) + self.handshakes.len();
        let refused = if self.handshakes.len() >= self.options.max_inbound_handshakes
            || inbound >= self.options.max_inbound
        {
            Some("too many inbound connections".to_owned())
        } else if let Some(ip) = ip {
            self.ip_limiter
                .admit(ip, Instant::now())
                .err()
                .map(|e| e.to_string())
        } else {
            None
        };
        if let Some(reason) = refused {
            self.shared.stats.bump(&self.shared.stats.refused_inbound);
            tracing::debug!(?ip, %reason, "refusing inbound connection");
            self.close_in_background(conn, None);
            return;
        }
        let self_id = self.shared.self_id;
        let timeout = self.options.handshake_timeout;
        let started = Instant::now();
        let ours = self.node_info(transport);
        #[cfg(feature = "test-utils")]
        let faults = self.shared.faults.clone();
        let handle = self.handshakes.spawn(async move {
            #[cfg(feature = "test-utils")]
            faults.handshake();
            let result = tokio::time::timeout(timeout, conn.handshake(&ours)).await;
            let result = match result {
                Err(_) => Err((None, HandshakeError::Timeout)),
                Ok(Err(e)) => Err((None, HandshakeError::Transport(e))),
                Ok(Ok(info)) => {
                    let key = conn.peer_key();
                    match check_peer_info(&ours, &info, &key, None, self_id) {
                        Ok(peer) => Ok(Handshaken {
                            conn: conn.clone(),
                            info,
                            peer,
                        }),
                        Err(e) => Err((Some(NodeId::from_public_key(&key)), e)),
                    }
                }
            };
            if let Err((_, e)) = &result {
                let reason = match e {
                    HandshakeError::SelfConnection => RefusalReason::Duplicate,
                    _ => RefusalReason::Incompatible,
                };
                let _ = conn.send_admission(Admission::Refused(reason)).await;
                conn.close(CloseReason::Refused).await;
            }
            InboundOutcome {
                ip,
                started,
                result,
            }
        });
        self.handshake_ips.insert(handle.id(), ip);
    }

    fn on_inbound(&mut self, outcome: InboundOutcome) {
        let Handshaken { conn, info, peer } = match outcome.result {
            Ok(h) => h,
            Err((peer, error)) => {
                self.shared
                    .stats
                    .bump(&self.shared.stats.handshake_failures);
                tracing::info!(?peer, %error, "inbound handshake refused");
                if let (Some(peer), true) = (peer, error.marks_inactive()) {
                    self.pm.inactivate(peer);
                }
                if let Some(ip) = outcome.ip {
                    self.ip_limiter.release(ip);
                }
                return;
            }
        };
        let now = self.clock.now();
        if !self.make_room(peer, Direction::Inbound) {
            self.refuse(conn, RefusalReason::Duplicate, outcome.ip);
            return;
        }
        match self.pm.accepted(now, peer) {
            Ok(()) => {
                self.observe_handshake(outcome.started);
                self.start_peer(peer, conn, &info, Direction::Inbound, outcome.ip)
            }
            Err(error) => {
                tracing::info!(%peer, %error, "inbound peer not admitted");
                let reason = match error {
                    AdmitError::Full => RefusalReason::Full,
                    _ => RefusalReason::Duplicate,
                };
                self.refuse(conn, reason, outcome.ip);
            }
        }
    }

    fn observe_handshake(&self, started: Instant) {
        self.shared
            .connections
            .handshake_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    fn on_dialed(&mut self, outcome: DialOutcome) {
        let now = self.clock.now();
        let address = outcome.address;
        let peer = address.node_id();
        let Handshaken { conn, info, .. } = match outcome.result {
            Ok(h) => h,
            Err(error) => {
                tracing::info!(%address, %error, "dial failed");
                self.shared.connections.dial_failed(match &error {
                    DialFailure::Resolve(_) => DialFailureKind::Resolve,
                    DialFailure::NoTransport => DialFailureKind::NoTransport,
                    DialFailure::Dial { .. } | DialFailure::DialTimeout(_) => {
                        DialFailureKind::Unreachable
                    }
                    DialFailure::Handshake(_) => DialFailureKind::Handshake,
                });
                if let DialFailure::Handshake(e) = &error {
                    self.shared
                        .stats
                        .bump(&self.shared.stats.handshake_failures);
                    if e.marks_inactive() {
                        self.pm.inactivate(peer);
                    }
                    if matches!(e, HandshakeError::Refused(RefusalReason::Duplicate))
                        && self.active.contains_key(&peer)
                    {
                        // We lost a simultaneous dial: not the address's fault.
                        self.pm.dial_cancelled(&address);
                        return;
                    }
                }
                self.pm.dial_failed(now, &address);
                return;
            }
        };
        if !self.make_room(peer, Direction::Outbound) {
            self.pm.dial_cancelled(&address);
            self.close_in_background(conn, None);
            return;
        }
        match self.pm.dialed(now, &address) {
            Ok(()) => {
                self.observe_handshake(outcome.started);
                self.start_peer(peer, conn, &info, Direction::Outbound, None)
            }
            Err(error) => {
                self.shared
                    .connections
                    .dial_failed(DialFailureKind::NotAdmitted);
                tracing::info!(%peer, %error, "dialed peer not admitted");
                self.close_in_background(conn, None);
            }
        }
    }

    /// Settles a second connection to `peer`: returns whether the new one
    /// (in `direction`) may proceed, closing the existing one if it loses.
    fn make_room(&mut self, peer: NodeId, direction: Direction) -> bool {
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
                self.count_peer(old.direction, false);
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

    fn start_peer(
        &mut self,
        peer: NodeId,
        conn: Arc<dyn Connection>,
        info: &NodeInfo,
        direction: Direction,
        ip: Option<IpAddr>,
    ) {
        self.next_conn_id += 1;
        let conn_id = self.next_conn_id;
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
                since: Instant::now(),
                cancel,
                close,
                ip,
            },
        );
        self.count_peer(direction, true);
        tracing::info!(%peer, ?direction, "peer up");
        self.pm.ready(peer, ids);
        // Up reaches every subscriber before the task can deliver any of
        // the peer's messages.
        self.publish_updates();
        let handle = self.peers.spawn(task.run());
        self.peer_tasks.insert(handle.id(), (peer, conn_id));
    }

    fn on_peer_exit(&mut self, exit: PeerExit) {
        self.shared.remove_route(&exit.peer, exit.conn_id);
        let current = self
            .active
            .get(&exit.peer)
            .is_some_and(|a| a.conn_id == exit.conn_id);
        if !current {
            return; // a replaced connection
        }
        if let Some(old) = self.active.remove(&exit.peer) {
            self.count_peer(old.direction, false);
            if let Some(ip) = old.ip {
                self.ip_limiter.release(ip);
            }
        }
        tracing::info!(peer = %exit.peer, reason = %exit.reason, "peer down");
        self.pm.disconnected(self.clock.now(), exit.peer);
    }

    fn refuse(&mut self, conn: Arc<dyn Connection>, reason: RefusalReason, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.ip_limiter.release(ip);
        }
        self.close_in_background(conn, Some(reason));
    }

    fn close_in_background(&mut self, conn: Arc<dyn Connection>, refusal: Option<RefusalReason>) {
        if self.closers.len() >= self.options.max_inbound_handshakes.max(1) {
            // A flood of refused connections must not grow the task count:
            // drop this one without telling the peer why.
            drop(conn);
            return;
        }
        let timeout = self.options.handshake_timeout;
        self.closers.spawn(async move {
            if let Some(reason) = refusal {
                let _ =
                    tokio::time::timeout(timeout, conn.send_admission(Admission::Refused(reason)))
                        .await;
            }
            conn.close(CloseReason::Refused).await;
        });
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

/// Accepts until the transport closes; a failed connection attempt never
/// ends the loop.
async fn accept_loop(
    transport: Arc<dyn Transport>,
    index: usize,
    mailbox: mpsc::Sender<Command>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = transport.accept() => a,
        };
        match accepted {
            Ok(conn) => {
                if mailbox.send(Command::Inbound(conn, index)).await.is_err() {
                    return;
                }
            }
            Err(AcceptError::Closed) => return,
            Err(error) => tracing::debug!(%error, "inbound connection failed"),
        }
    }
}

/// Resolves `address` now, then tries each endpoint in turn: connect,
/// handshake, wait for the peer's admission.
async fn dial(
    address: PeerAddress,
    transports: Vec<Arc<dyn Transport>>,
    shared: Arc<Shared>,
    options: RouterOptions,
) -> DialOutcome {
    let span = tracing::debug_span!("dial", %address);
    let started = Instant::now();
    let self_id = shared.self_id;
    #[cfg(feature = "test-utils")]
    shared.faults.dial();
    let result = async {
        let endpoints = address
            .resolve_with_timeout(options.resolve_timeout)
            .await?;
        let mut last = DialFailure::NoTransport;
        for endpoint in endpoints {
            let Some((index, transport)) = transports
                .iter()
                .enumerate()
                .find(|(_, t)| t.protocols().contains(&endpoint.protocol))
            else {
                continue;
            };
            let conn = match tokio::time::timeout(
                options.dial_timeout,
                transport.dial(address.node_id(), &endpoint),
            )
            .await
            {
                Ok(Ok(conn)) => Arc::<dyn Connection>::from(conn),
                // Authenticated, but not whom we want: a handshake
                // failure, not an unreachable address.
                Ok(Err(DialError::WrongPeer { expected, actual })) => {
                    last = DialFailure::Handshake(HandshakeError::WrongPeer { expected, actual });
                    continue;
                }
                Ok(Err(DialError::Incompatible(e))) => {
                    last = DialFailure::Handshake(HandshakeError::IncompatibleTransport(e));
                    continue;
                }
                Ok(Err(error)) => {
                    last = DialFailure::Dial { endpoint, error };
                    continue;
                }
                Err(_) => {
                    last = DialFailure::DialTimeout(endpoint);
                    continue;
                }
            };
            let handshake = async {
                let ours = shared
                    .started()
                    .and_then(|s| s.node_infos.get(index).cloned())
                    .unwrap_or_default();
                let info = conn.handshake(&ours).await?;
                let peer = check_peer_info(
                    &ours,
                    &info,
                    &conn.peer_key(),
                    Some(address.node_id()),
                    self_id,
                )?;
                match conn.recv_admission().await? {
                    Admission::Accepted => Ok(Handshaken {
                        conn: conn.clone(),
                        info,
                        peer,
                    }),
                    Admission::Refused(reason) => Err(HandshakeError::Refused(reason)),
                }
            };
            let result = tokio::time::timeout(options.handshake_timeout, handshake)
                .await
                .unwrap_or(Err(HandshakeError::Timeout));
            return match result {
                Ok(h) => Ok(h),
                Err(e) => {
                    conn.close(CloseReason::Refused).await;
                    Err(DialFailure::Handshake(e))
                }
            };
        }
        Err(last)
    }
    .instrument(span)
    .await;
    DialOutcome {
        address,
        started,
        result,
    }
}
