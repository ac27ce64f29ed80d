//! The router: moves typed messages between reactors and peers, and drives
//! the peer manager.
//!
//! Everything a router needs is declared on its [`RouterBuilder`]
//! (transports, channels, reactors, peer-manager settings); `spawn` fixes
//! them and starts one actor task that owns the [`PeerManager`] and every
//! spawned task (accept loops, dials, handshakes, peer tasks, reactors) in
//! `JoinSet`s under one cancellation token. [`Router::shutdown`] stops them
//! all and returns when none is left. Reactors hold a cloneable
//! [`RouterHandle`]; channel handles talk to peers through shared per-peer,
//! per-channel queues, so sending never waits on the actor.
//!
//! # Guarantees
//!
//! - A peer's [`PeerUpdate::Up`] is published to every subscriber before
//!   any message from that peer is put in a channel's receive buffer, and
//!   its `Down` after the last one (when its connection was replaced by a
//!   newer one, messages the old connection had already read may still
//!   follow the `Down`).
//! - Messages to one peer on one channel are delivered in the order sent
//!   (per peer and channel FIFO), and likewise received.
//! - Messages still queued for a peer when it goes down are dropped and
//!   counted (`RouterStats::dropped_disconnected`).
//! - After shutdown, sends fail with [`SendError::RouterStopped`] and
//!   receivers return what they had buffered, then `None`.
//!
//! [`PeerManager`]: crate::PeerManager
//! [`PeerUpdate::Up`]: crate::PeerUpdate::Up

mod actor;
mod builder;
mod channel;
mod clock;
mod dial;
#[cfg(feature = "test-utils")]
mod faults;
mod handle;
mod handshake;
mod inbound;
mod ip_limit;
mod options;
mod peer_error;
mod peer_task;
mod peers;
mod queue;
mod shared;
mod stats;
mod store_writer;
mod tasks;

use tokio::sync::oneshot;

pub use builder::{ChannelError, RouterBuilder, StartError};
pub use channel::{Channel, ChannelReceiver, ChannelSender, Envelope, SendError};
#[cfg(feature = "test-utils")]
pub use faults::Faults;
pub use handle::{AddPeerError, ReactorContext, Router, RouterHandle};
pub use handshake::HandshakeError;
pub use options::{RouterOptions, RouterOptionsError};
pub use peer_error::{PeerError, PeerErrorKind, Severity};
pub use stats::{ChannelStats, RouterStats};

#[cfg(feature = "metrics")]
pub(crate) use self::stats::{DialFailureKind, TRANSPORTS};
/// What the metrics collector reads.
#[cfg(feature = "metrics")]
pub(crate) type RouterMetricsSource = self::shared::Shared;
use crate::address::PeerAddress;
use crate::identity::NodeId;
use crate::peer_manager::AddError;
use crate::transport::Connection;

/// Which addresses a peer may be told about.
pub(crate) type AddressFilter = Box<dyn Fn(&PeerAddress) -> bool + Send>;

/// Messages to the actor.
pub(crate) enum Command {
    Report(PeerError),
    Add(PeerAddress, oneshot::Sender<Result<bool, AddError>>),
    AddMany(Vec<PeerAddress>, oneshot::Sender<usize>),
    Advertise(
        NodeId,
        usize,
        AddressFilter,
        oneshot::Sender<Vec<PeerAddress>>,
    ),
    Known(oneshot::Sender<Vec<NodeId>>),
    /// A connection accepted by the transport with this index.
    Inbound(Box<dyn Connection>, usize),
    Status(oneshot::Sender<Vec<NodeId>>),
}

/// Why a router call failed because the router is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("router stopped")]
pub struct RouterStopped;
