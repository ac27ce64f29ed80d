//! The router actor: one task, one `select!`, handlers that never await
//! network IO. Slow work (dials, handshakes, peer IO) runs in `JoinSet`s it
//! owns.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::handshake::{check_peer_info, new_connection_wins, HandshakeError};
use super::ip_limit::IpLimiter;
use super::peer_task::{PeerChannel, PeerExit, PeerTask};
use super::queue::{ReadySet, SendQueue};
use super::shared::{PeerRoute, Shared};
use super::stats::DialFailureKind;
use super::{Command, RouterOptions};
use crate::address::PeerAddress;
use crate::identity::NodeId;
use crate::node_info::NodeInfo;
use crate::peer_manager::{AdmitError, Direction, PeerManager};
use crate::transport::{
    AcceptError, Admission, CloseReason, Connection, DialError, RefusalReason, Transport,
};

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
    Resolve(String),
    #[error("no transport serves any endpoint")]
    NoTransport,
    #[error("dial: {0}")]
    Dial(String),
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

pub(super) struct Actor {
    shared: Arc<Shared>,
    pm: PeerManager,
    transports: Vec<Arc<dyn Transport>>,
    options: RouterOptions,
    mailbox: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    clock: Clock,
    accept_loops: JoinSet<()>,
    dials: JoinSet<DialOutcome>,
    handshakes: JoinSet<InboundOutcome>,
    peers: JoinSet<PeerExit>,
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
        transports: Vec<Arc<dyn Transport>>,
        options: RouterOptions,
        mailbox: mpsc::Receiver<Command>,
        cancel: CancellationToken,
    ) -> Self {
        let ip_limiter = IpLimiter::new(
            options.max_connections_per_ip,
            options.max_attempts_per_ip,
            options.ip_window,
        );
        Self {
            shared,
            pm,
            transports,
            options,
            mailbox,
            cancel,
            clock: Clock::new(),
            accept_loops: JoinSet::new(),
            dials: JoinSet::new(),
            handshakes: JoinSet::new(),
            peers: JoinSet::new(),
            closers: JoinSet::new(),
            active: HashMap::new(),
            ip_limiter,
            next_conn_id: 0,
        }
    }

    pub(super) async fn run(mut self) {
        let span = tracing::info_span!("router", node = %self.shared.self_id);
        async move {
            for transport in self.transports.clone() {
                let mailbox = self.shared.mailbox.clone();
                let cancel = self.cancel.clone();
                self.accept_loops
                    .spawn(accept_loop(transport, mailbox, cancel));
            }
            loop {
                self.drive();
                let wake = self.wakeup();
                tokio::select! {
                    () = self.cancel.cancelled() => break,
                    Some(command) = self.mailbox.recv() => self.on_command(command),
                    Some(done) = self.dials.join_next(), if !self.dials.is_empty() => {
                        if let Ok(outcome) = done {
                            self.on_dialed(outcome);
                        }
                    }
                    Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                        if let Ok(outcome) = done {
                            self.on_inbound(outcome);
                        }
                    }
                    Some(done) = self.peers.join_next(), if !self.peers.is_empty() => {
                        if let Ok(exit) = done {
                            self.on_peer_exit(exit);
                        }
                    }
                    Some(_) = self.closers.join_next(), if !self.closers.is_empty() => {}
                    () = sleep_until(wake) => {}
                }
            }
            self.stop().await;
        }
        .instrument(span)
        .await;
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
                address,
                self.transports.clone(),
                self.shared.clone(),
                self.shared.self_id,
                self.options.clone(),
            );
            self.dials.spawn(dial);
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
        while let Some(update) = self.pm.take_update() {
            // No subscriber is fine; a lagging one lags.
            let _ = self.shared.updates.send(update);
        }
        if let Err(error) = self.pm.flush() {
            tracing::warn!(%error, "peer store write failed; will retry");
        }
        self.shared
            .stats
            .set_gauges(self.pm.peer_count(), self.pm.connected_count());
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
                tracing::info!(peer = %error.peer, fatal = error.fatal, reason = %error.reason, "peer error");
                let evict = if error.fatal {
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
            Command::Inbound(conn) => self.on_accepted(conn),
            Command::Status(reply) => {
                let mut up: Vec<NodeId> = self.active.keys().copied().collect();
                up.sort();
                let _ = reply.send(up);
            }
        }
    }

    /// A transport accepted a connection: apply the limits that need no
    /// handshake, then handshake in the background.
    fn on_accepted(&mut self, conn: Box<dyn Connection>) {
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
        let shared = self.shared.clone();
        let self_id = self.shared.self_id;
        let timeout = self.options.handshake_timeout;
        let started = Instant::now();
        self.handshakes.spawn(async move {
            let ours = shared.node_info();
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
                    DialFailure::Dial(_) => DialFailureKind::Unreachable,
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
        let table = self.shared.channels();
        let shared_channels: Vec<_> = table
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
            queues.insert(*id, queue.clone());
            channels.push(PeerChannel {
                id: *id,
                queue,
                max_message_size: d.max_message_size,
                deliver: entry.deliver.clone(),
                counters: entry.counters.clone(),
            });
        }
        drop(table);
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
        self.peers.spawn(task.run());
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

    async fn stop(mut self) {
        for transport in &self.transports {
            transport.close().await;
        }
        self.accept_loops.shutdown().await;
        self.dials.shutdown().await;
        self.handshakes.shutdown().await;
        // Peer tasks see the cancelled token and close their connections.
        while self.peers.join_next().await.is_some() {}
        self.closers.shutdown().await;
        let now = self.clock.now();
        for peer in self.active.keys().copied().collect::<Vec<_>>() {
            self.pm.disconnected(now, peer);
        }
        while let Some(update) = self.pm.take_update() {
            let _ = self.shared.updates.send(update);
        }
        if let Err(error) = self.pm.flush() {
            tracing::warn!(%error, "peer store write failed at shutdown");
        }
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
                if mailbox.send(Command::Inbound(conn)).await.is_err() {
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
    self_id: NodeId,
    options: RouterOptions,
) -> DialOutcome {
    let span = tracing::debug_span!("dial", %address);
    let started = Instant::now();
    let result = async {
        let endpoints = address
            .resolve_with_timeout(options.resolve_timeout)
            .await
            .map_err(|e| DialFailure::Resolve(e.to_string()))?;
        let mut last = DialFailure::NoTransport;
        for endpoint in endpoints {
            let Some(transport) = transports
                .iter()
                .find(|t| t.protocols().contains(&endpoint.protocol))
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
                Ok(Err(e)) => {
                    last = DialFailure::Dial(format!("{endpoint}: {e}"));
                    continue;
                }
                Err(_) => {
                    last = DialFailure::Dial(format!("{endpoint}: timed out"));
                    continue;
                }
            };
            let handshake = async {
                // Read now, not when the dial was planned: channels opened
                // right after the router started are announced.
                let ours = shared.node_info();
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
