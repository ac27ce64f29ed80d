//! A byte-rate limiter: a token bucket that may go into debt by one
//! packet, like Tendermint's flowrate monitor used with `Limit`.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct RateLimit {
    /// Bytes per second; `None` is unlimited.
    rate: Option<u64>,
    /// Available bytes (negative: debt).
    tokens: f64,
    /// Most bytes that may accumulate while idle (100 ms worth).
    burst: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(rate: Option<u64>) -> Self {
        Self::new_at(rate, Instant::now())
    }

    /// A limiter whose clock starts at `now`.
    pub(crate) fn new_at(rate: Option<u64>, now: Instant) -> Self {
        let burst = rate.map_or(0.0, |r| (r as f64 / 10.0).max(2048.0));
        Self {
            rate,
            tokens: burst,
            burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate as f64).min(self.burst);
        }
        self.last = now;
    }

    /// How long to wait before sending again (zero: go ahead).
    pub(crate) fn delay(&mut self) -> Duration {
        self.delay_at(Instant::now())
    }

    /// How long after `now` to wait before sending again.
    pub(crate) fn delay_at(&mut self, now: Instant) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        self.refill(now);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate as f64)
        }
    }

    /// Records `bytes` sent or received.
    pub(crate) fn spend(&mut self, bytes: usize) {
        self.spend_at(Instant::now(), bytes);
    }

    /// Records `bytes` sent or received at `now`.
    pub(crate) fn spend_at(&mut self, now: Instant, bytes: usize) {
        if self.rate.is_some() {
            self.refill(now);
            self.tokens -= bytes as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn debt_is_repaid_at_the_rate() {
        let mut r = RateLimit::new(Some(10_000));
        assert_eq!(r.delay(), Duration::ZERO);
        r.spend(3_000); // burst is 2048: 952 bytes of debt
        let d = r.delay();
        assert!(
            d > Duration::from_millis(90) && d < Duration::from_millis(100),
            "{d:?}"
        );
        tokio::time::advance(d).await;
        assert_eq!(r.delay(), Duration::ZERO);
        let mut none = RateLimit::new(None);
        none.spend(1 << 30);
        assert_eq!(none.delay(), Duration::ZERO);
    }
}
