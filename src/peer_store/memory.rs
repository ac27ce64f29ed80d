//! An in-memory [`PeerStore`] for tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{codec, LoadedPeers, PeerRecord, PeerStore, StoreError};
use crate::identity::NodeId;

/// A [`PeerStore`] that keeps encoded records in memory.
///
/// Clones share the same contents, so a test can hand one clone to a peer
/// manager, drop the manager, and load a new one from another clone as if
/// the process had restarted. Records are stored encoded, exactly as on
/// disk, so the codec is exercised too.
#[derive(Debug, Clone, Default)]
pub struct MemoryPeerStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    records: BTreeMap<Vec<u8>, Vec<u8>>,
    fail_writes: bool,
    /// Writes still to fail before writes succeed again.
    fail_next: usize,
    /// Writes that succeeded.
    writes: usize,
}

impl MemoryPeerStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every update is a single insert or remove), so poisoning is moot.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of stored records.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether the store holds no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores raw bytes under a raw key, bypassing the codec (to test how
    /// corrupt records are handled).
    pub fn insert_raw(&self, key: Vec<u8>, value: Vec<u8>) {
        self.lock().records.insert(key, value);
    }

    /// Makes every later write fail (to test that failures surface).
    pub fn set_fail_writes(&self, fail: bool) {
        self.lock().fail_writes = fail;
    }

    /// Makes the next `n` writes fail, then succeed again (to test that
    /// failed writes are retried and nothing is lost).
    pub fn fail_next_writes(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// Writes that succeeded so far.
    pub fn successful_writes(&self) -> usize {
        self.lock().writes
    }
}

impl PeerStore for MemoryPeerStore {
    fn load(&mut self) -> Result<LoadedPeers, StoreError> {
        let inner = self.lock();
        let mut loaded = LoadedPeers::default();
        for (key, value) in &inner.records {
            match codec::decode(key, value) {
                Ok(record) => loaded.peers.push(record),
                Err(error) => {
                    tracing::warn!(key = hex::encode(key), %error, "skipping corrupt peer record");
                    loaded.corrupt += 1;
                }
            }
        }
        Ok(loaded)
    }

    fn write(&mut self, records: &[PeerRecord], removed: &[NodeId]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.fail_writes {
            return Err(StoreError::Write("injected failure".into()));
        }
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Err(StoreError::Write("injected failure".into()));
        }
        inner.writes += 1;
        for id in removed {
            inner.records.remove(id.as_bytes().as_slice());
        }
        for record in records {
            inner
                .records
                .insert(record.node_id.as_bytes().to_vec(), codec::encode(record));
        }
        Ok(())
    }
}
