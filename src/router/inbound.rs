//! Inbound connections: the accept loop per transport, the limits checked
//! before any handshake, the handshake task, and refusals (closed in the
//! background, a bounded number at once).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::actor::Actor;
use super::dial::Handshaken;
use super::handshake::{check_peer_info, new_connection_wins, HandshakeError};
use super::tasks::{Ended, Joined};
use super::Command;
use crate::error_budget::Charge;
use crate::identity::NodeId;
use crate::peer_manager::{AdmitError, Direction, PeerStatus};
use crate::transport::{AcceptError, Admission, CloseReason, Connection, RefusalReason, Transport};

pub(super) struct InboundOutcome {
    pub(super) ip: Option<IpAddr>,
    pub(super) started: Instant,
    pub(super) result: Result<Handshaken, (Option<NodeId>, HandshakeError)>,
}

impl Actor {
    pub(super) fn on_handshake_task(&mut self, done: Joined<InboundOutcome>) {
        match self.handshake_ips.ended(done) {
            Ended::Returned(_, outcome) => {
                if let Some(ip) = outcome.ip {
                    self.ip_limiter.handshake_done(ip);
                }
                self.on_inbound(outcome);
            }
            Ended::Failed(ip, error) => {
                let ip = ip.flatten();
                tracing::error!(?ip, %error, "inbound handshake task failed");
                self.shared
                    .stats
                    .bump(&self.shared.stats.handshake_failures);
                if let Some(ip) = ip {
                    self.ip_limiter.handshake_done(ip);
                    self.ip_limiter.release(ip);
                }
            }
        }
    }

    /// A transport accepted a connection: apply the limits that need no
    /// handshake, then handshake in the background.
    pub(super) fn on_accepted(&mut self, conn: Box<dyn Connection>, transport: usize) {
        let conn: Arc<dyn Connection> = Arc::from(conn);
        let ip = conn.remote_endpoint().socket_addr().map(|a| a.ip());
        // The gauge is kept in step at connect and disconnect: no walk over
        // every peer on each accept.
        let inbound_peers = self.shared.connections.inbound_peers();
        let inbound = usize::try_from(inbound_peers).unwrap_or(usize::MAX) + self.handshakes.len();
        let refused = if self.handshakes.len() >= self.options.max_inbound_handshakes
            || inbound >= self.options.max_inbound
        {
            Some("too many inbound connections".to_owned())
        } else if let Some(ip) = ip {
            self.ip_limiter.admit(ip).err().map(|e| e.to_string())
        } else {
            None
        };
        if let Some(reason) = refused {
            self.shared.stats.bump(&self.shared.stats.refused_inbound);
            // One line per window at info, so that a flood of refused
            // connections cannot fill the log; the line says how many the
            // last window did not show.
            let window = self.options.peer_error_window;
            match self.refusal_log.charge(Instant::now(), u32::MAX, window) {
                Charge::Log { quiet } => {
                    tracing::info!(?ip, %reason, quiet, "refusing inbound connection");
                }
                _ => tracing::debug!(?ip, %reason, "refusing inbound connection"),
            }
            self.close_in_background(conn, None);
            return;
        }
        let self_id = self.shared.self_id;
        // Under pressure (half the slots taken) a new handshake gets a
        // quarter of the time, so slots held by silent peers turn over.
        let timeout = if 2 * self.handshakes.len() >= self.options.max_inbound_handshakes {
            self.options.handshake_timeout / 4
        } else {
            self.options.handshake_timeout
        };
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
                            visiting: false,
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

    pub(super) fn on_inbound(&mut self, outcome: InboundOutcome) {
        let Handshaken {
            conn, info, peer, ..
        } = match outcome.result {
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
        // A simultaneous dial, settled before either connection is up: our
        // dial in flight counts as a young outbound connection, and the
        // rule `make_room` applies later decides now, so no connection
        // comes up only to be replaced. Only a dial of the address the
        // peer says it listens on counts: a dial of an address it no
        // longer has (it restarted on another port) would hold the peer
        // off until that dial times out.
        let protocol = conn.remote_endpoint().protocol;
        let claimed = info.self_address(protocol, outcome.ip);
        let dialing_claimed = claimed
            .as_ref()
            .is_some_and(|claimed| self.dialing.values().any(|a| a == claimed));
        let ours_wins = self.pm.status(peer) == PeerStatus::Dialing
            && dialing_claimed
            && !new_connection_wins(
                self.shared.self_id,
                peer,
                Direction::Outbound,
                Duration::ZERO,
                Direction::Inbound,
                self.options.takeover_after,
            );
        if ours_wins {
            tracing::debug!(%peer, "simultaneous dial: keeping ours");
            self.refuse(conn, RefusalReason::Duplicate, outcome.ip);
            return;
        }
        if !self.make_room(peer, Direction::Inbound) {
            self.refuse(conn, RefusalReason::Duplicate, outcome.ip);
            return;
        }
        match self.pm.accepted(now, peer) {
            Ok(()) => {
                self.observe_handshake(outcome.started);
                // Where the peer says it listens goes into the book, so
                // that we can advertise it: otherwise a peer's address
                // would travel only when that peer itself is asked.
                if let Some(address) = claimed {
                    tracing::debug!(%peer, %address, "learned the inbound peer's listen address");
                    let _ = self.pm.add(address);
                }
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

    pub(super) fn refuse(
        &mut self,
        conn: Arc<dyn Connection>,
        reason: RefusalReason,
        ip: Option<IpAddr>,
    ) {
        if let Some(ip) = ip {
            self.ip_limiter.release(ip);
        }
        self.close_in_background(conn, Some(reason));
    }

    pub(super) fn close_in_background(
        &mut self,
        conn: Arc<dyn Connection>,
        refusal: Option<RefusalReason>,
    ) {
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
}

/// Accepts until the transport closes; a failed connection attempt never
/// ends the loop.
pub(super) async fn accept_loop(
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
