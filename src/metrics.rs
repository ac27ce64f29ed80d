//! Prometheus metrics for a router, read at scrape time.
//!
//! The router keeps plain atomic counters on its hot paths (per channel,
//! relaxed adds, no labels to look up); a `prometheus-client` collector
//! turns them into metric families when scraped. Register it with
//! [`RouterHandle::register_metrics`](crate::RouterHandle::register_metrics).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::router::{DialFailureKind, RouterMetricsSource};

/// Every metric the router exports (without the registry's prefix), for
/// documentation and tests.
pub const METRIC_NAMES: &[&str] = &[
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
    "channel_messages_sent",
    "channel_bytes_sent",
    "channel_messages_received",
    "channel_bytes_received",
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

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
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
                "peers",
                "Connected peers by direction",
                None,
                MetricType::Gauge,
            )?;
            for (direction, value) in [
                ("inbound", load(&conns.inbound_peers)),
                ("outbound", load(&conns.outbound_peers)),
            ] {
                ConstGauge::new(value as i64)
                    .encode(m.encode_family(&[("direction", direction)])?)?;
            }
        }
        gauge(
            &mut encoder,
            "known_peers",
            "Peers in the peer store",
            stats.known_peers as i64,
        )?;
        gauge(
            &mut encoder,
            "peer_store_capacity",
            "Most peers the peer store keeps",
            source.started().map_or(0, |s| s.store_capacity) as i64,
        )?;
        counter(&mut encoder, "dials", "Dials started", load(&conns.dials))?;
        {
            let mut m = encoder.encode_descriptor(
                "dial_failures",
                "Dials that did not produce a peer, by reason",
                None,
                MetricType::Counter,
            )?;
            for kind in DialFailureKind::ALL {
                ConstCounter::new(conns.dial_failures(kind))
                    .encode(m.encode_family(&[("reason", kind.label())])?)?;
            }
        }
        counter(
            &mut encoder,
            "handshake_failures",
            "Handshakes that failed or were refused, both directions",
            stats.handshake_failures,
        )?;
        counter(
            &mut encoder,
            "inbound_refused",
            "Inbound connections refused by limits before the handshake",
            stats.refused_inbound,
        )?;
        conns.handshake_seconds.encode(encoder.encode_descriptor(
            "handshake_duration_seconds",
            "Time from dial or accept to an admitted peer",
            None,
            MetricType::Histogram,
        )?)?;
        counter(
            &mut encoder,
            "peer_errors",
            "Peer errors reported",
            stats.peer_errors,
        )?;
        counter(
            &mut encoder,
            "stream_errors",
            "Inbound stream errors (oversized, malformed, unexpected channel)",
            stats.stream_errors,
        )?;

        let channels = source.channel_stats();
        type Field = fn(&crate::ChannelStats) -> u64;
        let per_channel: [(&str, &str, MetricType, Field); 5] = [
            (
                "channel_messages_sent",
                "Messages sent per channel",
                MetricType::Counter,
                |c| c.sent_messages,
            ),
            (
                "channel_bytes_sent",
                "Message bytes sent per channel",
                MetricType::Counter,
                |c| c.sent_bytes,
            ),
            (
                "channel_messages_received",
                "Messages received per channel",
                MetricType::Counter,
                |c| c.received_messages,
            ),
            (
                "channel_bytes_received",
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
                let labels = [("channel", c.name.clone())];
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
                    let labels = [("channel", c.name.clone()), ("reason", reason.to_owned())];
                    ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
                }
            }
        }

        // Transport paths, aggregated over the open connections.
        let paths: Vec<_> = source.path_stats();
        let (mut sum, mut max) = (Duration::ZERO, Duration::ZERO);
        for p in &paths {
            sum += p.rtt;
            max = max.max(p.rtt);
        }
        let mean = if paths.is_empty() {
            0.0
        } else {
            sum.as_secs_f64() / paths.len() as f64
        };
        {
            let mut m = encoder.encode_descriptor(
                "transport_rtt_seconds",
                "Round-trip time over connections that measure it (QUIC)",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(mean).encode(m.encode_family(&[("stat", "mean")])?)?;
            ConstGauge::new(max.as_secs_f64()).encode(m.encode_family(&[("stat", "max")])?)?;
        }
        gauge(
            &mut encoder,
            "transport_lost_packets",
            "Packets declared lost, summed over open connections (QUIC)",
            paths.iter().map(|p| p.lost_packets).sum::<u64>() as i64,
        )?;
        gauge(
            &mut encoder,
            "transport_sent_packets",
            "Packets sent, summed over open connections (QUIC)",
            paths.iter().map(|p| p.sent_packets).sum::<u64>() as i64,
        )?;
        Ok(())
    }
}
