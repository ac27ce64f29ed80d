//! Persistence as an output: the changes since the last batch, for the
//! driver to write (or `flush` to a store the manager owns).

use super::peer::Peer;
use super::PeerManager;
use crate::peer_store::{StoreBatch, StoreError};

impl PeerManager {
    /// Writes every change since the last successful flush to the store, in
    /// one atomic batch. On error nothing is lost: the changes stay pending
    /// and the next flush retries them.
    ///
    /// Without a store of its own ([`from_loaded`](Self::from_loaded)) this
    /// writes nothing: take the changes with
    /// [`take_store_batch`](Self::take_store_batch).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.dirty.is_empty() && self.removed.is_empty() {
            return Ok(());
        }
        let batch = self.store_batch();
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        store.write(&batch.records, &batch.removed)?;
        self.dirty.clear();
        self.removed.clear();
        Ok(())
    }

    /// Every change since the last batch was taken: records of peers that
    /// changed, ids of peers removed. `None` when nothing changed. The
    /// caller must write it (retrying on failure); the manager forgets it.
    pub fn take_store_batch(&mut self) -> Option<StoreBatch> {
        if self.dirty.is_empty() && self.removed.is_empty() {
            return None;
        }
        let batch = self.store_batch();
        self.dirty.clear();
        self.removed.clear();
        Some(batch)
    }

    pub(super) fn store_batch(&self) -> StoreBatch {
        let records = self
            .dirty
            .iter()
            .filter_map(|id| self.peers.get(id))
            .map(Peer::to_record)
            .collect();
        // A peer removed and known again is written, not deleted.
        let removed = self
            .removed
            .iter()
            .filter(|id| !self.peers.contains_key(id))
            .copied()
            .collect();
        StoreBatch { records, removed }
    }
}
