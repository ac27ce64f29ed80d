//! An in-process transport for tests of p2p-router.
//!
//! A [`MemoryNetwork`] hub creates [`MemoryTransport`]s keyed by node id
//! (endpoints `memory:<node-id>`). A connection has one bounded lane per
//! channel and direction, so, as with QUIC streams, a receiver that stops
//! reading channel A stalls only channel A. Knobs for tests: lane capacity,
//! per-message latency, failing dials and dropping connections.

mod connection;
mod network;
#[cfg(feature = "test-utils")]
pub mod test_utils;

pub use connection::MemoryConnection;
pub use network::{MemoryNetwork, MemoryOptions, MemoryTransport};
