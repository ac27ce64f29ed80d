//! Typed channel handles given to reactors.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use super::queue::Pushed;
use super::shared::Shared;
use super::stats::ChannelCounters;
use super::{Command, PeerError};
use crate::channel::ChannelId;
use crate::identity::NodeId;

/// A message and the peer it comes from (inbound) or goes to (outbound).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<M> {
    /// The peer.
    pub peer: NodeId,
    /// The message.
    pub message: M,
}

/// Why a send failed. Routing misses (unknown peer, self, a peer without
/// the channel) are not errors: they are dropped and counted in
/// [`RouterStats`](super::RouterStats).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The encoded message exceeds the channel's maximum size.
    #[error("message of {size} bytes exceeds the channel maximum {max}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The router has shut down.
    #[error("router stopped")]
    RouterStopped,
}

/// The sending half of a channel. Cheap to clone.
pub struct ChannelSender<M> {
    id: ChannelId,
    max_message_size: usize,
    shared: Arc<Shared>,
    counters: Arc<ChannelCounters>,
    _message: PhantomData<fn(M)>,
}

impl<M> Clone for ChannelSender<M> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            max_message_size: self.max_message_size,
            shared: self.shared.clone(),
            counters: self.counters.clone(),
            _message: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for ChannelSender<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelSender")
            .field("id", &self.id)
            .finish()
    }
}

impl<M: prost::Message> ChannelSender<M> {
    pub(crate) fn new(
        id: ChannelId,
        max_message_size: usize,
        shared: Arc<Shared>,
        counters: Arc<ChannelCounters>,
    ) -> Self {
        Self {
            id,
            max_message_size,
            shared,
            counters,
            _message: PhantomData,
        }
    }

    /// The channel's id.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    fn encode(&self, message: &M) -> Result<Bytes, SendError> {
        let size = message.encoded_len();
        if size > self.max_message_size {
            return Err(SendError::TooLarge {
                size,
                max: self.max_message_size,
            });
        }
        Ok(Bytes::from(message.encode_to_vec()))
    }

    fn running(&self) -> Result<(), SendError> {
        if self.shared.shutting_down() {
            return Err(SendError::RouterStopped);
        }
        Ok(())
    }

    /// Sends to `envelope.peer`. Waits while that peer's queue for this
    /// channel is full if the channel's policy is `Wait`; otherwise drops per
    /// the policy. Messages to one peer on one channel arrive in the order
    /// sent. Fails with [`SendError::RouterStopped`] once shutdown has
    /// begun. Cancel safe.
    pub async fn send(&self, envelope: Envelope<M>) -> Result<(), SendError> {
        self.running()?;
        let bytes = self.encode(&envelope.message)?;
        let stats = &self.shared.stats;
        // Dropped sends return without waiting; the budget check keeps a
        // caller sending in a loop from monopolising its worker thread.
        if envelope.peer == self.shared.self_id {
            stats.bump(&stats.dropped_self);
            ChannelCounters::add(&self.counters.dropped_self, 1);
            tokio::task::consume_budget().await;
            return Ok(());
        }
        let Some(route) = self.shared.route(&envelope.peer) else {
            stats.bump(&stats.dropped_unknown_peer);
            ChannelCounters::add(&self.counters.dropped_unknown_peer, 1);
            tokio::task::consume_budget().await;
            return Ok(());
        };
        let Some(queue) = route.queue(self.id) else {
            stats.bump(&stats.dropped_no_channel);
            ChannelCounters::add(&self.counters.dropped_no_channel, 1);
            tokio::task::consume_budget().await;
            return Ok(());
        };
        // Usually there is room: no clone of the queue, no wait.
        let bytes = match queue.try_push(bytes) {
            Ok(pushed) => return self.count(pushed),
            Err(bytes) => bytes,
        };
        let queue = queue.clone();
        drop(route);
        self.count(queue.push(bytes).await)
    }

    /// Sends to every connected peer that has this channel. The message is
    /// encoded once. Peers with room get it at once; the call then waits
    /// (with the `Wait` policy) for the others concurrently, so a slow peer
    /// never delays delivery to the rest. Fails with
    /// [`SendError::RouterStopped`] once shutdown has begun.
    pub async fn broadcast(&self, message: M) -> Result<(), SendError> {
        self.running()?;
        let bytes = self.encode(&message)?;
        let queues: Vec<_> = self
            .shared
            .routes()
            .into_iter()
            .filter_map(|(_, route)| route.queue(self.id).cloned())
            .collect();
        // Most queues have room: those take the message at once, and only
        // full `Wait` queues cost a future.
        let mut waiting = Vec::new();
        let mut result = Ok(());
        for queue in &queues {
            match queue.try_push(bytes.clone()) {
                Ok(pushed) => result = result.and(self.count(pushed)),
                Err(message) => waiting.push(queue.push(message)),
            }
        }
        for pushed in futures::future::join_all(waiting).await {
            result = result.and(self.count(pushed));
        }
        result
    }

    /// Counts what became of a push; a queue closed by shutdown is an
    /// error, one closed because its peer left is a counted drop.
    fn count(&self, pushed: Pushed) -> Result<(), SendError> {
        match pushed {
            Pushed::Queued => {}
            Pushed::DroppedNewest | Pushed::DroppedOldest => {
                self.shared.stats.bump(&self.shared.stats.dropped_full);
                ChannelCounters::add(&self.counters.dropped_full, 1);
            }
            // The peer left while we waited.
            Pushed::Closed => {
                self.shared
                    .stats
                    .bump(&self.shared.stats.dropped_unknown_peer);
                ChannelCounters::add(&self.counters.dropped_unknown_peer, 1);
                self.running()?;
            }
        }
        Ok(())
    }

    /// Reports a peer's misbehaviour to the router.
    pub async fn report(&self, error: PeerError) -> Result<(), SendError> {
        self.shared
            .tell(Command::Report(error))
            .await
            .map_err(|_| SendError::RouterStopped)
    }
}

