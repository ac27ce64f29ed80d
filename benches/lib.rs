//! What the benchmark targets share: latency figures in HDR histograms,
//! and the WAN link's model ([`link`]). The benchmarks themselves are
//! `transports/` and `micro.rs`.

pub mod link;

/// Latencies in an HDR histogram of nanoseconds (3 significant digits):
/// bounded memory whatever the count, and mergeable across repetitions.
#[derive(Debug, Clone)]
pub struct Latencies(hdrhistogram::Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        // 1 ns to 1 h at 3 significant digits: fixed memory; a value
        // beyond the range is clamped to it (never lost).
        let h = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000_000, 3);
        Self(h.expect("valid bounds"))
    }
}

impl Latencies {
    /// A histogram of latencies given in µs.
    pub fn from_us(us: &[f64]) -> Self {
        let mut out = Self::default();
        for &v in us {
            out.0.saturating_record((v * 1e3).max(0.0) as u64);
        }
        out
    }

    /// The latency (µs) at quantile `q`; NaN when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.value_at_quantile(q) as f64 / 1e3
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Self) {
        self.0
            .add(&other.0)
            .expect("histograms of the same bounds merge");
    }

    /// The CDF as 1,001 ascending values (µs) at quantiles 0, 0.001, … 1:
    /// what the JSON and the plots keep instead of every sample.
    pub fn cdf_us(&self) -> Vec<f64> {
        if self.0.is_empty() {
            return Vec::new();
        }
        (0..=1000)
            .map(|i| self.quantile_us(f64::from(i) / 1000.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Latencies;

    #[test]
    fn latencies_keep_their_values_to_three_digits() {
        let l = Latencies::from_us(&[10.0, 20.0, 30.0, 40.0, 5_000_000.0]);
        assert!(
            (l.quantile_us(0.5) - 30.0).abs() < 0.1,
            "{}",
            l.quantile_us(0.5)
        );
        assert!((l.quantile_us(1.0) - 5_000_000.0).abs() / 5e6 < 1e-3);
        assert!(Latencies::default().quantile_us(0.5).is_nan());
    }
}
