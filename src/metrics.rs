//! Prometheus metrics for a router, read at scrape time.
//!
//! The router keeps plain atomic counters on its hot paths (per channel,
//! relaxed adds, no labels to look up); a `prometheus-client` collector
//! turns them into metric families when scraped. Register it with
//! [`RouterHandle::register_metrics`](crate::RouterHandle::register_metrics).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::router::{DialFailureKind, RouterMetricsSource, TRANSPORTS};

/// Every metric the router exports (without the registry's prefix), for
/// documentation and tests.
pub const METRIC_NAMES: &[&str] = &[
    "build_info",
    "peers",
    "known_peers",
    "peer_store_capacity",
    "dials",
    "dial_failures",
    "handshake_failures",
    "inbound_refused",
    "handshake_duration_seconds",
    "peer_errors",
    "stream_errors",
    "channel_sent_messages",
    "channel_sent_bytes",
    "channel_received_messages",
    "channel_received_bytes",
    "channel_dropped_messages",
    "channel_send_queue_depth",
    "transport_rtt_seconds",
    "transport_lost_packets",
    "transport_sent_packets",
];

pub(crate) struct RouterCollector {
    pub(crate) source: Weak<RouterMetricsSource>,
}

impl fmt::Debug for RouterCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterCollector").finish_non_exhaustive()
    }
}

/// The value of a series without labels.
enum Single {
    Counter(u64),
    Gauge(i64),
}

fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Single,
) -> Result<(), fmt::Error> {
    let kind = match value {
        Single::Counter(_) => MetricType::Counter,
        Single::Gauge(_) => MetricType::Gauge,
    };
    let series = encoder.encode_descriptor(name, help, None, kind)?;
    match value {
        Single::Counter(v) => ConstCounter::new(v).encode(series),
        Single::Gauge(v) => ConstGauge::new(v).encode(series),
    }
}

