//! Router counters: drops and peer errors, readable at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares a public snapshot of `u64` counters and the crate's struct of
/// atomics behind it from one list, so a counter is named once. The
/// atomics struct gets `snapshot`, which takes the snapshot's other fields
/// (`$extra`) as arguments; `$inner` are the atomics struct's own extras.
macro_rules! counters {
    (
        $(#[$meta:meta])*
        pub struct $snapshot:ident { $($(#[$xdoc:meta])* $extra:ident: $xty:ty,)* }
        counted by $atomics:ident { $($(#[$idoc:meta])* $inner:ident: $ity:ty,)* }
        { $($(#[$doc:meta])* $field:ident,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $snapshot {
            $($(#[$xdoc])* pub $extra: $xty,)*
            $($(#[$doc])* pub $field: u64,)*
        }

        #[derive(Debug, Default)]
        pub(crate) struct $atomics {
            $($(#[$idoc])* pub(crate) $inner: $ity,)*
            $(pub(crate) $field: AtomicU64,)*
        }

        impl $atomics {
            pub(crate) fn snapshot(&self, $($extra: $xty),*) -> $snapshot {
                $snapshot {
                    $($extra,)*
                    $($field: self.$field.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// A snapshot of the router's counters.
    #[derive(Copy, Default)]
    pub struct RouterStats {}
    counted by Stats {
        /// Woken on every change, for [`RouterHandle::stats_when`](super::RouterHandle::stats_when).
        changed: tokio::sync::Notify,
    }
    {
        /// Sends to a peer that is not connected.
        dropped_unknown_peer,
        /// Sends addressed to ourselves.
        dropped_self,
        /// Sends to a peer that did not advertise the channel.
        dropped_no_channel,
        /// Messages discarded by a full queue (`DropNewest`/`DropOldest`).
        dropped_full,
        /// Messages still queued for a peer when it disconnected (dropped).
        dropped_disconnected,
        /// Inbound messages that did not decode.
        decode_failures,
        /// Inbound stream errors (oversized, malformed, unexpected channel).
        stream_errors,
        /// Inbound messages for a channel whose receiver was dropped.
        dropped_no_receiver,
        /// Inbound connections refused before the handshake (limits).
        refused_inbound,
        /// Handshakes that failed or were refused, both directions.
        handshake_failures,
        /// Peer errors reported by reactors or the router.
        peer_errors,
        /// Gauge: peers the peer manager knows (the store's size).
        known_peers,
        /// Gauge: peers connected (admitted), both directions.
        connected_peers,
        /// Gauge: of those, visits (a full node's visitors, which hold no slot
        /// there, and our visits to full nodes): `connected_peers -
        /// transient_peers` are the peers the node keeps.
        transient_peers,
    }
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
}

counters! {
    /// One channel's counters, summed over all peers. The hot paths add to
    /// the atomics behind it with relaxed operations and notify nobody.
    pub struct ChannelStats {
        /// The channel.
        id: crate::channel::ChannelId,
        /// Its descriptor's name.
        name: String,
        /// Gauge: messages waiting in the channel's send queues, all peers.
        queued: u64,
    }
    counted by ChannelCounters {}
    {
        /// Messages handed to transports.
        sent_messages,
        /// Their bytes (encoded messages, without framing).
        sent_bytes,
        /// Messages received from transports.
        received_messages,
        /// Their bytes.
        received_bytes,
        /// Sends dropped by a full queue.
        dropped_full,
        /// Messages still queued when their peer disconnected.
        dropped_disconnected,
        /// Sends to a peer not connected, or that left while we waited.
        dropped_unknown_peer,
        /// Sends to a peer without the channel.
        dropped_no_channel,
        /// Sends addressed to ourselves.
        dropped_self,
        /// Inbound messages that did not decode.
        decode_failures,
        /// Inbound messages whose receiver was gone.
        dropped_no_receiver,
    }
}

impl ChannelCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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
