//! The TCP MConnection transport of p2p-router, wire-compatible with
//! Tendermint v0.34 to CometBFT v0.38 nodes: the baseline QUIC is measured
//! against, and the bridge to existing networks (`mconn://` addresses).
//!
//! - [SecretConnection](https://github.com/tendermint/tendermint/blob/v0.34.24/p2p/conn/secret_connection.go):
//!   X25519 + Merlin + HKDF-SHA256 + ChaCha20-Poly1305, ed25519 identities.
//! - `NodeInfo` exchanged length-delimited in both directions at once
//!   (at most 10,240 bytes).
//! - MConnection: channel messages cut into `PacketMsg` chunks (default
//!   1024 bytes), channels scheduled by least recently-sent bytes ÷
//!   priority, writes batched and flushed per a throttle, optional rate
//!   limits, ping/pong keep-alive.
//!
//! Differences from the QUIC transport: one TCP stream carries every
//! channel, so a receiver that stops reading one channel eventually stops
//! all of them (there is no per-channel flow control); there is no
//! admission message (a refused dialer sees the connection close) and no
//! close reason on the wire.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use p2p_router::NodeKey;
//! use p2p_transport_mconn::{MconnConfig, MconnTransport};
//!
//! let key = NodeKey::generate();
//! let config = MconnConfig::new().listen_on("0.0.0.0:26656".parse()?);
//! let transport = MconnTransport::bind(&key, config).await?;
//! # Ok(()) }
//! ```

mod config;
mod conn;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod proto;
mod rate;
mod reassembly;
mod scheduler;
mod secret;
mod transport;

pub use config::{MconnConfig, MconnConfigError};
pub use conn::MconnConnection;
pub use secret::SecretError;
pub use transport::MconnTransport;
