//! Channel streams under hostile input, over loopback QUIC: each bad stream
//! is reset with its code and reported, the connection and the other
//! channels carry on.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{hostile_pair, key, node, quic_config, within, Hostile};
use p2p_router::transport::MalformedKind;
use p2p_router::{ChannelId, Connection, ConnectionError};
use p2p_transport_quic::QuicTransport;
use quinn::{SendStream, VarInt};

/// Stream codes from docs/PROTOCOL.md.
const CANCELLED: u32 = 0x01;
const UNKNOWN_CHANNEL: u32 = 0x02;
const DUPLICATE_STREAM: u32 = 0x03;
const OVERSIZED: u32 = 0x04;
const MALFORMED: u32 = 0x05;

/// A listener and a hand-built peer connected to it (the listener must be
/// kept for as long as the connection is used).
async fn hostile() -> (QuicTransport, Hostile) {
    let k = key(110);
    let l = QuicTransport::bind(&node(&k), quic_config("127.0.0.1:0")).unwrap();
    let h = hostile_pair(&l, &k).await;
    (l, h)
}

/// Opens a raw channel stream: header (channel, generation), then `body`.
async fn raw_stream(h: &Hostile, channel: u8, generation: u8, body: &[u8]) -> SendStream {
    let mut s = h.conn.quinn().open_uni().await.unwrap();
    s.write_all(&[channel, generation]).await.unwrap();
    s.write_all(body).await.unwrap();
    s
}

fn frame(message: &[u8]) -> Vec<u8> {
    assert!(message.len() < 128);
    let mut v = vec![message.len() as u8];
    v.extend_from_slice(message);
    v
}

/// The code the listener stopped `stream` with.
async fn stopped_with(stream: &SendStream) -> u32 {
    let code = within("stop", stream.stopped()).await.unwrap();
    u32::try_from(code.expect("stopped, not acknowledged").into_inner()).unwrap()
}

/// The other channels still work both ways.
async fn others_still_flow(h: &Hostile, channel: ChannelId) {
    let (hostile, accepted): (&dyn Connection, &dyn Connection) = (&h.conn, &*h.accepted);
    for (from, to, text) in [
        (hostile, accepted, "still here"),
        (accepted, hostile, "and back"),
    ] {
        from.send(channel, Bytes::from(text)).await.unwrap();
        let got = within(text, to.recv(channel, 1024)).await;
        assert_eq!(got.unwrap(), Bytes::from(text));
    }
}

#[tokio::test]
async fn garbage_resets_only_that_stream() {
    let (_l, h) = hostile().await;
    let s = raw_stream(&h, 1, 0, &[0xff; 24]).await;
    let got = within("recv", h.accepted.recv(ChannelId(1), 1024)).await;
    assert!(matches!(got, Err(ConnectionError::Malformed(_))), "{got:?}");
    assert!(got.unwrap_err().is_stream_error());
    assert_eq!(stopped_with(&s).await, MALFORMED);
    others_still_flow(&h, ChannelId(2)).await;
    // The channel itself carries on with a newer stream.
    let _s = raw_stream(&h, 1, 1, &frame(b"fresh")).await;
    assert_eq!(recv(&h, 1).await, Bytes::from_static(b"fresh"), "recv");
}

#[tokio::test]
async fn oversized_length_prefix_is_refused_before_any_body_arrives() {
    let (_l, h) = hostile().await;
    // 2^40 as a varint and not one byte of body: the refusal cannot have
    // waited for (or allocated) the body.
    let s = raw_stream(&h, 1, 0, &[0x80, 0x80, 0x80, 0x80, 0x80, 0x20]).await;
    let got = within("recv", h.accepted.recv(ChannelId(1), 1024)).await;
    assert_eq!(
        got,
        Err(ConnectionError::Oversized {
            size: 1 << 40,
            max: 1024
        })
    );
    assert_eq!(stopped_with(&s).await, OVERSIZED);
    others_still_flow(&h, ChannelId(3)).await;
}

