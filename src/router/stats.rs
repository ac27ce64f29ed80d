//! Router counters: drops and peer errors, readable at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the router's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterStats {
    /// Sends to a peer that is not connected.
    pub dropped_unknown_peer: u64,
    /// Sends addressed to ourselves.
    pub dropped_self: u64,
    /// Sends to a peer that did not advertise the channel.
    pub dropped_no_channel: u64,
    /// Messages discarded by a full queue (`DropNewest`/`DropOldest`).
    pub dropped_full: u64,
    /// Messages still queued for a peer when it disconnected (dropped).
    pub dropped_disconnected: u64,
    /// Inbound messages that did not decode.
    pub decode_failures: u64,
    /// Inbound stream errors (oversized, malformed, unexpected channel).
    pub stream_errors: u64,
    /// Inbound messages for a channel whose receiver was dropped.
    pub dropped_no_receiver: u64,
    /// Inbound connections refused before the handshake (limits).
    pub refused_inbound: u64,
    /// Handshakes that failed or were refused, both directions.
    pub handshake_failures: u64,
    /// Peer errors reported by reactors or the router.
    pub peer_errors: u64,
    /// Gauge: peers the peer manager knows (the store's size).
    pub known_peers: u64,
    /// Gauge: peers connected (admitted), both directions.
    pub connected_peers: u64,
    /// Gauge: of those, visits (a full node's visitors, which hold no slot
    /// there, and our visits to full nodes): `connected_peers -
    /// transient_peers` are the peers the node keeps.
    pub transient_peers: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) dropped_unknown_peer: AtomicU64,
    pub(crate) dropped_self: AtomicU64,
    pub(crate) dropped_no_channel: AtomicU64,
    pub(crate) dropped_full: AtomicU64,
    pub(crate) dropped_disconnected: AtomicU64,
    pub(crate) decode_failures: AtomicU64,
    pub(crate) stream_errors: AtomicU64,
    pub(crate) dropped_no_receiver: AtomicU64,
    pub(crate) refused_inbound: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) peer_errors: AtomicU64,
    pub(crate) known_peers: AtomicU64,
    pub(crate) connected_peers: AtomicU64,
    pub(crate) transient_peers: AtomicU64,
    /// Woken on every change, for [`RouterHandle::stats_when`](super::RouterHandle::stats_when).
    pub(crate) changed: tokio::sync::Notify,
}

impl Stats {
    /// Counts one event on `counter` (a field of `self`).
    pub(crate) fn bump(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        // Cheap when nobody waits: one atomic operation.
        self.changed.notify_waiters();
    }

    /// Counts `n` events on `counter` (a field of `self`).
    pub(crate) fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Sets the peer gauges; waiters are woken only on a change.
    pub(crate) fn set_gauges(&self, known: usize, connected: usize, transient: usize) {
        let mut changed = false;
        for (gauge, value) in [
            (&self.known_peers, known),
            (&self.connected_peers, connected),
            (&self.transient_peers, transient),
        ] {
            changed |= gauge.swap(value as u64, Ordering::Relaxed) != value as u64;
        }
        if changed {
            self.changed.notify_waiters();
        }
    }

    /// Waits until `cond` holds on a snapshot.
    pub(crate) async fn when(&self, cond: impl Fn(&RouterStats) -> bool) -> RouterStats {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so no change in between is lost.
            changed.as_mut().enable();
            let now = self.snapshot();
            if cond(&now) {
                return now;
            }
            changed.await;
        }
    }

    pub(crate) fn snapshot(&self) -> RouterStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RouterStats {
            dropped_unknown_peer: r(&self.dropped_unknown_peer),
            dropped_self: r(&self.dropped_self),
            dropped_no_channel: r(&self.dropped_no_channel),
            dropped_full: r(&self.dropped_full),
            dropped_disconnected: r(&self.dropped_disconnected),
            decode_failures: r(&self.decode_failures),
            stream_errors: r(&self.stream_errors),
            dropped_no_receiver: r(&self.dropped_no_receiver),
            refused_inbound: r(&self.refused_inbound),
            handshake_failures: r(&self.handshake_failures),
            peer_errors: r(&self.peer_errors),
            known_peers: r(&self.known_peers),
            connected_peers: r(&self.connected_peers),
            transient_peers: r(&self.transient_peers),
        }
    }
}

/// One channel's counters, summed over all peers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// The channel.
    pub id: crate::channel::ChannelId,
    /// Its descriptor's name.
    pub name: String,
    /// Messages handed to transports.
    pub sent_messages: u64,
    /// Their bytes (encoded messages, without framing).
    pub sent_bytes: u64,
    /// Messages received from transports.
    pub received_messages: u64,
    /// Their bytes.
    pub received_bytes: u64,
    /// Sends dropped by a full queue.
    pub dropped_full: u64,
    /// Messages still queued when their peer disconnected.
    pub dropped_disconnected: u64,
    /// Sends to a peer not connected, or that left while we waited.
    pub dropped_unknown_peer: u64,
    /// Sends to a peer without the channel.
    pub dropped_no_channel: u64,
    /// Sends addressed to ourselves.
    pub dropped_self: u64,
    /// Inbound messages that did not decode.
    pub decode_failures: u64,
    /// Inbound messages whose receiver was gone.
    pub dropped_no_receiver: u64,
    /// Gauge: messages waiting in the channel's send queues, all peers.
    pub queued: u64,
}

