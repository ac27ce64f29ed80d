//! The bounded per-peer, per-channel send queue and its full policies.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Which of a peer's send queues have something for its one sender: a
/// push marks its queue and wakes the sender, which then looks at the
/// marked queues only (with 16 channels, scanning them all on every
/// wake-up was the costliest router step of a 1,000-peer broadcast).
#[derive(Debug)]
pub(crate) struct ReadySet {
    words: Vec<AtomicU64>,
    wake: Notify,
}

impl ReadySet {
    /// A set for queues numbered `0..len`.
    pub(crate) fn new(len: usize) -> Self {
        Self {
            words: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            wake: Notify::new(),
        }
    }

    fn mark(&self, index: usize) {
        let bit = 1u64 << (index % 64);
        let before = self.words[index / 64].fetch_or(bit, Ordering::AcqRel);
        // Already marked: the sender has a wake-up coming and has not
        // taken the mark yet.
        if before & bit == 0 {
            self.wake.notify_one();
        }
    }

    /// Moves the marked queue numbers into `out` and clears them.
    pub(crate) fn take(&self, out: &mut Vec<usize>) {
        for (w, word) in self.words.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                out.push(w * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
    }

    /// Resolves after the next mark; register it before [`take`](Self::take)
    /// so no mark is missed.
    pub(crate) fn marked(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }
}

/// A bounded FIFO of encoded messages with one consumer (the peer's
/// sender) and any number of producers.
#[derive(Debug)]
pub(crate) struct SendQueue {
    state: Mutex<State>,
    capacity: usize,
    policy: FullPolicy,
    space: Notify,
    /// The peer's ready set and this queue's number in it.
    ready: Option<(Arc<ReadySet>, usize)>,
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
            space: Notify::new(),
            ready: None,
        }
    }

    /// Marks queue `index` of `ready` whenever a message is queued or the
    /// queue closes.
    pub(crate) fn waking(mut self, ready: Arc<ReadySet>, index: usize) -> Self {
        self.ready = Some((ready, index));
        self
    }

    fn queued(&self) {
        if let Some((ready, index)) = &self.ready {
            ready.mark(*index);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `message`, applying the full policy; with `Wait` this waits for
    /// room. Cancel safe: a cancelled push queued nothing.
    pub(crate) async fn push(&self, message: Bytes) -> Pushed {
        let mut message = match self.try_push(message) {
            Ok(pushed) => return pushed,
            Err(message) => message,
        };
        loop {
            // Registered before looking again, so room made in between is
            // not missed; only a full queue pays for the registration.
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            message = match self.try_push(message) {
                Ok(pushed) => return pushed,
                Err(message) => message,
            };
            space.await;
        }
    }

    /// Queues `message` without waiting: the full policy applies, except
    /// that a full `Wait` queue hands the message back.
    pub(crate) fn try_push(&self, message: Bytes) -> Result<Pushed, Bytes> {
        let mut state = self.lock();
        if state.closed {
            return Ok(Pushed::Closed);
        }
        let pushed = if state.items.len() < self.capacity {
            state.items.push_back(message);
            Pushed::Queued
        } else {
            match self.policy {
                FullPolicy::DropNewest => return Ok(Pushed::DroppedNewest),
                FullPolicy::DropOldest => {
                    state.items.pop_front();
                    state.items.push_back(message);
                    Pushed::DroppedOldest
                }
                FullPolicy::Wait => return Err(message),
            }
        };
        drop(state);
        self.queued();
        Ok(pushed)
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
    /// messages are discarded. Returns how many were.
    pub(crate) fn close(&self) -> usize {
        let mut state = self.lock();
        state.closed = true;
        let discarded = state.items.len();
        state.items.clear();
        drop(state);
        self.space.notify_waiters();
        // The sender learns of it from its next look at this queue.
        self.queued();
        discarded
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

    /// The oldest message, `None` once closed.
    fn pop(q: &SendQueue) -> Option<Bytes> {
        match q.try_pop_batch(1, usize::MAX) {
            Popped::Batch(mut batch) => batch.pop(),
            Popped::Closed => None,
            Popped::Empty => panic!("empty queue"),
        }
    }

    #[tokio::test]
    async fn drop_newest_keeps_the_old_messages() {
        let q = SendQueue::new(2, FullPolicy::DropNewest);
        assert_eq!(q.push(b(1)).await, Pushed::Queued);
        assert_eq!(q.push(b(2)).await, Pushed::Queued);
        assert_eq!(q.push(b(3)).await, Pushed::DroppedNewest);
        assert_eq!(pop(&q), Some(b(1)));
        assert_eq!(pop(&q), Some(b(2)));
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_new_messages() {
        let q = SendQueue::new(2, FullPolicy::DropOldest);
        for n in 1..=3 {
            q.push(b(n)).await;
        }
        assert_eq!(pop(&q), Some(b(2)));
        assert_eq!(pop(&q), Some(b(3)));
    }

    /// A full `Wait` queue of one (holding `b(1)`) and a task blocked
    /// pushing `b(2)` into it.
    async fn full_with_a_waiting_pusher(
    ) -> (std::sync::Arc<SendQueue>, tokio::task::JoinHandle<Pushed>) {
        let q = std::sync::Arc::new(SendQueue::new(1, FullPolicy::Wait));
        q.push(b(1)).await;
        let q2 = q.clone();
        let pusher = tokio::spawn(async move { q2.push(b(2)).await });
        tokio::task::yield_now().await;
        (q, pusher)
    }

    #[tokio::test]
    async fn wait_blocks_until_room_then_queues() {
        let (q, pusher) = full_with_a_waiting_pusher().await;
        assert!(!pusher.is_finished());
        assert_eq!(pop(&q), Some(b(1)));
        assert_eq!(pusher.await.unwrap(), Pushed::Queued);
        assert_eq!(pop(&q), Some(b(2)));
    }

    #[test]
    fn try_push_hands_back_what_a_full_wait_queue_cannot_take() {
        let q = SendQueue::new(1, FullPolicy::Wait);
        assert_eq!(q.try_push(b(1)), Ok(Pushed::Queued));
        assert_eq!(q.try_push(b(2)), Err(b(2)));
        assert_eq!(q.len(), 1);
        let newest = SendQueue::new(1, FullPolicy::DropNewest);
        assert_eq!(newest.try_push(b(1)), Ok(Pushed::Queued));
        assert_eq!(newest.try_push(b(2)), Ok(Pushed::DroppedNewest));
        q.close();
        assert_eq!(q.try_push(b(3)), Ok(Pushed::Closed));
    }

    #[tokio::test]
    async fn close_wakes_waiters_on_both_sides() {
        let (q, pusher) = full_with_a_waiting_pusher().await;
        q.close();
        assert_eq!(pusher.await.unwrap(), Pushed::Closed);
        assert_eq!(pop(&q), None);
        assert_eq!(q.len(), 0);
    }

    #[tokio::test]
    async fn try_pop_batch_takes_what_fits_and_wakes_the_peer_sender() {
        let ready = Arc::new(ReadySet::new(3));
        let q = SendQueue::new(8, FullPolicy::Wait).waking(ready.clone(), 2);
        assert_eq!(q.try_pop_batch(4, 100), Popped::Empty);
        for n in 0..6 {
            q.push(Bytes::from(vec![n; 40])).await;
        }
        // A push marked the queue and left a wake-up for the peer's sender.
        ready.marked().await;
        let mut marked = Vec::new();
        ready.take(&mut marked);
        assert_eq!(marked, [2]);
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
        ready.take(&mut marked);
        assert_eq!(marked, [2, 2], "closing marks the queue too");
        assert_eq!(q.try_pop_batch(4, 100), Popped::Closed);
    }

    #[test]
    fn a_ready_set_hands_out_each_mark_once_across_words() {
        let ready = ReadySet::new(130);
        for i in [129, 0, 64, 0, 3] {
            ready.mark(i);
        }
        let mut marked = Vec::new();
        ready.take(&mut marked);
        assert_eq!(marked, [0, 3, 64, 129]);
        marked.clear();
        ready.take(&mut marked);
        assert!(marked.is_empty());
    }
}