#[tokio::test]
async fn unknown_channel_is_reset_and_reported() {
    let (_l, h) = hostile().await;
    // Channel 9 is in neither NodeInfo.
    let s = raw_stream(&h, 9, 0, &frame(b"x")).await;
    let error = within("stream error", h.accepted.next_stream_error()).await;
    assert_eq!(error, ConnectionError::UnexpectedChannel(ChannelId(9)));
    assert_eq!(stopped_with(&s).await, UNKNOWN_CHANNEL);
    others_still_flow(&h, ChannelId(1)).await;
}

#[tokio::test]
async fn truncated_frame_followed_by_fin_is_an_error() {
    let (_l, h) = hostile().await;
    let mut s = raw_stream(&h, 3, 0, &[100, 1, 2, 3, 4, 5]).await;
    s.finish().unwrap();
    let got = within("recv", h.accepted.recv(ChannelId(3), 1024)).await;
    assert!(matches!(got, Err(ConnectionError::Malformed(_))), "{got:?}");
    others_still_flow(&h, ChannelId(4)).await;
}

#[tokio::test]
async fn second_stream_for_a_channel_is_reset_and_the_first_keeps_working() {
    let (_l, h) = hostile().await;
    let mut first = raw_stream(&h, 4, 0, &frame(b"one")).await;
    assert_eq!(recv(&h, 4).await, Bytes::from_static(b"one"), "recv");
    let second = raw_stream(&h, 4, 0, &frame(b"two")).await;
    let error = within("stream error", h.accepted.next_stream_error()).await;
    assert_eq!(
        error,
        ConnectionError::Malformed(MalformedKind::DuplicateStream)
    );
    assert_eq!(stopped_with(&second).await, DUPLICATE_STREAM);
    first.write_all(&frame(b"three")).await.unwrap();
    assert_eq!(recv(&h, 4).await, Bytes::from_static(b"three"), "recv");
}

#[tokio::test]
async fn a_cancelled_send_resets_its_stream_and_never_delivers_a_cut_frame() {
    let (_l, h) = hostile().await;
    let ch = ChannelId(2);
    // Larger than every window and buffer between the two, with nobody
    // reading: this send cannot complete, so cancelling it always cuts the
    // message.
    let huge = Bytes::from(vec![7u8; 64 << 20]);
    let cancelled =
        tokio::time::timeout(std::time::Duration::from_millis(200), h.conn.send(ch, huge)).await;
    assert!(cancelled.is_err(), "the send could not have completed");
    h.conn.send(ch, Bytes::from_static(b"after")).await.unwrap();
    // The receiver skips the reset stream's partial frame and reads the
    // next generation.
    let got = within("recv", h.accepted.recv(ch, 128 << 20)).await;
    assert_eq!(got.unwrap(), Bytes::from_static(b"after"));
    let _ = CANCELLED;
}

#[tokio::test]
async fn a_flood_of_bad_streams_closes_the_connection() {
    let (_l, h) = hostile().await;
    let mut refused = 0;
    for _ in 0..100 {
        // Stream credit only returns as each bad stream is refused.
        let Ok(mut s) = within("open", h.conn.quinn().open_uni()).await else {
            break;
        };
        if s.write_all(&[200, 0]).await.is_err() {
            break;
        }
        if within("stop", s.stopped()).await.is_err() {
            break;
        }
        refused += 1;
    }
    // The default tolerance is 32 bad streams.
    assert!((32..=33).contains(&refused), "{refused}");
    within("close", h.accepted.closed()).await;
    let reason = h.conn.quinn().close_reason().unwrap();
    assert!(
        matches!(reason, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code == VarInt::from_u32(0x11)),
        "{reason:?}"
    );
}

#[tokio::test]
async fn stream_limit_is_sized_from_the_channel_count() {
    let (_l, h) = hostile().await;
    // Four shared channels: at most 8 streams may be open at once. Open 8
    // that never send a header, then a ninth must wait for credit.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(within("open", h.conn.quinn().open_uni()).await.unwrap());
    }
    for s in &mut held {
        s.write_all(&[1]).await.unwrap(); // channel byte, no generation yet
    }
    let ninth = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        h.conn.quinn().open_uni(),
    )
    .await;
    assert!(ninth.is_err(), "a ninth concurrent stream was allowed");
}