/// The atomics behind [`ChannelStats`]; the hot paths add to them with
/// relaxed operations and notify nobody.
#[derive(Debug, Default)]
pub(crate) struct ChannelCounters {
    pub(crate) sent_messages: AtomicU64,
    pub(crate) sent_bytes: AtomicU64,
    pub(crate) received_messages: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
    pub(crate) dropped_full: AtomicU64,
    pub(crate) dropped_disconnected: AtomicU64,
    pub(crate) dropped_unknown_peer: AtomicU64,
    pub(crate) dropped_no_channel: AtomicU64,
    pub(crate) dropped_self: AtomicU64,
    pub(crate) decode_failures: AtomicU64,
    pub(crate) dropped_no_receiver: AtomicU64,
}

impl ChannelCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(
        &self,
        id: crate::channel::ChannelId,
        name: String,
        queued: u64,
    ) -> ChannelStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ChannelStats {
            id,
            name,
            sent_messages: r(&self.sent_messages),
            sent_bytes: r(&self.sent_bytes),
            received_messages: r(&self.received_messages),
            received_bytes: r(&self.received_bytes),
            dropped_full: r(&self.dropped_full),
            dropped_disconnected: r(&self.dropped_disconnected),
            dropped_unknown_peer: r(&self.dropped_unknown_peer),
            dropped_no_channel: r(&self.dropped_no_channel),
            dropped_self: r(&self.dropped_self),
            decode_failures: r(&self.decode_failures),
            dropped_no_receiver: r(&self.dropped_no_receiver),
            queued,
        }
    }
}

/// Why a dial failed, for the dial-failure counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DialFailureKind {
    Resolve,
    NoTransport,
    Unreachable,
    Handshake,
    NotAdmitted,
}

impl DialFailureKind {
    pub(crate) const ALL: [DialFailureKind; 5] = [
        Self::Resolve,
        Self::NoTransport,
        Self::Unreachable,
        Self::Handshake,
        Self::NotAdmitted,
    ];

    #[cfg(feature = "metrics")]
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Resolve => "resolve",
            Self::NoTransport => "no_transport",
            Self::Unreachable => "unreachable",
            Self::Handshake => "handshake",
            Self::NotAdmitted => "not_admitted",
        }
    }
}

/// The transports metrics are labelled with, in slot order.
pub(crate) const TRANSPORTS: [crate::address::Protocol; 3] = [
    crate::address::Protocol::Quic,
    crate::address::Protocol::Mconn,
    crate::address::Protocol::Memory,
];

/// The slot of `protocol` in the per-transport counters.
pub(crate) fn slot(protocol: crate::address::Protocol) -> usize {
    TRANSPORTS.iter().position(|p| *p == protocol).unwrap_or(0)
}

/// Counters of one transport.
#[derive(Debug, Default)]
pub(crate) struct TransportCounters {
    pub(crate) dials: AtomicU64,
    pub(crate) dial_failures: [AtomicU64; DialFailureKind::ALL.len()],
    pub(crate) inbound_peers: AtomicU64,
    pub(crate) outbound_peers: AtomicU64,
    /// Packets of connections already closed (open ones are read at
    /// scrape time), so the exported counters never fall.
    pub(crate) closed_sent_packets: AtomicU64,
    pub(crate) closed_lost_packets: AtomicU64,
}

/// Connection-level counters for metrics, per transport: dials and their
/// failures, peers by direction, packets; and handshake times.
#[derive(Debug)]
pub(crate) struct ConnectionCounters {
    pub(crate) transports: [TransportCounters; TRANSPORTS.len()],
    /// Dial (or accept) to admitted, successful connections only.
    #[cfg(feature = "metrics")]
    pub(crate) handshake_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for ConnectionCounters {
    fn default() -> Self {
        Self {
            transports: Default::default(),
            #[cfg(feature = "metrics")]
            // 250 µs … ~4 s.
            handshake_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.000_25, 2.0, 15),
            ),
        }
    }
}

impl ConnectionCounters {
    pub(crate) fn of(&self, protocol: crate::address::Protocol) -> &TransportCounters {
        &self.transports[slot(protocol)]
    }

    pub(crate) fn dial_started(&self, protocol: crate::address::Protocol) {
        self.of(protocol).dials.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dial_failed(&self, protocol: crate::address::Protocol, kind: DialFailureKind) {
        self.of(protocol).dial_failures[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Inbound peers over every transport (for the inbound limit).
    pub(crate) fn inbound_peers(&self) -> u64 {
        self.transports
            .iter()
            .map(|t| t.inbound_peers.load(Ordering::Relaxed))
            .sum()
    }

    /// Keeps the packet counters of a connection that is closing.
    pub(crate) fn connection_closed(
        &self,
        protocol: crate::address::Protocol,
        path: Option<crate::transport::PathStats>,
    ) {
        if let Some(path) = path {
            let t = self.of(protocol);
            t.closed_sent_packets
                .fetch_add(path.sent_packets, Ordering::Relaxed);
            t.closed_lost_packets
                .fetch_add(path.lost_packets, Ordering::Relaxed);
        }
    }
}
