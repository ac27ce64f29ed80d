//! Listener plumbing every transport shares: the limits an incoming
//! connection passes before any cryptographic work (handshakes in progress,
//! in all and per source IP, attempts per source IP in a window, live
//! connections), the handshake timeout
//! (shorter under pressure), and the backlog from which
//! [`Transport::accept`](super::Transport::accept) takes finished
//! connections.
//!
//! A transport's accept loop calls [`Listener::admit`] for each incoming
//! connection and [`Listener::reap`] in its `select!`; its `accept` method
//! is [`AcceptQueue::next`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex as AsyncMutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::attempt_rate::AttemptRate;
use super::{AcceptError, AcceptFailure};
use super::{SourceSlot, SourceSlots};
use crate::error_budget::{Charge, ErrorBudget};

/// Finished incoming connections, waiting for `accept`.
pub struct AcceptQueue<C> {
    rx: AsyncMutex<mpsc::Receiver<Result<C, AcceptError>>>,
    closed: CancellationToken,
}

impl<C> std::fmt::Debug for AcceptQueue<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptQueue").finish_non_exhaustive()
    }
}

impl<C> AcceptQueue<C> {
    /// The next connection or failed attempt; [`AcceptError::Closed`] once
    /// `closed` is cancelled or every listener has stopped. Cancel safe.
    pub async fn next(&self) -> Result<C, AcceptError> {
        let mut rx = self.rx.lock().await;
        tokio::select! {
            biased;
            () = self.closed.cancelled() => Err(AcceptError::Closed),
            next = rx.recv() => match next {
                Some(Ok(conn)) => Ok(conn),
                Some(Err(e)) => Err(e),
                None => Err(AcceptError::Closed),
            },
        }
    }
}

/// The listener settings QUIC and MConnection share: what an incoming
/// connection must get past before any cryptographic work, and how long
/// its handshake may take. A transport's config embeds it as `listener`
/// (a `[listener]` table in TOML).
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// Time allowed for one connection's transport handshake (TLS, or TCP
    /// connect plus SecretConnection), in either direction (default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub handshake_timeout: Duration,
    /// Incoming handshakes in progress at once; more connections are
    /// refused before any cryptographic work (default 64). Once half are
    /// taken the listener is under pressure: new handshakes get a quarter
    /// of `handshake_timeout`, and a QUIC listener asks unvalidated
    /// sources to prove their address first (a Retry).
    pub max_incoming_handshakes: usize,
    /// Incoming handshakes in progress from one IPv4 address or IPv6 /64
    /// (default 8), so that one host cannot hold every handshake slot.
    pub max_handshakes_per_ip: usize,
    /// Handshakes one IPv4 address or IPv6 /64 may start per
    /// `attempt_window` (default 16); more are refused before any
    /// cryptographic work, so reconnecting in a loop costs the node nothing
    /// but the refusal.
    pub max_attempts_per_ip: usize,
    /// The window of `max_attempts_per_ip` (default 10 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub attempt_window: Duration,
    /// Live connections, both directions; incoming ones over the limit are
    /// refused before any cryptographic work, dials fail (default 1024).
    pub max_connections: usize,
    /// Connections handshaken but not yet taken by `accept` (default 64).
    pub accept_backlog: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_incoming_handshakes: 64,
            max_handshakes_per_ip: 8,
            max_attempts_per_ip: 16,
            attempt_window: Duration::from_secs(10),
            max_connections: 1024,
            accept_backlog: 64,
        }
    }
}

impl ListenerConfig {
    /// The defaults with another handshake timeout.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Lifts the per-IP limits for a network whose `peers` all connect
    /// from one address (loopback tests, a local network): one IP may take
    /// every handshake slot and reconnect as often as `peers` nodes would.
    pub fn single_source(&mut self, peers: usize) {
        self.max_handshakes_per_ip = self.max_incoming_handshakes;
        self.max_attempts_per_ip = self.max_attempts_per_ip.max(16 * peers + 1024);
    }

    /// Checks for values that cannot work (a transport's `validate` calls
    /// it).
    pub fn validate(&self) -> Result<(), ListenerConfigError> {
        if self.max_incoming_handshakes == 0 {
            return Err(ListenerConfigError::Zero("max_incoming_handshakes"));
        }
        if self.max_connections == 0 {
            return Err(ListenerConfigError::Zero("max_connections"));
        }
        if self.max_handshakes_per_ip == 0 {
            return Err(ListenerConfigError::Zero("max_handshakes_per_ip"));
        }
        if self.max_attempts_per_ip == 0 {
            return Err(ListenerConfigError::Zero("max_attempts_per_ip"));
        }
        if self.handshake_timeout.is_zero() {
            return Err(ListenerConfigError::Zero("handshake_timeout"));
        }
        if self.attempt_window.is_zero() {
            return Err(ListenerConfigError::Zero("attempt_window"));
        }
        Ok(())
    }
}