/// A channel's labels: its name and its id, so two channels with one name
/// never share a series.
fn channel_labels(c: &crate::ChannelStats) -> [(&'static str, String); 2] {
    [
        ("channel", c.name.clone()),
        ("channel_id", c.id.0.to_string()),
    ]
}

impl Collector for RouterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        // The router is gone: nothing to report.
        let Some(source) = self.source.upgrade() else {
            return Ok(());
        };
        let stats = source.stats.snapshot();
        let conns = &source.connections;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);

        {
            let mut m = encoder.encode_descriptor(
                "build_info",
                "The p2p-router version, as a label; always 1",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1)
                .encode(m.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        }
        {
            let mut m = encoder.encode_descriptor(
                "peers",
                "Connected peers by transport and direction",
                None,
                MetricType::Gauge,
            )?;
            for (protocol, t) in TRANSPORTS.iter().zip(&conns.transports) {
                for (direction, value) in [
                    ("inbound", load(&t.inbound_peers)),
                    ("outbound", load(&t.outbound_peers)),
                ] {
                    let labels = [("transport", protocol.scheme()), ("direction", direction)];
                    ConstGauge::new(value as i64).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        let store_capacity = source.started().map_or(0, |s| s.store_capacity as u64);
        for (name, help, value) in [
            (
                "transient_peers",
                "Connected peers that hold no slot: visitors, and our visits to full nodes",
                stats.transient_peers,
            ),
            ("known_peers", "Peers in the peer store", stats.known_peers),
            (
                "peer_store_capacity",
                "Most peers the peer store keeps",
                store_capacity,
            ),
        ] {
            single(&mut encoder, name, help, Single::Gauge(value as i64))?;
        }
        {
            let mut m = encoder.encode_descriptor(
                "dials",
                "Dials started, by transport",
                None,
                MetricType::Counter,
            )?;
            for (protocol, t) in TRANSPORTS.iter().zip(&conns.transports) {
                ConstCounter::new(load(&t.dials))
                    .encode(m.encode_family(&[("transport", protocol.scheme())])?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "dial_failures",
                "Dials that did not produce a peer, by transport and reason",
                None,
                MetricType::Counter,
            )?;
            for (protocol, t) in TRANSPORTS.iter().zip(&conns.transports) {
                for kind in DialFailureKind::ALL {
                    let labels = [("transport", protocol.scheme()), ("reason", kind.label())];
                    ConstCounter::new(load(&t.dial_failures[kind as usize]))
                        .encode(m.encode_family(&labels)?)?;
                }
            }
        }
        conns.handshake_seconds.encode(encoder.encode_descriptor(
            "handshake_duration_seconds",
            "Time from dial or accept to an admitted peer",
            None,
            MetricType::Histogram,
        )?)?;
        for (name, help, value) in [
            (
                "handshake_failures",
                "Handshakes that failed or were refused, both directions",
                stats.handshake_failures,
            ),
            (
                "inbound_refused",
                "Inbound connections refused by limits before the handshake",
                stats.refused_inbound,
            ),
            ("peer_errors", "Peer errors reported", stats.peer_errors),
            (
                "stream_errors",
                "Inbound stream errors (oversized, malformed, unexpected channel)",
                stats.stream_errors,
            ),
        ] {
            single(&mut encoder, name, help, Single::Counter(value))?;
        }

        let channels = source.channel_stats();
        type Field = fn(&crate::ChannelStats) -> u64;
        let per_channel: [(&str, &str, MetricType, Field); 5] = [
            (
                "channel_sent_messages",
                "Messages sent per channel",
                MetricType::Counter,
                |c| c.sent_messages,
            ),
            (
                "channel_sent_bytes",
                "Message bytes sent per channel",
                MetricType::Counter,
                |c| c.sent_bytes,
            ),
            (
                "channel_received_messages",
                "Messages received per channel",
                MetricType::Counter,
                |c| c.received_messages,
            ),
            (
                "channel_received_bytes",
                "Message bytes received per channel",
                MetricType::Counter,
                |c| c.received_bytes,
            ),
            (
                "channel_send_queue_depth",
                "Messages waiting in send queues per channel, all peers",
                MetricType::Gauge,
                |c| c.queued,
            ),
        ];
        for (name, help, kind, field) in per_channel {
            let mut m = encoder.encode_descriptor(name, help, None, kind)?;
            for c in &channels {
                let labels = channel_labels(c);
                let value = field(c);
                match kind {
                    MetricType::Gauge => {
                        ConstGauge::new(value as i64).encode(m.encode_family(&labels)?)?
                    }
                    _ => ConstCounter::new(value).encode(m.encode_family(&labels)?)?,
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "channel_dropped_messages",
                "Messages dropped per channel and reason",
                None,
                MetricType::Counter,
            )?;
            for c in &channels {
                for (reason, value) in [
                    ("full", c.dropped_full),
                    ("disconnected", c.dropped_disconnected),
                    ("unknown_peer", c.dropped_unknown_peer),
                    ("no_channel", c.dropped_no_channel),
                    ("self", c.dropped_self),
                    ("decode", c.decode_failures),
                    ("no_receiver", c.dropped_no_receiver),
                ] {
                    let [name, id] = channel_labels(c);
                    let labels = [name, id, ("reason", reason.to_owned())];
                    ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
                }
            }
        }

        // Transport paths: RTTs of the open connections as a histogram per
        // transport; packets as counters that keep closed connections'.
        let paths = source.path_stats_by_transport();
        {
            let mut m = encoder.encode_descriptor(
                "transport_rtt_seconds",
                "Round-trip times of the open connections that measure them (QUIC)",
                None,
                MetricType::Histogram,
            )?;
            for (protocol, open) in TRANSPORTS.iter().zip(&paths) {
                if open.is_empty() {
                    continue;
                }
                let histogram = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
                for p in open {
                    histogram.observe(p.rtt.as_secs_f64());
                }
                histogram.encode(m.encode_family(&[("transport", protocol.scheme())])?)?;
            }
        }
        type Packets = fn(&crate::transport::PathStats) -> u64;
        let packet_counters: [(&str, &str, Packets, usize); 2] = [
            (
                "transport_lost_packets",
                "Packets declared lost (QUIC)",
                |p| p.lost_packets,
                0,
            ),
            (
                "transport_sent_packets",
                "Packets sent (QUIC)",
                |p| p.sent_packets,
                1,
            ),
        ];
        for (name, help, field, which) in packet_counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for ((protocol, t), open) in TRANSPORTS.iter().zip(&conns.transports).zip(&paths) {
                let closed = if which == 0 {
                    load(&t.closed_lost_packets)
                } else {
                    load(&t.closed_sent_packets)
                };
                let total = closed + open.iter().map(field).sum::<u64>();
                ConstCounter::new(total)
                    .encode(m.encode_family(&[("transport", protocol.scheme())])?)?;
            }
        }
        Ok(())
    }
}
