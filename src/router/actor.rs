//! The router actor: one task, one `select!`, handlers that never await
//! network IO. Slow work (dials, handshakes, peer IO, reactors, store
//! writes) runs in tasks it owns. Its handlers for dials live in `dial.rs`,
//! for inbound connections in `inbound.rs`, for admitted peers in `peers.rs`;
//! this file has the loop, commands and shutdown.

use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::clock::Clock;
use super::dial::{dial, DialOutcome};
use super::inbound::{accept_loop, InboundOutcome};
use super::ip_limit::{IpLimiter, IpLimits};
use super::peer_task::PeerExit;
use super::peers::Active;
use super::shared::Shared;
use super::store_writer::StoreWriter;
use super::tasks::{Ended, Joined, Owned};
use super::{Command, PeerError, RouterOptions};
use crate::address::PeerAddress;
use crate::error_budget::{Charge, ErrorBudget};
use crate::identity::NodeId;
use crate::node_info::NodeInfo;
use crate::peer_manager::PeerManager;
use crate::transport::{BoxFuture, CloseReason, Transport};

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
    /// Log lines about refused inbound connections, one per window.
    pub(super) refusal_log: ErrorBudget,
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
        let ip_limiter = IpLimiter::new(IpLimits {
            connections: options.max_connections_per_ip,
            handshakes: options.max_handshakes_per_ip,
        });
        Self {
            cancel: shared.shutdown_token().clone(),
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
            refusal_log: ErrorBudget::new(Instant::now()),
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

    pub(super) fn on_reactor_task(&mut self, done: Joined<()>) {
        match self.reactor_names.ended(done) {
            Ended::Returned(name, ()) => {
                tracing::debug!(reactor = name.unwrap_or("?"), "reactor finished");
            }
            Ended::Failed(name, error) => {
                let name = name.unwrap_or("?");
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
        self.pm.expire_transient(now);
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
        self.shared.stats.set_gauges(
            self.pm.peer_count(),
            self.pm.connected_count(),
            self.pm.transient_count(),
        );
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

    /// Logs a reported error within the peer's log budget, and says
    /// whether a minor one has spent the peer's error budget.
    fn charge(&mut self, error: &PeerError) -> bool {
        let (peer, kind) = (error.peer, &error.kind);
        let active = self.active.get_mut(&peer);
        let charge = match active {
            Some(active) if !error.is_fatal() => active.errors.charge(
                Instant::now(),
                self.options.peer_error_budget,
                self.options.peer_error_window,
            ),
            // Fatal: the peer goes, so this is its last line. A peer no
            // longer connected cannot report again either.
            _ => Charge::Log { quiet: 0 },
        };
        match charge {
            Charge::Log { quiet } => {
                tracing::info!(%peer, severity = ?error.severity, %kind, quiet, "peer error");
                false
            }
            Charge::Quiet => false,
            Charge::Spent { first } => {
                if first {
                    tracing::info!(
                        %peer,
                        %kind,
                        budget = self.options.peer_error_budget,
                        window = ?self.options.peer_error_window,
                        "too many peer errors; disconnecting"
                    );
                }
                true
            }
        }
    }

    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Report(error) => {
                self.shared.stats.bump(&self.shared.stats.peer_errors);
                let spent = self.charge(&error);
                let evict = if error.is_fatal() || spent {
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
            Command::Advertise(peer, limit, keep, reply) => {
                let _ = reply.send(self.pm.advertise_matching(peer, limit, keep));
                // A visitor has what it came for.
                self.pm.visit_served(self.clock.now(), peer);
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
