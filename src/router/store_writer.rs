//! Persistence off the actor: the peer manager hands out batches of
//! changed records, the actor gives them to this writer, and the writer
//! stores them on a blocking thread. Batches coalesce while a write runs
//! (the newest record of a peer wins), so the pending set holds at most
//! one entry per peer; a failed write is merged back and retried with a
//! growing delay, so nothing is lost while the store recovers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::identity::NodeId;
use crate::peer_store::{PeerRecord, PeerStore, StoreBatch};

/// The first retry delay after a failed write; it doubles up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Attempts at shutdown before the pending changes are given up (logged).
const ATTEMPTS_AT_CLOSE: u32 = 3;
/// Most deletions kept while writes fail: a deletion of a peer that was
/// never stored costs nothing to forget, and a store that never recovers
/// must not make this set grow without bound.
const MAX_PENDING_REMOVALS: usize = 65_536;

/// Changes not yet written, coalesced by peer.
#[derive(Debug, Default)]
struct Pending {
    records: HashMap<NodeId, PeerRecord>,
    removed: HashSet<NodeId>,
}

impl Pending {
    /// Adds a newer batch: its entries replace older ones of the same peer.
    fn merge(&mut self, batch: StoreBatch) {
        for id in batch.removed {
            self.records.remove(&id);
            if self.removed.len() < MAX_PENDING_REMOVALS {
                self.removed.insert(id);
            }
        }
        for record in batch.records {
            self.removed.remove(&record.node_id);
            self.records.insert(record.node_id, record);
        }
    }

    /// Puts back a batch that failed, under anything newer that arrived
    /// meanwhile.
    fn restore(&mut self, failed: StoreBatch) {
        for record in failed.records {
            let id = record.node_id;
            if !self.records.contains_key(&id) && !self.removed.contains(&id) {
                self.records.insert(id, record);
            }
        }
        for id in failed.removed {
            if !self.records.contains_key(&id) && self.removed.len() < MAX_PENDING_REMOVALS {
                self.removed.insert(id);
            }
        }
    }

    fn take(&mut self) -> Option<StoreBatch> {
        if self.records.is_empty() && self.removed.is_empty() {
            return None;
        }
        Some(StoreBatch {
            records: self.records.drain().map(|(_, r)| r).collect(),
            removed: self.removed.drain().collect(),
        })
    }
}

/// The actor's side of the writer.
pub(super) struct StoreWriter {
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
    closing: CancellationToken,
    task: Option<JoinHandle<()>>,
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // Every update is a whole merge or take under the lock.
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

impl StoreWriter {
    /// Starts the writer task for `store`.
    pub(super) fn spawn(store: Box<dyn PeerStore>) -> Self {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let wake = Arc::new(Notify::new());
        let closing = CancellationToken::new();
        let task = tokio::spawn(write_loop(
            store,
            pending.clone(),
            wake.clone(),
            closing.clone(),
        ));
        Self {
            pending,
            wake,
            closing,
            task: Some(task),
        }
    }

    /// Queues `batch`; never waits on the disk.
    pub(super) fn submit(&self, batch: StoreBatch) {
        lock(&self.pending).merge(batch);
        self.wake.notify_one();
    }

    /// Writes what is pending (a few attempts) and stops.
    pub(super) async fn close(&mut self) {
        self.closing.cancel();
        self.wake.notify_one();
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                tracing::error!(%error, "peer store writer failed");
            }
        }
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        // Without `close` (the actor panicked): write what is pending, then
        // end, rather than wait forever.
        self.closing.cancel();
        self.wake.notify_one();
    }
}

async fn write_loop(
    store: Box<dyn PeerStore>,
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
    closing: CancellationToken,
) {
    let mut store = Some(store);
    let mut retry = FIRST_RETRY;
    let mut failed_at_close = 0;
    loop {
        let Some(batch) = lock(&pending).take() else {
            if closing.is_cancelled() {
                return;
            }
            // A notify_one before this point leaves a permit: no batch is
            // missed.
            wake.notified().await;
            continue;
        };
        let Some(mut s) = store.take() else {
            return;
        };
        let written = tokio::task::spawn_blocking(move || {
            let result = s.write(&batch.records, &batch.removed);
            (s, batch, result)
        })
        .await;
        let (s, batch, result) = match written {
            Ok(done) => done,
            Err(error) => {
                // The store panicked: it cannot be trusted again.
                tracing::error!(%error, "peer store write panicked; persistence stopped");
                return;
            }
        };
        store = Some(s);
        match result {
            Ok(()) => retry = FIRST_RETRY,
            Err(error) => {
                let count = batch.records.len() + batch.removed.len();
                lock(&pending).restore(batch);
                if closing.is_cancelled() {
                    failed_at_close += 1;
                    if failed_at_close >= ATTEMPTS_AT_CLOSE {
                        tracing::error!(%error, count, "peer store write failed at shutdown; changes lost");
                        return;
                    }
                }
                tracing::warn!(%error, count, ?retry, "peer store write failed; will retry");
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    // At shutdown, retry at once (a bounded number of times).
                    () = closing.cancelled(), if failed_at_close == 0 => {}
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8, connected_secs: u64) -> PeerRecord {
        let mut r = PeerRecord::new(NodeId::from_bytes([n; 20]));
        r.last_connected = Some(std::time::UNIX_EPOCH + Duration::from_secs(connected_secs));
        r
    }

    #[test]
    fn newer_entries_win_and_a_failed_batch_never_overwrites_them() {
        let mut p = Pending::default();
        p.merge(StoreBatch {
            records: vec![record(1, 1), record(2, 1)],
            removed: vec![NodeId::from_bytes([3; 20])],
        });
        let first = p.take().unwrap();
        // While `first` is being written, peer 1 changes and 2 is removed.
        p.merge(StoreBatch {
            records: vec![record(1, 2)],
            removed: vec![NodeId::from_bytes([2; 20])],
        });
        p.restore(first);
        let again = p.take().unwrap();
        let mut ids: Vec<_> = again
            .records
            .iter()
            .map(|r| (r.node_id, r.last_connected))
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            vec![(NodeId::from_bytes([1; 20]), record(1, 2).last_connected)]
        );
        let mut removed = again.removed.clone();
        removed.sort();
        assert_eq!(
            removed,
            vec![NodeId::from_bytes([2; 20]), NodeId::from_bytes([3; 20])]
        );
        assert!(p.take().is_none());
    }
}
