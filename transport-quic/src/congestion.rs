//! A cap on the congestion window, over whichever controller quinn runs.
//!
//! BBR keeps about two bandwidth-delay products in flight, and quinn paces
//! at 1.25 × window ÷ RTT. On a path whose BDP is known, the second BDP is a
//! standing queue at the bottleneck, in front of every high-priority
//! message. A cap near one BDP removes it: the window, not flow control,
//! limits a bulk stream, so what goes out next is still chosen by stream
//! priority (a send window or a stream window at the BDP limits the
//! writer instead, and a small channel then waits for room behind it).

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;

/// A controller factory, shared between connections.
pub(crate) type Factory = Arc<dyn ControllerFactory + Send + Sync>;

/// The controller for these settings: BBR or CUBIC, its window capped at
/// `cap` bytes if given.
pub(crate) fn controller(bbr: bool, cap: Option<u64>) -> Factory {
    let inner: Factory = if bbr {
        Arc::new(quinn::congestion::BbrConfig::default())
    } else {
        Arc::new(quinn::congestion::CubicConfig::default())
    };
    match cap {
        Some(cap) => Arc::new(CappedFactory { inner, cap }),
        None => inner,
    }
}

/// Builds `inner`'s controller with its window capped at `cap` bytes.
struct CappedFactory {
    inner: Factory,
    cap: u64,
}

impl ControllerFactory for CappedFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Capped {
            inner: self.inner.clone().build(now, current_mtu),
            cap: self.cap,
        })
    }
}

/// A controller whose window never exceeds `cap`.
struct Capped {
    inner: Box<dyn Controller>,
    cap: u64,
}

impl Controller for Capped {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window().min(self.cap)
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = self.inner.metrics();
        metrics.congestion_window = self.window();
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Capped {
            inner: self.inner.clone_box(),
            cap: self.cap,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window().min(self.cap)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(cap: u64) -> Box<dyn Controller> {
        controller(true, Some(cap)).build(Instant::now(), 1200)
    }

    #[test]
    fn the_window_never_exceeds_the_cap_and_is_the_controllers_below_it() {
        let uncapped = capped(u64::MAX);
        let initial = uncapped.initial_window();
        assert!(initial > 2400, "{initial}");
        assert_eq!(uncapped.window(), initial);
        let mut small = capped(2400);
        assert_eq!(small.initial_window(), 2400);
        assert_eq!(small.window(), 2400);
        assert_eq!(small.metrics().congestion_window, 2400);
        // Delegated events leave the cap in force, in clones too.
        small.on_sent(Instant::now(), 1200, 1);
        small.on_congestion_event(Instant::now(), Instant::now(), false, 1200);
        assert!(small.window() <= 2400);
        assert!(small.clone_box().window() <= 2400);
    }
}
