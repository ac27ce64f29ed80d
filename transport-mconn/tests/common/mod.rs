//! Helpers shared by the MConnection tests.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use p2p_router::NodeKey;
use p2p_transport_mconn::{MconnConfig, MconnTransport};

/// A transport with `key` listening on an ephemeral loopback port, without
/// rate limits or flush delay.
pub async fn fast_listener(key: &NodeKey) -> MconnTransport {
    MconnTransport::bind(
        key,
        MconnConfig::fast().listen_on("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap()
}

/// A transport with `key` that only dials, without rate limits or flush
/// delay.
pub async fn fast_dialer(key: &NodeKey) -> MconnTransport {
    MconnTransport::bind(key, MconnConfig::fast())
        .await
        .unwrap()
}
