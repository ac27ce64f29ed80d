//! The core conformance suite over loopback TCP MConnection.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use p2p_router::conformance::{self, Expectations};
use p2p_router::Transport;
use p2p_transport_mconn::{MconnConfig, MconnTransport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mconn_transport_passes_the_conformance_suite() {
    let mut expect = Expectations::default();
    // One TCP stream carries every channel: a channel nobody reads stops
    // the others once the reader's queue for it is full (see the crate
    // docs). The suite then checks the stalled channel still delivers
    // everything in order once read.
    expect.channel_isolation = false;
    conformance::run(
        |key| async move {
            let mut config = MconnConfig::fast().listen_on("127.0.0.1:0".parse().unwrap());
            // The suite's many dialers all come from 127.0.0.1.
            config.listener.single_source(64);
            Arc::new(MconnTransport::bind(&key, config).await.unwrap()) as Arc<dyn Transport>
        },
        expect,
    )
    .await;
}
