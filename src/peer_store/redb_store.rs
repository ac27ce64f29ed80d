//! The default [`PeerStore`]: one redb database file.

use std::path::Path;

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

use super::{codec, LoadedPeers, PeerRecord, PeerStore, StoreError};
use crate::identity::NodeId;

/// Node id bytes → prost-encoded record.
const PEERS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("peers");

/// A [`PeerStore`] in a redb database file.
///
/// Every [`write`](PeerStore::write) is one redb transaction, committed
/// durably before it returns, so a process killed mid-write leaves the file
/// with the previous or the new contents, never a mix.
pub struct RedbPeerStore {
    db: Database,
}

impl std::fmt::Debug for RedbPeerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbPeerStore").finish_non_exhaustive()
    }
}

impl RedbPeerStore {
    /// Opens the database at `path`, creating it when absent.
    ///
    /// A file written by redb 2 (this crate before it moved to redb 4) is
    /// refused with [`StoreError::OldFormat`] rather than rewritten: the
    /// operator chooses between deleting it (the store is a cache that PEX
    /// and the configured peers refill) and migrating it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let db = Database::create(path).map_err(|e| match e {
            DatabaseError::UpgradeRequired(version) => StoreError::OldFormat {
                path: path.to_owned(),
                version,
            },
            e => StoreError::Open(e.to_string()),
        })?;
        // Create the table up front so reads never meet a missing table.
        let txn = db
            .begin_write()
            .map_err(|e| StoreError::Open(e.to_string()))?;
        txn.open_table(PEERS)
            .map_err(|e| StoreError::Open(e.to_string()))?;
        txn.commit().map_err(|e| StoreError::Open(e.to_string()))?;
        Ok(Self { db })
    }
}

impl PeerStore for RedbPeerStore {
    fn load(&mut self) -> Result<LoadedPeers, StoreError> {
        let read = |e: &dyn std::fmt::Display| StoreError::Read(e.to_string());
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(PEERS).map_err(|e| read(&e))?;
        let mut loaded = LoadedPeers::default();
        for entry in table.iter().map_err(|e| read(&e))? {
            let (key, value) = entry.map_err(|e| read(&e))?;
            match codec::decode(key.value(), value.value()) {
                Ok(record) => loaded.peers.push(record),
                Err(error) => {
                    tracing::warn!(
                        key = hex::encode(key.value()),
                        %error,
                        "skipping corrupt peer record"
                    );
                    loaded.corrupt += 1;
                }
            }
        }
        Ok(loaded)
    }

