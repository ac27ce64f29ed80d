//! The bounded per-peer, per-channel send queue and its full policies.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::channel::FullPolicy;

/// What happened to a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// The new message was discarded (queue full, `DropNewest`).
    DroppedNewest,
    /// The oldest queued message was discarded to make room.
    DroppedOldest,
    /// The queue is closed (peer gone).
    Closed,
}

/// A bounded FIFO of encoded messages with one consumer (the peer's send
/// task for this channel) and any number of producers.
#[derive(Debug)]
pub(crate) struct SendQueue {
    state: Mutex<State>,
    capacity: usize,
    policy: FullPolicy,
    items: Notify,
    space: Notify,
    /// Shared by all of a peer's queues: wakes the peer's one sender.
    wake: Option<Arc<Notify>>,
}

/// What [`SendQueue::try_pop_batch`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Popped {
    Batch(Vec<Bytes>),
    Empty,
    Closed,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Bytes>,
    closed: bool,
}

impl SendQueue {
    pub(crate) fn new(capacity: usize, policy: FullPolicy) -> Self {
        Self {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
            policy,
            items: Notify::new(),
            space: Notify::new(),
            wake: None,
        }
    }

    /// Also wakes `wake` whenever a message is queued.
    pub(crate) fn waking(mut self, wake: Arc<Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    fn queued(&self) {
        self.items.notify_one();
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `message`, applying the full policy; with `Wait` this waits for
    /// room. Cancel safe: a cancelled push queued nothing.
    pub(crate) async fn push(&self, message: Bytes) -> Pushed {
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut state = self.lock();
                if state.closed {
                    return Pushed::Closed;
                }
                if state.items.len() < self.capacity {
                    state.items.push_back(message);
                    self.queued();
                    return Pushed::Queued;
                }
                match self.policy {
                    FullPolicy::DropNewest => return Pushed::DroppedNewest,
                    FullPolicy::DropOldest => {
                        state.items.pop_front();
                        state.items.push_back(message);
                        self.queued();
                        return Pushed::DroppedOldest;
                    }
                    FullPolicy::Wait => {}
                }
            }
            space.await;
        }
    }

    /// The next message, or `None` once closed and drained.
    #[cfg(test)]
    pub(crate) async fn pop(&self) -> Option<Bytes> {
        loop {
            let items = self.items.notified();
            tokio::pin!(items);
            items.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(message) = state.items.pop_front() {
                    self.space.notify_one();
                    return Some(message);
                }
                if state.closed {
                    return None;
                }
            }
            items.await;
        }
    }

    /// Takes every queued message up to `max_items` and (after the first)
    /// `max_bytes`, without waiting.
    pub(crate) fn try_pop_batch(&self, max_items: usize, max_bytes: usize) -> Popped {
        let mut state = self.lock();
        let Some(first) = state.items.pop_front() else {
            return if state.closed {
                Popped::Closed
            } else {
                Popped::Empty
            };
        };
        let mut bytes = first.len();
        let mut batch = vec![first];
        while batch.len() < max_items {
            match state.items.front() {
                Some(next) if bytes + next.len() <= max_bytes => {
                    bytes += next.len();
                    batch.extend(state.items.pop_front());
                }
                _ => break,
            }
        }
        drop(state);
        // One waiting producer per freed slot.
        for _ in 0..batch.len() {
            self.space.notify_one();
        }
        Popped::Batch(batch)
    }

    /// Closes the queue: pending and future pushes return `Closed`; queued
    /// messages are discarded.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.items.clear();
        drop(state);
        self.items.notify_waiters();
        self.space.notify_waiters();
    }

    /// Messages waiting (for the queue-depth gauge).
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> Bytes {
        Bytes::copy_from_slice(&[n])
    }

    #[tokio::test]
    async fn drop_newest_keeps_the_old_messages() {
        let q = SendQueue::new(2, FullPolicy::DropNewest);
        assert_eq!(q.push(b(1)).await, Pushed::Queued);
        assert_eq!(q.push(b(2)).await, Pushed::Queued);
        assert_eq!(q.push(b(3)).await, Pushed::DroppedNewest);
        assert_eq!(q.pop().await, Some(b(1)));
        assert_eq!(q.pop().await, Some(b(2)));
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_new_messages() {
        let q = SendQueue::new(2, FullPolicy::DropOldest);
        for n in 1..=3 {
            q.push(b(n)).await;
        }
        assert_eq!(q.pop().await, Some(b(2)));
        assert_eq!(q.pop().await, Some(b(3)));
    }

    #[tokio::test]
    async fn wait_blocks_until_room_then_queues() {
        let q = std::sync::Arc::new(SendQueue::new(1, FullPolicy::Wait));
        q.push(b(1)).await;
        let q2 = q.clone();
        let pusher = tokio::spawn(async move { q2.push(b(2)).await });
        tokio::task::yield_now().await;
        assert!(!pusher.is_finished());
        assert_eq!(q.pop().await, Some(b(1)));
        assert_eq!(pusher.await.unwrap(), Pushed::Queued);
        assert_eq!(q.pop().await, Some(b(2)));
    }

    #[tokio::test]
    async fn close_wakes_waiters_on_both_sides() {
        let q = std::sync::Arc::new(SendQueue::new(1, FullPolicy::Wait));
        q.push(b(1)).await;
        let q2 = q.clone();
        let pusher = tokio::spawn(async move { q2.push(b(2)).await });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(pusher.await.unwrap(), Pushed::Closed);
        assert_eq!(q.pop().await, None);
        assert_eq!(q.len(), 0);
    }

    #[tokio::test]
    async fn try_pop_batch_takes_what_fits_and_wakes_the_peer_sender() {
        let wake = Arc::new(Notify::new());
        let q = SendQueue::new(8, FullPolicy::Wait).waking(wake.clone());
        assert_eq!(q.try_pop_batch(4, 100), Popped::Empty);
        for n in 0..6 {
            q.push(Bytes::from(vec![n; 40])).await;
        }
        // A push left a wake-up for the peer's sender.
        wake.notified().await;
        // Three fit in 100 bytes? The first always goes; then 40 + 40 = 80,
        // and a third would make 120.
        let Popped::Batch(batch) = q.try_pop_batch(4, 100) else {
            panic!("batch")
        };
        assert_eq!(batch.iter().map(|b| b[0]).collect::<Vec<_>>(), [0, 1]);
        let Popped::Batch(batch) = q.try_pop_batch(3, 1 << 20) else {
            panic!("batch")
        };
        assert_eq!(batch.len(), 3);
        q.close();
        assert_eq!(q.try_pop_batch(4, 100), Popped::Closed);
    }
}
