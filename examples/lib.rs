//! What the example programs share; the programs themselves are
//! `localnet/`, `node/` and `inspect.rs`.

/// Logs to stderr, filtered by `RUST_LOG` (else `default`), without colour
/// codes when stderr is a file or a pipe.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Delivery latencies (µs): all of them for the summary, and the latest
/// window for the live view. HDR histograms: bounded memory however long
/// the run, 3 significant digits.
#[derive(Debug)]
pub struct Latencies {
    all: hdrhistogram::Histogram<u64>,
    window: hdrhistogram::Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        // 1 µs to 1 h at 3 significant digits: fixed memory; a value
        // beyond the range is clamped to it (never lost).
        let new =
            || hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        Self {
            all: new(),
            window: new(),
        }
    }
}

impl Latencies {
    /// Records one latency in µs.
    pub fn record(&mut self, us: u64) {
        self.all.saturating_record(us);
        self.window.saturating_record(us);
    }

    /// Percentiles (µs) of the window since the last call, then clears it.
    pub fn take_window(&mut self, quantiles: &[f64]) -> Vec<u32> {
        let out = percentiles(&self.window, quantiles);
        self.window.reset();
        out
    }

    /// Percentiles (µs) of the whole run.
    pub fn overall(&mut self, quantiles: &[f64]) -> Vec<u32> {
        percentiles(&self.all, quantiles)
    }
}

fn percentiles(h: &hdrhistogram::Histogram<u64>, quantiles: &[f64]) -> Vec<u32> {
    quantiles
        .iter()
        .map(|&q| h.value_at_quantile(q).min(u64::from(u32::MAX)) as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Latencies;

    #[test]
    fn windows_and_the_whole_run_keep_their_percentiles() {
        let mut l = Latencies::default();
        for us in [100, 200, 300, 400] {
            l.record(us);
        }
        assert_eq!(l.take_window(&[0.5, 1.0]), vec![200, 400]);
        assert_eq!(l.take_window(&[0.5]), vec![0], "the window was cleared");
        l.record(7_000_000);
        let all = l.overall(&[0.5, 1.0]);
        assert_eq!(all[0], 300);
        assert!((i64::from(all[1]) - 7_000_000).abs() < 7_000, "{all:?}");
    }
}
