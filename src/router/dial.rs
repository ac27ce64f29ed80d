//! Dialing: resolve the address at dial time, try each endpoint with the
//! transport that serves it, handshake and wait for the peer's admission;
//! then the actor's handling of the outcome.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument;

use super::actor::Actor;
use super::handshake::{check_peer_info, HandshakeError};
use super::shared::Shared;
use super::stats::DialFailureKind;
use super::tasks::{Ended, Joined};
use super::RouterOptions;
use crate::address::PeerAddress;
use crate::identity::NodeId;
use crate::node_info::NodeInfo;
use crate::peer_manager::Direction;
use crate::transport::{Admission, CloseReason, Connection, DialError, RefusalReason, Transport};

/// A connection handed from a handshake to the actor.
pub(super) struct Handshaken {
    pub(super) conn: Arc<dyn Connection>,
    pub(super) info: NodeInfo,
    pub(super) peer: NodeId,
    /// The peer admitted us for a visit only.
    pub(super) visiting: bool,
}

pub(super) struct DialOutcome {
    pub(super) address: PeerAddress,
    pub(super) started: Instant,
    pub(super) result: Result<Handshaken, DialFailure>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum DialFailure {
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

impl Actor {
    pub(super) fn on_dial_task(&mut self, done: Joined<DialOutcome>) {
        match self.dialing.ended(done) {
            Ended::Returned(_, outcome) => self.on_dialed(outcome),
            Ended::Failed(None, _) => {}
            Ended::Failed(Some(address), error) => {
                tracing::error!(%address, %error, "dial task failed");
                self.shared
                    .connections
                    .dial_failed(address.protocol(), DialFailureKind::Unreachable);
                self.pm.dial_failed(self.clock.now(), &address);
            }
        }
    }

    pub(super) fn on_dialed(&mut self, outcome: DialOutcome) {
        let now = self.clock.now();
        let address = outcome.address;
        let peer = address.node_id();
        let Handshaken {
            conn,
            info,
            visiting,
            ..
        } = match outcome.result {
            Ok(h) => h,
            Err(error) => {
                tracing::info!(%address, %error, "dial failed");
                self.shared.connections.dial_failed(
                    address.protocol(),
                    match &error {
                        DialFailure::Resolve(_) => DialFailureKind::Resolve,
                        DialFailure::NoTransport => DialFailureKind::NoTransport,
                        DialFailure::Dial { .. } | DialFailure::DialTimeout(_) => {
                            DialFailureKind::Unreachable
                        }
                        DialFailure::Handshake(_) => DialFailureKind::Handshake,
                    },
                );
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
                if visiting {
                    self.pm.visiting(peer);
                }
                self.observe_handshake(outcome.started);
                self.start_peer(peer, conn, &info, Direction::Outbound, None)
            }
            Err(error) => {
                self.shared
                    .connections
                    .dial_failed(address.protocol(), DialFailureKind::NotAdmitted);
                tracing::info!(%peer, %error, "dialed peer not admitted");
                self.close_in_background(conn, None);
            }
        }
    }
}

/// Resolves `address` now, then tries each endpoint in turn: connect,
/// handshake, wait for the peer's admission.
pub(super) async fn dial(
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
                let visiting = match conn.recv_admission().await? {
                    Admission::Accepted => false,
                    Admission::Visiting => true,
                    Admission::Refused(reason) => return Err(HandshakeError::Refused(reason)),
                };
                Ok(Handshaken {
                    conn: conn.clone(),
                    info,
                    peer,
                    visiting,
                })
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
