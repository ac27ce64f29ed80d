//! p2p-router: the networking layer for nodes of a replicated system.
//!
//! Reactors exchange typed protobuf messages on numbered channels; a router
//! moves them between reactors and peers; a [`PeerManager`] decides whom to
//! dial, accept and evict; transports carry the bytes. `docs/ARCHITECTURE.md`
//! in the repository describes the parts and the rules between them.
//!
//! This crate is the transport-agnostic core:
//! - the [`Router`]: declared on a [`RouterBuilder`] (transports, typed
//!   [`Channel`]s, reactors, peer-manager settings), driven by one actor,
//!   stopped by [`Router::shutdown`]; reactors hold a [`RouterHandle`];
//! - identity: [`NodeKey`], [`NodeId`], and [`LocalNode`] (key and network);
//! - addressing: [`PeerAddress`] parsed without IO, resolved into
//!   [`Endpoint`]s at dial time;
//! - the handshake record [`NodeInfo`] and channel [`ChannelDescriptor`]s;
//! - the sans-IO [`PeerManager`] and its [`PeerStore`](peer_store::PeerStore)s;
//! - peer exchange ([`pex`]), a reactor on channel `0x00`;
//! - Prometheus [`metrics`] read from the router's counters;
//! - the [`Transport`] and [`Connection`] traits that the QUIC, MConnection
//!   and memory transports (separate crates) implement, with the
//!   conformance suite they all pass (`test-utils`).

mod address;
mod channel;
#[cfg(feature = "serde")]
mod config_serde;
#[cfg(feature = "test-utils")]
pub mod conformance;
mod error_budget;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod identity;
mod ip_key;
mod local_node;
#[cfg(feature = "metrics")]
pub mod metrics;
mod node_info;
mod peer_manager;
pub mod peer_store;
pub mod pex;
mod resolve;
mod router;
#[cfg(feature = "test-utils")]
pub mod test_utils;
pub mod transport;
pub mod wire;

pub use address::{Host, ParseAddressError, PeerAddress, Protocol};
pub use channel::{ChannelDescriptor, ChannelDescriptorError, ChannelId, FullPolicy};
pub use identity::{KeyFileError, KeyFileErrorKind, NodeId, NodeIdError, NodeKey, NODE_ID_LEN};
pub use local_node::LocalNode;
pub use node_info::{
    IncompatibleError, NodeInfo, NodeInfoError, NodeInfoOther, ProtocolVersion, BLOCK_PROTOCOL,
    MAX_CHANNELS, MAX_NODE_INFO_SIZE, P2P_PROTOCOL,
};
pub use peer_manager::{
    AddError, AdmitError, Direction, OptionsError, PeerManager, PeerManagerError,
    PeerManagerOptions, PeerScore, PeerStatus, PeerUpdate, MAX_ADDRESSES_PER_PEER,
};
/// The stores a node picks from; the trait and records for store
/// implementors are in [`peer_store`].
#[cfg(feature = "redb")]
pub use peer_store::RedbPeerStore;
pub use peer_store::{MemoryPeerStore, StoreError};
pub use resolve::{Endpoint, EndpointAddress, ResolveError, DEFAULT_RESOLVE_TIMEOUT};

/// The README's code examples are compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
#[cfg(feature = "test-utils")]
pub use router::Faults;
pub use router::{
    AddPeerError, Channel, ChannelError, ChannelReceiver, ChannelSender, ChannelStats, Envelope,
    HandshakeError, PeerError, PeerErrorKind, ReactorContext, Router, RouterBuilder, RouterHandle,
    RouterOptions, RouterOptionsError, RouterStats, RouterStopped, SendError, Severity, StartError,
};
/// What a node uses of the transport boundary; the rest (for transport
/// implementors) is in [`transport`].
pub use transport::{AcceptError, BindError, Connection, ConnectionError, DialError, Transport};
