//! One task per connected peer: it owns the connection and, in its own
//! `JoinSet`, one sender for all channels (a transport send per channel
//! with queued messages, so a stalled channel holds up only itself) and one
//! receive loop per shared channel the peer has started sending on.
//! Receiving stays a task per channel: in
//! one task, decoding a bulk channel's large messages delayed a small
//! channel's (hol p99 395 → 589 µs when tried).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::queue::{Popped, ReadySet, SendQueue};
use super::shared::{Deliver, DeliverError, Delivery, Shared};
use super::stats::ChannelCounters;
use super::{Command, PeerError, PeerErrorKind};
use crate::channel::ChannelId;
use crate::identity::NodeId;
use crate::transport::{Admission, CloseReason, Connection, ConnectionError};

/// Most messages handed to the transport in one call.
const SEND_BATCH: usize = 64;
/// Most bytes in one batch (a single larger message still goes alone).
const SEND_BATCH_BYTES: usize = 256 * 1024;

/// Most messages taken from the transport in one receive call: those
/// already buffered, so a burst of small messages costs one call, not one
/// each.
const RECV_BATCH: usize = 64;

/// How long the receive loops of a connection that ended by itself may
/// take to hand on what it had delivered.
const DRAIN_ON_CLOSE: Duration = Duration::from_secs(1);

/// One channel as the peer task serves it.
pub(crate) struct PeerChannel {
    pub(crate) id: ChannelId,
    pub(crate) queue: Arc<SendQueue>,
    pub(crate) max_message_size: usize,
    pub(crate) deliver: Deliver,
    pub(crate) counters: Arc<ChannelCounters>,
}

/// Sends every queued message of every channel: waits for a queue to be
/// marked in `ready`, starts one transport send per marked channel that has
/// messages and none in flight, and takes up each channel again as its
/// send completes. Returns why it stopped.
async fn send_all(
    conn: Arc<dyn Connection>,
    queues: Vec<(ChannelId, Arc<SendQueue>, Arc<ChannelCounters>)>,
    ready: Arc<ReadySet>,
) -> String {
    let mut in_flight = FuturesUnordered::new();
    let mut busy = vec![false; queues.len()];
    let mut marked = Vec::with_capacity(queues.len());
    loop {
        let woken = ready.marked();
        tokio::pin!(woken);
        // Registered before the marks are taken: no push is missed.
        woken.as_mut().enable();
        ready.take(&mut marked);
        for i in marked.drain(..) {
            // A busy channel is looked at again when its send completes.
            let Some((id, queue, counters)) = queues.get(i).filter(|_| !busy[i]) else {
                continue;
            };
            match queue.try_pop_batch(SEND_BATCH, SEND_BATCH_BYTES) {
                Popped::Batch(mut batch) => {
                    busy[i] = true;
                    // Counted when handed over: a failed send ends the
                    // connection, and its messages are lost either way.
                    let bytes: usize = batch.iter().map(|m| m.len()).sum();
                    ChannelCounters::add(&counters.sent_messages, batch.len() as u64);
                    ChannelCounters::add(&counters.sent_bytes, bytes as u64);
                    let (conn, id) = (conn.clone(), *id);
                    in_flight.push(async move {
                        // Whatever queued up while the last write ran goes
                        // out in one transport call.
                        let sent = if batch.len() == 1 {
                            conn.send(id, batch.swap_remove(0)).await
                        } else {
                            conn.send_batch(id, batch).await
                        };
                        (i, id, sent)
                    });
                }
                Popped::Empty => {}
                Popped::Closed => return "send queue closed".to_owned(),
            }
        }
        tokio::select! {
            Some((i, id, sent)) = in_flight.next(), if !in_flight.is_empty() => {
                busy[i] = false;
                // More may have queued during the send.
                marked.push(i);
                match sent {
                    Ok(()) => {}
                    // The peer refused one stream; the channel continues
                    // on a new one.
                    Err(e) if e.is_stream_error() => {
                        tracing::debug!(channel = %id, error = %e, "send: stream error");
                    }
                    Err(e) => return format!("send on channel {id}: {e}"),
                }
            }
            () = &mut woken => {}
        }
    }
}

