//! The core conformance suite over loopback QUIC.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use p2p_router::conformance::{self, Expectations};
use p2p_router::{LocalNode, Transport};
use p2p_transport_quic::{QuicConfig, QuicTransport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_transport_passes_the_conformance_suite() {
    conformance::run(
        |key| async move {
            let mut config = QuicConfig::new().listen_on("127.0.0.1:0".parse().unwrap());
            // The suite dials a closed listener: QUIC only learns that from a
            // handshake timeout.
            config.listener.handshake_timeout = Duration::from_secs(2);
            // The suite's many dialers all come from 127.0.0.1.
            config.listener.single_source(64);
            Arc::new(
                QuicTransport::bind(&LocalNode::new(key.clone(), "conformance"), config).unwrap(),
            ) as Arc<dyn Transport>
        },
        Expectations::default(),
    )
    .await;
}