/// A [`ListenerConfig`] value that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerConfigError {
    /// The named limit is zero: nothing could ever connect.
    #[error("listener.{0} must not be zero")]
    Zero(&'static str),
}

/// The sending side of an [`AcceptQueue`], cloned into each accept loop.
#[derive(Debug)]
pub struct AcceptSender<C> {
    tx: mpsc::Sender<Result<C, AcceptError>>,
}

impl<C> AcceptSender<C> {
    /// Queues a connection finished elsewhere (an in-process transport's
    /// dial) without waiting. Returns `false`, dropping it, when the backlog
    /// is full or nobody accepts any more.
    pub fn try_push(&self, conn: C) -> bool {
        self.tx.try_send(Ok(conn)).is_ok()
    }
}

impl<C> Clone for AcceptSender<C> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

/// A backlog of `backlog` finished connections (at least 1), closed with
/// `closed`.
pub fn accept_queue<C>(
    backlog: usize,
    closed: CancellationToken,
) -> (AcceptSender<C>, AcceptQueue<C>) {
    let (tx, rx) = mpsc::channel(backlog.max(1));
    (
        AcceptSender { tx },
        AcceptQueue {
            rx: AsyncMutex::new(rx),
            closed,
        },
    )
}

/// One accept loop's handshakes: bounded, timed, owned.
#[derive(Debug)]
pub struct Listener<C> {
    queue: AcceptSender<C>,
    connections: Arc<Semaphore>,
    handshake_timeout: Duration,
    max_handshakes: usize,
    handshaking: Arc<Semaphore>,
    per_ip: SourceSlots,
    attempts: AttemptRate,
    /// Paces the `info` line about refusals.
    refusal_log: ErrorBudget,
    refusal_window: Duration,
    handshakes: JoinSet<()>,
}

/// Why [`Listener::admit`] refused a connection, before any work on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// As many handshakes as allowed are in progress.
    #[error("too many handshakes")]
    Handshakes,
    /// As many handshakes as allowed from this IP (or IPv6 /64) are in
    /// progress.
    #[error("too many handshakes from this IP")]
    HandshakesPerIp,
    /// This IP (or IPv6 /64) started as many handshakes as allowed in the
    /// attempt window.
    #[error("connection attempts from this IP are too frequent")]
    AttemptsPerIp,
    /// The transport has as many connections as allowed.
    #[error("connection limit")]
    Connections,
}

