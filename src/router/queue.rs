//! The bounded per-peer, per-channel send queue and its full policies.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

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
                    self.items.notify_one();
                    return Pushed::Queued;
                }
                match self.policy {
                    FullPolicy::DropNewest => return Pushed::DroppedNewest,
                    FullPolicy::DropOldest => {
                        state.items.pop_front();
                        state.items.push_back(message);
                        self.items.notify_one();
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

    /// Waits for at least one message, then takes every queued one up to
    /// `max_items` and (after the first) `max_bytes`; `None` once closed and
    /// drained. Taking many at once lets the transport write them in one
    /// call.
    pub(crate) async fn pop_batch(&self, max_items: usize, max_bytes: usize) -> Option<Vec<Bytes>> {
        loop {
            let items = self.items.notified();
            tokio::pin!(items);
            items.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(first) = state.items.pop_front() {
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
                    return Some(batch);
                }
                if state.closed {
                    return None;
                }
            }
            items.await;
        }
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

    #[cfg(test)]
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
}