/// The receiving half of a channel. Clones share one stream of messages:
/// each message goes to exactly one of them.
pub struct ChannelReceiver<M> {
    id: ChannelId,
    rx: Arc<Mutex<mpsc::Receiver<Envelope<M>>>>,
    /// The router's "no peer task is left" token.
    stopped: CancellationToken,
}

impl<M> Clone for ChannelReceiver<M> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            rx: self.rx.clone(),
            stopped: self.stopped.clone(),
        }
    }
}

impl<M> std::fmt::Debug for ChannelReceiver<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelReceiver")
            .field("id", &self.id)
            .finish()
    }
}

impl<M> ChannelReceiver<M> {
    pub(crate) fn new(
        id: ChannelId,
        rx: mpsc::Receiver<Envelope<M>>,
        stopped: CancellationToken,
    ) -> Self {
        Self {
            id,
            rx: Arc::new(Mutex::new(rx)),
            stopped,
        }
    }

    /// The next inbound message. Once the router has stopped (no peer task
    /// is left), the messages still buffered are returned, then `None`.
    /// Cancel safe.
    pub async fn recv(&self) -> Option<Envelope<M>> {
        // A reactor that keeps up finds a message waiting: take it without
        // the wait's machinery (the cancellation future, a queued lock).
        if let Some(message) = self.try_recv() {
            return Some(message);
        }
        let mut rx = self.rx.lock().await;
        tokio::select! {
            // Buffered messages first, even after the stop.
            biased;
            message = rx.recv() => message,
            () = self.stopped.cancelled() => rx.try_recv().ok(),
        }
    }

    /// The next inbound message if one is waiting.
    pub fn try_recv(&self) -> Option<Envelope<M>> {
        self.rx.try_lock().ok()?.try_recv().ok()
    }
}

/// A typed channel: send to peers, receive from them, report misbehaviour.
/// [`split`](Self::split) gives halves that can be cloned and moved to
/// different tasks; clones of the whole share both.
#[derive(Debug)]
pub struct Channel<M> {
    sender: ChannelSender<M>,
    receiver: ChannelReceiver<M>,
}

/// Lets code that sends take either a [`Channel`] or its sender half.
impl<M> AsRef<ChannelSender<M>> for Channel<M> {
    fn as_ref(&self) -> &ChannelSender<M> {
        &self.sender
    }
}

impl<M> AsRef<ChannelSender<M>> for ChannelSender<M> {
    fn as_ref(&self) -> &ChannelSender<M> {
        self
    }
}

impl<M> Clone for Channel<M> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            receiver: self.receiver.clone(),
        }
    }
}

impl<M: prost::Message> Channel<M> {
    pub(crate) fn new(sender: ChannelSender<M>, receiver: ChannelReceiver<M>) -> Self {
        Self { sender, receiver }
    }

    /// The channel's id.
    pub fn id(&self) -> ChannelId {
        self.sender.id
    }

    /// See [`ChannelSender::send`].
    pub async fn send(&self, envelope: Envelope<M>) -> Result<(), SendError> {
        self.sender.send(envelope).await
    }

    /// See [`ChannelSender::broadcast`].
    pub async fn broadcast(&self, message: M) -> Result<(), SendError> {
        self.sender.broadcast(message).await
    }

    /// See [`ChannelReceiver::recv`].
    pub async fn recv(&self) -> Option<Envelope<M>> {
        self.receiver.recv().await
    }

    /// See [`ChannelReceiver::try_recv`].
    pub fn try_recv(&self) -> Option<Envelope<M>> {
        self.receiver.try_recv()
    }

    /// See [`ChannelSender::report`].
    pub async fn report(&self, error: PeerError) -> Result<(), SendError> {
        self.sender.report(error).await
    }

    /// The two halves.
    pub fn split(self) -> (ChannelSender<M>, ChannelReceiver<M>) {
        (self.sender, self.receiver)
    }
}