    fn write(&mut self, records: &[PeerRecord], removed: &[NodeId]) -> Result<(), StoreError> {
        let write = |e: &dyn std::fmt::Display| StoreError::Write(e.to_string());
        let txn = self.db.begin_write().map_err(|e| write(&e))?;
        {
            let mut table = txn.open_table(PEERS).map_err(|e| write(&e))?;
            for id in removed {
                table
                    .remove(id.as_bytes().as_slice())
                    .map_err(|e| write(&e))?;
            }
            for record in records {
                let bytes = codec::encode(record);
                table
                    .insert(record.node_id.as_bytes().as_slice(), bytes.as_slice())
                    .map_err(|e| write(&e))?;
            }
        }
        txn.commit().map_err(|e| write(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;
    use crate::peer_store::AddressRecord;

    fn record(seed: u8) -> PeerRecord {
        let id = NodeKey::from_seed([seed; 32]).node_id();
        let mut r = PeerRecord::new(id);
        r.addresses.push(AddressRecord::new(
            format!("quic://{id}@127.0.0.1:{}", 1000 + u16::from(seed))
                .parse()
                .unwrap(),
        ));
        r
    }

    /// A store path in a fresh temporary directory (kept by the guard).
    fn store_path() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.redb");
        (dir, path)
    }

    /// What a store opened afresh at `path` loads: the records, and how
    /// many were corrupt.
    fn reopen(path: &Path) -> (Vec<PeerRecord>, usize) {
        let loaded = RedbPeerStore::open(path).unwrap().load().unwrap();
        (loaded.peers, loaded.corrupt)
    }

    #[test]
    fn write_load_remove_round_trip() {
        let (_dir, path) = store_path();
        let mut store = RedbPeerStore::open(&path).unwrap();
        store.write(&[record(1), record(2)], &[]).unwrap();
        store.write(&[], &[record(1).node_id]).unwrap();
        drop(store);
        assert_eq!(reopen(&path), (vec![record(2)], 0));
    }

    #[test]
    fn a_redb_2_file_is_refused_with_its_path_and_format() {
        let (_dir, path) = store_path();
        // What this crate wrote before it moved to redb 4.
        drop(redb2::Database::create(&path).unwrap());
        match RedbPeerStore::open(&path) {
            Err(StoreError::OldFormat { path: p, version }) => {
                assert_eq!(p, path);
                assert_eq!(version, 2);
            }
            other => panic!("expected OldFormat, got {other:?}"),
        }
        assert!(path.exists(), "the old file is left for the operator");
    }

    #[test]
    fn corrupt_records_are_skipped_and_counted() {
        let (_dir, path) = store_path();
        let mut store = RedbPeerStore::open(&path).unwrap();
        store.write(&[record(1)], &[]).unwrap();
        drop(store);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(PEERS).unwrap();
                t.insert([7u8; 20].as_slice(), [0xffu8, 0xff, 0x01].as_slice())
                    .unwrap();
                t.insert([8u8; 3].as_slice(), codec::encode(&record(3)).as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        assert_eq!(reopen(&path), (vec![record(1)], 2));
    }

    #[test]
    fn a_garbage_file_fails_to_open_with_an_error() {
        let (_dir, path) = store_path();
        std::fs::write(&path, b"this is not a database").unwrap();
        assert!(matches!(
            RedbPeerStore::open(&path),
            Err(StoreError::Open(_))
        ));
    }

    /// Runs in a child process (see `reopen_after_kill_mid_write_is_consistent`):
    /// writes batches forever, announcing each committed batch on stdout.
    #[test]
    #[ignore = "helper process for reopen_after_kill_mid_write_is_consistent"]
    fn writer_child_process() {
        use std::io::Write;
        let Ok(path) = std::env::var("P2P_STORE_WRITER_PATH") else {
            return;
        };
        let mut store = RedbPeerStore::open(&path).unwrap();
        let mut out = std::io::stdout();
        for batch in 0u32.. {
            let records: Vec<_> = (0..20u8)
                .map(|i| {
                    let mut r = record(i);
                    r.addresses[0].dial_failures = batch;
                    r
                })
                .collect();
            store.write(&records, &[]).unwrap();
            writeln!(out, "committed {batch}").unwrap();
            out.flush().unwrap();
        }
    }

    #[test]
    fn reopen_after_kill_mid_write_is_consistent() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};

        let (_dir, path) = store_path();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "peer_store::redb_store::tests::writer_child_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("P2P_STORE_WRITER_PATH", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut committed = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("committed ") {
                committed = Some(n.parse::<u32>().unwrap());
                if committed >= Some(25) {
                    break;
                }
            }
        }
        // SIGKILL while the writer is somewhere inside its next transaction.
        child.kill().unwrap();
        child.wait().unwrap();
        let committed = committed.expect("the writer committed batches");

        let (peers, corrupt) = reopen(&path);
        assert_eq!(corrupt, 0);
        assert_eq!(peers.len(), 20);
        // Every record comes from the same batch: transactions are atomic.
        let batch = peers[0].addresses[0].dial_failures;
        assert!(
            batch >= committed,
            "batch {batch} older than committed {committed}"
        );
        assert!(peers.iter().all(|p| p.addresses[0].dial_failures == batch));
    }
}
