//! The QUIC transport of p2p-router: **each channel is one QUIC stream per
//! peer and direction**, so QUIC's per-stream flow control is the per-peer,
//! per-channel send queue and a stalled channel never blocks another.
//!
//! - Identity: TLS 1.3 with mutual authentication; each node presents a
//!   self-signed certificate of its ed25519 node key, and a dialer accepts
//!   only the node id it dialed.
//! - Networks are kept apart by ALPN (`p2p-router/1/<hash of network>`).
//! - A control stream carries the `NodeInfo` handshake and the admission
//!   byte; channel streams carry length-delimited messages.
//!
//! The wire protocol is specified in `docs/PROTOCOL.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use p2p_router::NodeKey;
//! use p2p_transport_quic::{QuicConfig, QuicTransport};
//!
//! let key = NodeKey::generate();
//! let config = QuicConfig::new("my-chain").listen_on("0.0.0.0:26656".parse()?);
//! let transport = QuicTransport::bind(&key, config)?;
//! # Ok(()) }
//! ```

mod codes;
mod config;
mod connection;
mod framing;
mod socket;
mod streams;
mod tls;
mod transport;

pub use config::QuicConfig;
pub use connection::{QuicConnection, MAX_NODE_INFO_SIZE};
pub use tls::{certificate_key, verify_certificate, CertificateError};
pub use transport::{BindError, QuicTransport};