/// How a peer task ended.
#[derive(Debug)]
pub(crate) struct PeerExit {
    pub(crate) peer: NodeId,
    pub(crate) conn_id: u64,
    pub(crate) reason: String,
}

pub(crate) struct PeerTask {
    pub(crate) peer: NodeId,
    /// Marks the peer's send queues that have messages (numbered as
    /// `channels`).
    pub(crate) ready: Arc<ReadySet>,
    pub(crate) conn_id: u64,
    pub(crate) conn: Arc<dyn Connection>,
    pub(crate) channels: Vec<PeerChannel>,
    /// Accepting side: the admission to send before traffic flows
    /// (accepted, or a visit).
    pub(crate) admission: Option<Admission>,
    pub(crate) cancel: CancellationToken,
    /// Why the router dropped the connection, once it has.
    pub(crate) close_reason: Arc<OnceLock<CloseReason>>,
    /// The router's own token: cancelled means the node shuts down.
    pub(crate) router_cancel: CancellationToken,
    pub(crate) shared: Arc<Shared>,
}

impl PeerTask {
    pub(crate) async fn run(self) -> PeerExit {
        let span = tracing::debug_span!("peer", peer = %self.peer, conn = self.conn_id);
        let (peer, conn_id) = (self.peer, self.conn_id);
        let reason = self.serve().instrument(span).await;
        PeerExit {
            peer,
            conn_id,
            reason,
        }
    }

    async fn serve(self) -> String {
        if let Some(admission) = self.admission {
            let sent = tokio::select! {
                () = self.cancel.cancelled() => Err(ConnectionError::Closed),
                r = self.conn.send_admission(admission) => r,
            };
            if let Err(e) = sent {
                self.conn.close(CloseReason::Normal).await;
                return format!("sending admission: {e}");
            }
        }
        #[cfg(feature = "test-utils")]
        self.shared.faults.peer_task();
        let mut loops = JoinSet::new();
        // One sender for all channels: idle channels cost no task, and a
        // channel waiting on flow control never holds up the others.
        let queues = self
            .channels
            .iter()
            .map(|c| (c.id, c.queue.clone(), c.counters.clone()))
            .collect();
        loops.spawn(
            send_all(self.conn.clone(), queues, self.ready.clone())
                .instrument(tracing::trace_span!("send")),
        );
        // Misbehaviour on streams no channel loop reads (e.g. an unknown
        // channel): reported like a bad message, the connection stays.
        let (conn, peer, shared) = (self.conn.clone(), self.peer, self.shared.clone());
        loops.spawn(async move {
            loop {
                let e = conn.next_stream_error().await;
                shared.stats.bump(&shared.stats.stream_errors);
                let kind = PeerErrorKind::Stream {
                    channel: None,
                    error: e,
                };
                report(&shared, PeerError::minor(peer, kind)).await;
            }
        });
        // A channel is read once the peer starts it: an idle channel of an
        // idle peer costs no task (about 2 kB each, with 16 channels the
        // bulk of a connection's memory).
        let mut reading = vec![false; self.channels.len()];
        let mut unread = self.channels.len();
        // Apart from `loops`: when the connection ends by itself, these may
        // still hold what it delivered.
        let mut receivers = JoinSet::new();
        let (reason, close) = loop {
            tokio::select! {
                () = self.cancel.cancelled() => {
                    // Tell the peer whether we are leaving or just dropping it.
                    let close = if self.router_cancel.is_cancelled() {
                        CloseReason::Shutdown
                    } else {
                        self.close_reason.get().copied().unwrap_or(CloseReason::Normal)
                    };
                    break ("closed by router".to_owned(), close);
                }
                () = self.conn.closed() => {
                    break ("connection closed".to_owned(), CloseReason::Normal);
                }
                Some(ended) = loops.join_next() => break (
                    ended.unwrap_or_else(|e| format!("channel task failed: {e}")),
                    CloseReason::Normal,
                ),
                Some(ended) = receivers.join_next() => break (
                    ended.unwrap_or_else(|e| format!("channel task failed: {e}")),
                    CloseReason::Normal,
                ),
                started = self.conn.next_started_channel(), if unread > 0 => {
                    for (i, channel) in self.channels.iter().enumerate() {
                        let wanted = started.is_none_or(|id| id == channel.id);
                        if wanted && !reading[i] {
                            reading[i] = true;
                            unread -= 1;
                            receivers.spawn(self.receive(channel));
                        }
                    }
                }
            }
        };
        for channel in &self.channels {
            // What the peer will never get is counted, not lost silently.
            let dropped = channel.queue.close() as u64;
            if dropped > 0 {
                ChannelCounters::add(&channel.counters.dropped_disconnected, dropped);
                let stats = &self.shared.stats;
                stats.add(&stats.dropped_disconnected, dropped);
            }
        }
        if !self.cancel.is_cancelled() {
            // The connection ended by itself: what it received before that
            // still reaches the reactors (a CometBFT seed answers and hangs
            // up at once), as each receive loop drains its channel and
            // meets the end. Bounded, for a reactor that reads nothing.
            let drained = async { while receivers.join_next().await.is_some() {} };
            let _ = tokio::time::timeout(DRAIN_ON_CLOSE, drained).await;
        }
        receivers.shutdown().await;
        loops.shutdown().await;
        self.conn.close(close).await;
        tracing::debug!(%reason, "peer task ended");
        reason
    }