impl<C: Send + 'static> Listener<C> {
    /// A listener handing its connections to `queue`, admitting by
    /// `config` (its handshake limit is per listener) and taking a permit
    /// of `connections`, the transport's live connections, for each.
    pub fn new(
        queue: AcceptSender<C>,
        config: &ListenerConfig,
        connections: Arc<Semaphore>,
    ) -> Self {
        Self {
            handshaking: Arc::new(Semaphore::new(config.max_incoming_handshakes)),
            max_handshakes: config.max_incoming_handshakes,
            per_ip: SourceSlots::new(config.max_handshakes_per_ip),
            attempts: AttemptRate::new(config.max_attempts_per_ip, config.attempt_window),
            refusal_log: ErrorBudget::new(Instant::now()),
            refusal_window: config.attempt_window,
            queue,
            connections,
            handshake_timeout: config.handshake_timeout,
            handshakes: JoinSet::new(),
        }
    }

    /// Whether half the handshake slots or more are taken: new handshakes
    /// then get a quarter of the timeout, and a transport that can make a
    /// source prove its address before any state is kept (QUIC's Retry)
    /// should do so.
    pub fn under_pressure(&self) -> bool {
        let taken = self.max_handshakes - self.handshaking.available_permits();
        2 * taken >= self.max_handshakes
    }

    /// Runs `handshake` for a connection from `remote`, if the limits allow
    /// it (checked before any work): it gets the connection permit to keep
    /// for the connection's life. A finished connection waits in the
    /// backlog (holding its permit); a failure or a timeout is reported to
    /// `accept` unless the backlog is full. A refusal is logged here, so
    /// callers need only drop the connection (which `handshake` owns).
    pub fn admit<F>(
        &mut self,
        remote: SocketAddr,
        span: tracing::Span,
        handshake: impl FnOnce(OwnedSemaphorePermit) -> F,
    ) -> Result<(), Refusal>
    where
        F: Future<Output = Result<C, AcceptFailure>> + Send + 'static,
    {
        let timeout = if self.under_pressure() {
            self.handshake_timeout / 4
        } else {
            self.handshake_timeout
        };
        let (ip_slot, slot, permit) = match self.take_slots(remote) {
            Ok(slots) => slots,
            Err(refusal) => {
                // One line per window at info, so that a flood of refusals
                // cannot fill the log; the line says how many the last
                // window did not show.
                let now = Instant::now();
                match self.refusal_log.charge(now, u32::MAX, self.refusal_window) {
                    Charge::Log { quiet } => {
                        tracing::info!(%remote, %refusal, quiet, "incoming connection refused");
                    }
                    _ => tracing::debug!(%remote, %refusal, "incoming connection refused"),
                }
                return Err(refusal);
            }
        };
        let queue = self.queue.tx.clone();
        let handshake = handshake(permit);
        self.handshakes.spawn(
            async move {
                let result = tokio::time::timeout(timeout, handshake).await;
                drop((slot, ip_slot));
                let reason = match result {
                    Ok(Ok(conn)) => {
                        // Waits while the backlog is full: the permit keeps
                        // counting this connection meanwhile.
                        let _ = queue.send(Ok(conn)).await;
                        return;
                    }
                    Ok(Err(reason)) => reason,
                    Err(_) => AcceptFailure::Timeout,
                };
                tracing::debug!(%remote, %reason, "incoming handshake failed");
                let _ = queue.try_send(Err(AcceptError::Connection { remote, reason }));
            }
            .instrument(span),
        );
        Ok(())
    }

    /// The slots a new handshake from `remote` holds, cheapest check
    /// first.
    fn take_slots(
        &mut self,
        remote: SocketAddr,
    ) -> Result<(SourceSlot, OwnedSemaphorePermit, OwnedSemaphorePermit), Refusal> {
        if !self.attempts.try_attempt(remote.ip(), Instant::now()) {
            return Err(Refusal::AttemptsPerIp);
        }
        let ip_slot = self
            .per_ip
            .try_take(remote.ip())
            .ok_or(Refusal::HandshakesPerIp)?;
        let slot = self
            .handshaking
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Handshakes)?;
        let permit = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Connections)?;
        Ok((ip_slot, slot, permit))
    }

    /// Resolves when a handshake task ends (to be polled in the accept
    /// loop's `select!`, so finished tasks are freed); never when none runs.
    pub async fn reap(&mut self) {
        match self.handshakes.join_next().await {
            None => std::future::pending::<()>().await,
            Some(Err(error)) if error.is_panic() => {
                tracing::error!(%error, "incoming handshake task panicked");
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener<C: Send + 'static>(
        queue: AcceptSender<C>,
        handshakes: usize,
        connections: &Arc<Semaphore>,
    ) -> Listener<C> {
        let config = ListenerConfig {
            max_incoming_handshakes: handshakes,
            handshake_timeout: Duration::from_secs(5),
            ..ListenerConfig::default()
        };
        Listener::new(queue, &config, connections.clone())
    }

    fn remote() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap_or_else(|_| unreachable!())
    }

    #[tokio::test(start_paused = true)]
    async fn limits_refuse_before_any_work_and_a_slow_handshake_times_out() {
        let (tx, queue) = accept_queue::<u32>(4, CancellationToken::new());
        let mut listener = listener(tx, 1, &Arc::new(Semaphore::new(8)));
        let pending = || std::future::pending::<Result<u32, AcceptFailure>>();
        assert_eq!(
            listener.admit(remote(), tracing::Span::none(), |_| pending()),
            Ok(())
        );
        // The one handshake slot is taken: refused without running it.
        let refused = listener.admit(remote(), tracing::Span::none(), |_| async {
            unreachable!("a refused handshake never runs")
        });
        assert_eq!(refused, Err(Refusal::Handshakes));
        // The slow one times out and is reported to `accept`.
        listener.reap().await;
        let reported = queue.rx.lock().await.recv().await;
        assert!(matches!(
            reported,
            Some(Err(AcceptError::Connection {
                reason: AcceptFailure::Timeout,
                ..
            }))
        ));
        let mut listener2 = listener;
        let (tx, _queue) = accept_queue::<u32>(4, CancellationToken::new());
        listener2.queue = tx;
        listener2.connections = Arc::new(Semaphore::new(0));
        let refused = listener2.admit(remote(), tracing::Span::none(), |_| pending());
        assert_eq!(refused, Err(Refusal::Connections));
    }

    fn from(ip: &str) -> SocketAddr {
        format!("{ip}:9").parse().unwrap_or_else(|_| unreachable!())
    }

    /// A listener with `config`, 64 connection permits and the queue it
    /// hands connections to (kept open by the caller).
    fn configured(config: ListenerConfig) -> (Listener<u32>, AcceptQueue<u32>) {
        let (tx, queue) = accept_queue::<u32>(64, CancellationToken::new());
        (
            Listener::new(tx, &config, Arc::new(Semaphore::new(64))),
            queue,
        )
    }

    /// Admits a connection from `ip` whose handshake never ends.
    fn admit_pending(l: &mut Listener<u32>, ip: &str) -> Result<(), Refusal> {
        let pending = || std::future::pending::<Result<u32, AcceptFailure>>();
        l.admit(from(ip), tracing::Span::none(), |_| pending())
    }

    #[tokio::test(start_paused = true)]
    async fn one_source_holds_at_most_its_share_of_handshakes() {
        let (mut listener, _queue) = configured(ListenerConfig {
            max_incoming_handshakes: 8,
            max_handshakes_per_ip: 2,
            ..ListenerConfig::default()
        });
        let admit = admit_pending;
        assert_eq!(admit(&mut listener, "10.0.0.1"), Ok(()));
        assert_eq!(admit(&mut listener, "10.0.0.1"), Ok(()));
        assert_eq!(
            admit(&mut listener, "10.0.0.1"),
            Err(Refusal::HandshakesPerIp)
        );
        // Another host is still served; the addresses of one IPv6 /64 are
        // one host.
        assert_eq!(admit(&mut listener, "10.0.0.2"), Ok(()));
        assert_eq!(admit(&mut listener, "[2001:db8::1]"), Ok(()));
        assert_eq!(admit(&mut listener, "[2001:db8::2]"), Ok(()));
        assert_eq!(
            admit(&mut listener, "[2001:db8::3]"),
            Err(Refusal::HandshakesPerIp)
        );
        // When the handshakes end (here: time out), the slots come back.
        for _ in 0..5 {
            listener.reap().await;
        }
        assert_eq!(listener.per_ip.sources(), 0);
        assert_eq!(admit(&mut listener, "10.0.0.1"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_reconnecting_in_a_loop_is_refused_until_its_window_passes() {
        let (mut listener, _queue) = configured(ListenerConfig {
            max_attempts_per_ip: 3,
            attempt_window: Duration::from_secs(10),
            ..ListenerConfig::default()
        });
        let admit = |l: &mut Listener<u32>, ip: &str| {
            l.admit(from(ip), tracing::Span::none(), |_| async { Ok(1) })
        };
        for _ in 0..3 {
            assert_eq!(admit(&mut listener, "10.0.0.1"), Ok(()));
            listener.reap().await;
        }
        // Each finished at once, yet the fourth within the window is
        // refused before its handshake runs.
        let refused = listener.admit(from("10.0.0.1"), tracing::Span::none(), |_| async {
            unreachable!("a refused handshake never runs")
        });
        assert_eq!(refused, Err(Refusal::AttemptsPerIp));
        assert_eq!(admit(&mut listener, "10.0.0.2"), Ok(()));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(admit(&mut listener, "10.0.0.1"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn under_pressure_a_new_handshake_gets_a_quarter_of_the_timeout() {
        let config = ListenerConfig {
            max_incoming_handshakes: 4,
            handshake_timeout: Duration::from_secs(8),
            ..ListenerConfig::default()
        };
        let (mut listener, _queue) = configured(config);
        for ip in ["10.0.0.1", "10.0.0.2"] {
            assert!(!listener.under_pressure());
            assert_eq!(admit_pending(&mut listener, ip), Ok(()));
        }
        assert!(listener.under_pressure(), "half the slots taken");
        let start = tokio::time::Instant::now();
        assert_eq!(admit_pending(&mut listener, "10.0.0.3"), Ok(()));
        // The third, admitted under pressure, ends first: after 2 s, not 8.
        listener.reap().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        listener.reap().await;
        assert_eq!(start.elapsed(), Duration::from_secs(8));
    }

    #[tokio::test]
    async fn a_finished_connection_waits_in_the_backlog_with_its_permit() {
        let connections = Arc::new(Semaphore::new(1));
        let (tx, queue) = accept_queue::<u32>(4, CancellationToken::new());
        let mut listener = listener(tx, 4, &connections);
        listener
            .admit(remote(), tracing::Span::none(), |permit| async move {
                // The connection keeps its permit for its life.
                std::mem::forget(permit);
                Ok(7)
            })
            .unwrap_or_else(|_| unreachable!());
        listener.reap().await;
        assert_eq!(
            queue.rx.lock().await.recv().await.map(|r| r.ok()),
            Some(Some(7))
        );
        assert_eq!(connections.available_permits(), 0);
    }
}
