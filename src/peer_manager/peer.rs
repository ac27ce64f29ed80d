//! What the peer manager knows about one peer, in memory.

use std::time::{Duration, SystemTime};

use crate::address::PeerAddress;
use crate::identity::NodeId;
use crate::peer_store::{AddressRecord, PeerRecord};

/// One known address and its dial history.
#[derive(Debug, Clone)]
pub(super) struct KnownAddress {
    pub(super) record: AddressRecord,
    /// Drawn from the seeded RNG at each failure, so `dial_next` and
    /// `next_wakeup` agree on when the retry is due.
    pub(super) jitter: Duration,
}

/// A peer in the manager's table.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) id: NodeId,
    pub(super) addresses: Vec<KnownAddress>,
    pub(super) last_connected: Option<SystemTime>,
    /// Not persisted: the cooldown only matters within one run.
    pub(super) last_disconnected: Option<SystemTime>,
    pub(super) inactive: bool,
    /// Not persisted: earned from reports during this run.
    pub(super) earned: i64,
}

impl Peer {
    pub(super) fn new(id: NodeId) -> Self {
        Self {
            id,
            addresses: Vec::new(),
            last_connected: None,
            last_disconnected: None,
            inactive: false,
            earned: 0,
        }
    }

    pub(super) fn from_record(record: PeerRecord) -> Self {
        let id = record.node_id;
        Self {
            id,
            // An address naming another node is not this peer's: drop it.
            addresses: record
                .addresses
                .into_iter()
                .filter(|a| a.address.node_id() == id)
                .map(|record| KnownAddress {
                    record,
                    jitter: Duration::ZERO,
                })
                .collect(),
            last_connected: record.last_connected,
            last_disconnected: None,
            inactive: record.inactive,
            earned: 0,
        }
    }

    pub(super) fn to_record(&self) -> PeerRecord {
        let mut record = PeerRecord::new(self.id);
        record.addresses = self.addresses.iter().map(|a| a.record.clone()).collect();
        record.last_connected = self.last_connected;
        record.inactive = self.inactive;
        record
    }

    pub(super) fn dial_failures(&self) -> u64 {
        self.addresses
            .iter()
            .map(|a| u64::from(a.record.dial_failures))
            .sum()
    }

    pub(super) fn address_mut(&mut self, address: &PeerAddress) -> Option<&mut KnownAddress> {
        self.addresses
            .iter_mut()
            .find(|a| &a.record.address == address)
    }
}