    /// The receive loop of one channel, in its span.
    fn receive(&self, channel: &PeerChannel) -> impl std::future::Future<Output = String> {
        let id = channel.id;
        receive_loop(
            self.peer,
            self.conn.clone(),
            id,
            channel.max_message_size,
            channel.deliver.clone(),
            channel.counters.clone(),
            self.shared.clone(),
        )
        .instrument(tracing::trace_span!("recv", channel = %id))
    }
}

async fn receive_loop(
    peer: NodeId,
    conn: Arc<dyn Connection>,
    channel: ChannelId,
    max_size: usize,
    deliver: Deliver,
    counters: Arc<ChannelCounters>,
    shared: Arc<Shared>,
) -> String {
    // Grows with use: an idle channel keeps no buffer.
    let mut batch = Vec::new();
    loop {
        match conn
            .recv_batch(channel, max_size, RECV_BATCH, &mut batch)
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_stream_error() => {
                shared.stats.bump(&shared.stats.stream_errors);
                let kind = PeerErrorKind::Stream {
                    channel: Some(channel),
                    error: e,
                };
                report(&shared, PeerError::minor(peer, kind)).await;
                continue;
            }
            Err(e @ ConnectionError::Protocol(_)) => {
                let exit = format!("receive on channel {channel}: {e}");
                report(&shared, PeerError::fatal(peer, PeerErrorKind::Protocol(e))).await;
                return exit;
            }
            Err(e) => return format!("receive on channel {channel}: {e}"),
        }
        let bytes: usize = batch.iter().map(|m| m.len()).sum();
        ChannelCounters::add(&counters.received_messages, batch.len() as u64);
        ChannelCounters::add(&counters.received_bytes, bytes as u64);
        for message in batch.drain(..) {
            let delivered = match deliver(peer, message) {
                Delivery::Done(result) => result,
                Delivery::Waiting(wait) => wait.await,
            };
            match delivered {
                Ok(()) => {}
                Err(DeliverError::Decode(e)) => {
                    shared.stats.bump(&shared.stats.decode_failures);
                    ChannelCounters::add(&counters.decode_failures, 1);
                    let kind = PeerErrorKind::Undecodable { channel, error: e };
                    report(&shared, PeerError::minor(peer, kind)).await;
                }
                Err(DeliverError::ReceiverGone) => {
                    shared.stats.bump(&shared.stats.dropped_no_receiver);
                    ChannelCounters::add(&counters.dropped_no_receiver, 1);
                }
            }
        }
    }
}

async fn report(shared: &Shared, error: PeerError) {
    // Logged by the actor, within the peer's budget of log lines.
    // The mailbox is bounded; waiting here only slows this peer's channel.
    // A stopped router needs no report.
    let _ = shared.tell(Command::Report(error)).await;
}
