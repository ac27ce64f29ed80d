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
//! # Flow control
//!
//! Each channel's stream has its own receive window
//! ([`QuicConfig::stream_receive_window`], default 128 KiB); the connection
//! window is the sum of every stream window the peer may use (2 streams per
//! channel, 16 channels: 33 × 128 KiB), so a stalled or bulk channel never
//! takes connection credit another channel needs. The stream window trades
//! a small channel's latency next to a saturated one against bulk
//! throughput; `examples/window_sweep.rs` measured, on a 2-vCPU VM over
//! loopback (two runs):
//!
//! | stream window | small p50 µs | small p99 µs | bulk MB/s |
//! |---|---|---|---|
//! | 32 KiB | 71–88 | 709–1027 | 203–252 |
//! | 64 KiB | 127–138 | 999–1098 | 401–495 |
//! | 128 KiB | 209–234 | 1105–1174 | 511–632 |
//! | 256 KiB | 378–446 | 1105–1725 | 571–626 |
//! | 1 MiB | 689–728 | 3534–3536 | 571–660 |
//!
//! 128 KiB keeps the small channel's p99 near 1 ms while bulk runs at full
//! speed; beyond it latency grows with no throughput to gain. One window per
//! round trip caps a single channel at window ÷ RTT (≈ 1.3 MB/s at 100 ms),
//! so raise the window on long fat paths.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use p2p_router::{LocalNode, NodeKey};
//! use p2p_transport_quic::{QuicConfig, QuicTransport};
//!
//! let node = LocalNode::new(NodeKey::generate(), "my-chain");
//! let config = QuicConfig::new().listen_on("0.0.0.0:26656".parse()?);
//! let transport = QuicTransport::bind(&node, config)?;
//! # Ok(()) }
//! ```

mod codes;
mod config;
mod congestion;
mod connection;
mod failures;
mod framing;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod resumption;
mod signer;
mod socket;
mod streams;
#[cfg(feature = "test-utils")]
pub mod test_utils;
mod tls;
mod transport;
mod verdicts;

pub use config::{QuicConfig, QuicConfigError, MIN_CONGESTION_WINDOW};
pub use connection::QuicConnection;
pub use resumption::SessionCache;
pub use tls::{certificate_key, verify_certificate, CertificateError};
pub use transport::QuicTransport;
