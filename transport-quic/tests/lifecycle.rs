//! Connection lifecycle over loopback QUIC: graceful close with a visible
//! reason, keep-alive and idle timeout, stateless reset after a restart.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use p2p_router::transport::CloseReason;
use p2p_router::{ChannelId, Connection};
use p2p_transport_quic::{QuicConfig, QuicTransport};

fn config(idle: Duration, keep_alive: Duration) -> QuicConfig {
    let mut c = quic_config("127.0.0.1:0");
    c.idle_timeout = idle;
    c.keep_alive_interval = keep_alive;
    c
}

#[tokio::test]
async fn graceful_close_delivers_pending_data_and_a_reason_code() {
    let (kd, kl) = (key(160), key(161));
    let d = QuicTransport::bind(&node(&kd), quic_config("127.0.0.1:0")).unwrap();
    let l = QuicTransport::bind(&node(&kl), quic_config("127.0.0.1:0")).unwrap();
    let (dialer, accepted) = handshaken(&d, &kd, &l, &kl, l.local_addrs()[0]).await;
    // Sent, then closed at once: the close waits until the data is
    // acknowledged, so the peer reads every message.
    for n in 0..100u32 {
        accepted
            .send(ChannelId(1), Bytes::from(n.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    accepted.close(CloseReason::Shutdown).await;
    for n in 0..100u32 {
        let got = within("message", dialer.recv(ChannelId(1), 64))
            .await
            .unwrap();
        assert_eq!(got.as_ref(), n.to_be_bytes());
    }
    within("closed", dialer.closed()).await;
    match dialer.quinn().close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c)) => {
            // 0x04: shutdown (docs/PROTOCOL.md).
            assert_eq!(c.error_code, quinn::VarInt::from_u32(0x04));
            assert_eq!(&c.reason[..], b"shutdown");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_dead_peer_is_noticed_by_the_idle_timeout_and_a_quiet_one_is_kept() {
    let (kd, kl) = (key(162), key(163));
    let quick = config(Duration::from_millis(900), Duration::from_millis(150));
    let d = QuicTransport::bind(&node(&kd), quick.clone()).unwrap();
    let l = QuicTransport::bind(&node(&kl), quick).unwrap();
    let proxy = UdpProxy::start(l.local_addrs()[0]).await;
    let (dialer, accepted) = handshaken(&d, &kd, &l, &kl, proxy.addr).await;

    // Quiet but alive: keep-alives hold it open across several idle
    // timeouts.
    let quiet = tokio::time::timeout(Duration::from_millis(3000), dialer.closed()).await;
    assert!(quiet.is_err(), "an idle healthy connection was dropped");

    // The path dies without a close frame: both sides time out.
    proxy.kill().await;
    within("dialer timeout", dialer.closed()).await;
    within("listener timeout", accepted.closed()).await;
    assert!(matches!(
        dialer.quinn().close_reason(),
        Some(quinn::ConnectionError::TimedOut)
    ));
}

#[tokio::test]
async fn a_node_restarted_at_the_same_address_resets_stale_connections() {
    let (kd, kl) = (key(164), key(165));
    let d = QuicTransport::bind(&node(&kd), quic_config("127.0.0.1:0")).unwrap();
    let l1 = QuicTransport::bind(&node(&kl), quic_config("127.0.0.1:0")).unwrap();
    // The dialer reaches the listener through a relay whose address the
    // restarted listener will take over.
    let proxy = UdpProxy::start(l1.local_addrs()[0]).await;
    let address = proxy.addr;
    let (dialer, _accepted) = handshaken(&d, &kd, &l1, &kl, address).await;
    proxy.kill().await;
    drop(l1);

    // Same key, the address the dialer knows. Its reset key is derived from
    // the node key, so its stateless reset for the unknown connection is
    // valid and the dialer drops the connection at its next keep-alive
    // instead of waiting out the idle timeout.
    let mut config = QuicConfig::new().listen_on(address);
    config.listener.handshake_timeout = Duration::from_secs(5);
    let _l2 = QuicTransport::bind(&node(&kl), config).unwrap();
    within("reset", dialer.closed()).await;
    assert!(
        matches!(
            dialer.quinn().close_reason(),
            Some(quinn::ConnectionError::Reset)
        ),
        "{:?}",
        dialer.quinn().close_reason()
    );
}

#[tokio::test]
async fn a_capped_congestion_window_carries_bulk_data_within_the_cap() {
    let (kd, kl) = (key(170), key(171));
    let cap = 64 * 1024;
    let mut capped = quic_config("127.0.0.1:0");
    capped.max_congestion_window = Some(cap);
    let d = QuicTransport::bind(&node(&kd), capped.clone()).unwrap();
    let l = QuicTransport::bind(&node(&kl), capped).unwrap();
    let (dialer, accepted) = handshaken(&d, &kd, &l, &kl, l.local_addrs()[0]).await;
    let message = Bytes::from(vec![7u8; 16 * 1024]);
    let send = async {
        for _ in 0..256 {
            dialer.send(ChannelId(1), message.clone()).await.unwrap();
            // Never more in flight than the cap allows.
            assert!(dialer.quinn().stats().path.cwnd <= cap);
        }
    };
    let receive = async {
        for _ in 0..256 {
            let got = within("message", accepted.recv(ChannelId(1), 32 * 1024))
                .await
                .unwrap();
            assert_eq!(got.len(), message.len());
        }
    };
    tokio::join!(send, receive);
}