/// Polls `future` once: its output if it is ready without waiting.
fn ready_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test]
async fn a_channel_is_reported_started_once_when_its_first_stream_arrives() {
    let (_l, h) = hostile().await;
    // Nothing sent yet: no channel has started, so the router reads none.
    assert_eq!(ready_now(h.accepted.next_started_channel()), None);

    send(&h, 2, b"first").await;
    let started = within("start", h.accepted.next_started_channel()).await;
    assert_eq!(started, Some(ChannelId(2)));
    assert_eq!(recv(&h, 2).await, Bytes::from_static(b"first"), "first");

    // More on the same stream, and a newer generation of it after a
    // cancelled send: the channel does not start again.
    send(&h, 2, b"second").await;
    let _newer = raw_stream(&h, 2, 7, &frame(b"newer")).await;
    assert_eq!(recv(&h, 2).await, Bytes::from_static(b"second"), "second");
    send(&h, 4, b"other").await;
    let started = within("other start", h.accepted.next_started_channel()).await;
    assert_eq!(started, Some(ChannelId(4)));
    assert_eq!(ready_now(h.accepted.next_started_channel()), None);
}

#[tokio::test]
async fn a_batch_ends_before_a_bad_frame_which_the_next_receive_reports() {
    let (_l, h) = hostile().await;
    // Two good frames, then a length prefix over the limit.
    let mut body = frame(b"one");
    body.extend_from_slice(&frame(b"two"));
    body.extend_from_slice(&[0x80, 0x08]); // 1024 > 100
    let stream = raw_stream(&h, 1, 0, &body).await;
    let mut got = Vec::new();
    let first = within(
        "batch",
        h.accepted.recv_batch(ChannelId(1), 100, 64, &mut got),
    )
    .await;
    assert!(first.is_ok());
    assert_eq!(
        got,
        [Bytes::from_static(b"one"), Bytes::from_static(b"two")]
    );
    let next = within(
        "next",
        h.accepted.recv_batch(ChannelId(1), 100, 64, &mut got),
    )
    .await;
    assert!(
        matches!(
            next,
            Err(ConnectionError::Oversized {
                size: 1024,
                max: 100
            })
        ),
        "{next:?}"
    );
    assert_eq!(got.len(), 2);
    assert_eq!(stopped_with(&stream).await, OVERSIZED);
}

/// The honest side of `h` sends `body` on `channel`.
async fn send(h: &Hostile, channel: u8, body: &'static [u8]) {
    let message = Bytes::from_static(body);
    h.conn.send(ChannelId(channel), message).await.unwrap();
}

/// The next message the listener's side of `h` receives on `channel`.
async fn recv(h: &Hostile, channel: u8) -> Bytes {
    let got = within("a message", h.accepted.recv(ChannelId(channel), 1024)).await;
    got.unwrap()
}

/// FIN inside the header (PROTOCOL.md §6.3): the stream is dropped and
/// reported; there is nothing to stop, the sender has finished it.
#[tokio::test]
async fn fin_inside_the_header_is_dropped_and_reported() {
    let (_l, h) = hostile().await;
    // The channel byte and the first byte of a two-byte generation.
    let mut s = h.conn.quinn().open_uni().await.unwrap();
    s.write_all(&[1, 0x80]).await.unwrap();
    s.finish().unwrap();
    let error = within("stream error", h.accepted.next_stream_error()).await;
    assert_eq!(
        error,
        ConnectionError::Malformed(MalformedKind::StreamHeader)
    );
    others_still_flow(&h, ChannelId(2)).await;
}

/// The stream limit counts open streams (PROTOCOL.md §5.4): it is renewed
/// as streams end, so one channel may be replaced far more often than the
/// eight streams the limit allows at once.
#[tokio::test]
async fn stream_credit_is_renewed_as_streams_end() {
    let (_l, h) = hostile().await;
    for generation in 0..40u8 {
        let mut s = within("open", h.conn.quinn().open_uni()).await.unwrap();
        s.write_all(&[1, generation]).await.unwrap();
        s.write_all(&frame(&[generation])).await.unwrap();
        s.finish().unwrap();
        assert_eq!(recv(&h, 1).await, Bytes::from(vec![generation]));
    }
}
