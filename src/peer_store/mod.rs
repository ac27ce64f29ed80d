//! Persistence for what the peer manager knows about peers.
//!
//! The peer manager keeps its state in memory and hands its changes out as
//! [`StoreBatch`]es; the router writes them through a [`PeerStore`] on a
//! blocking thread (a manager that owns its store writes them in
//! [`PeerManager::flush`](crate::PeerManager::flush)). Two stores ship: an
//! in-memory one for tests ([`MemoryPeerStore`]) and an embedded database
//! ([`RedbPeerStore`]), one file in the node's data directory. Implement
//! [`PeerStore`] for another.

pub(crate) mod codec;
mod memory;
#[cfg(feature = "redb")]
mod redb_store;

use std::time::SystemTime;

pub use memory::MemoryPeerStore;
#[cfg(feature = "redb")]
pub use redb_store::RedbPeerStore;

use crate::address::PeerAddress;
use crate::identity::NodeId;

/// What is persisted about one address of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AddressRecord {
    /// The address.
    pub address: PeerAddress,
    /// When a dial to it last succeeded.
    pub last_dial_success: Option<SystemTime>,
    /// When a dial to it last failed.
    pub last_dial_failure: Option<SystemTime>,
    /// Consecutive failed dials since the last success.
    pub dial_failures: u32,
}

impl AddressRecord {
    /// A never-dialed address.
    pub fn new(address: PeerAddress) -> Self {
        Self {
            address,
            last_dial_success: None,
            last_dial_failure: None,
            dial_failures: 0,
        }
    }
}

/// What is persisted about one peer. Scores are not: they come from the
/// options in force when the store is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerRecord {
    /// The peer's id.
    pub node_id: NodeId,
    /// Its known addresses.
    pub addresses: Vec<AddressRecord>,
    /// When a connection to it last completed.
    pub last_connected: Option<SystemTime>,
    /// Set when the peer turned out to belong to another network; its
    /// addresses are not re-added until it connects successfully again.
    pub inactive: bool,
}

impl PeerRecord {
    /// A record with no addresses.
    pub fn new(node_id: NodeId) -> Self {
        Self {
            node_id,
            addresses: Vec::new(),
            last_connected: None,
            inactive: false,
        }
    }
}

/// The result of [`PeerStore::load`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct LoadedPeers {
    /// Every record that decoded.
    pub peers: Vec<PeerRecord>,
    /// Records that did not decode and were skipped (each logged).
    pub corrupt: usize,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened.
    #[error("opening peer store: {0}")]
    Open(String),
    /// The database file is in a file format this redb no longer reads
    /// (redb 2's); delete it or migrate it with redb 2.6's
    /// `Database::upgrade`.
    #[error("peer store {}: file format v{version} is too old for this build; delete the file (peers are re-learned) or migrate it", path.display())]
    OldFormat {
        /// The file.
        path: std::path::PathBuf,
        /// Its redb file format version.
        version: u8,
    },
    /// Reading failed.
    #[error("reading peer store: {0}")]
    Read(String),
    /// Writing failed; nothing of the batch was written.
    #[error("writing peer store: {0}")]
    Write(String),
}

/// Changes for a [`PeerStore`]: what [`PeerStore::write`] takes, as the
/// peer manager hands it out
/// ([`PeerManager::take_store_batch`](crate::PeerManager::take_store_batch)).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct StoreBatch {
    /// Records to insert or replace.
    pub records: Vec<PeerRecord>,
    /// Peers to delete.
    pub removed: Vec<NodeId>,
}

impl StoreBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.removed.is_empty()
    }
}

/// Where the peer manager keeps peers across restarts.
///
/// Implementations must apply each [`write`](Self::write) atomically: after a
/// crash the store holds either the whole batch or none of it.
pub trait PeerStore: Send {
    /// Reads every record; undecodable ones are skipped and counted.
    fn load(&mut self) -> Result<LoadedPeers, StoreError>;

    /// Upserts `records` and deletes `removed`, atomically.
    fn write(&mut self, records: &[PeerRecord], removed: &[NodeId]) -> Result<(), StoreError>;
}

impl PeerStore for Box<dyn PeerStore> {
    fn load(&mut self) -> Result<LoadedPeers, StoreError> {
        (**self).load()
    }

    fn write(&mut self, records: &[PeerRecord], removed: &[NodeId]) -> Result<(), StoreError> {
        (**self).write(records, removed)
    }
}
