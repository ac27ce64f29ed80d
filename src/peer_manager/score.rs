//! Peer scores and retry delays: small pure functions.

use std::time::Duration;

/// A peer's rank; higher is better. Peers are dialed in descending score
/// order, and a full node may replace a lower-scored peer by a higher one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerScore(pub i16);

impl PeerScore {
    /// The score of persistent peers: above every computed score.
    pub const PERSISTENT: PeerScore = PeerScore(i16::MAX);
    /// The highest score a non-persistent peer can earn.
    pub const MAX_EARNED: PeerScore = PeerScore(i16::MAX - 1);
    /// The lowest score.
    pub const MIN: PeerScore = PeerScore(i16::MIN);
}

/// The computed score: fixed if configured, else persistent, else the earned
/// score minus the peer's dial failures, clamped to the `i16` range below
/// [`PeerScore::MAX_EARNED`].
pub(crate) fn score(
    fixed: Option<PeerScore>,
    persistent: bool,
    earned: i64,
    dial_failures: u64,
) -> PeerScore {
    if let Some(fixed) = fixed {
        return fixed;
    }
    if persistent {
        return PeerScore::PERSISTENT;
    }
    let failures = i64::try_from(dial_failures).unwrap_or(i64::MAX);
    let s = earned
        .min(i64::from(PeerScore::MAX_EARNED.0))
        .saturating_sub(failures)
        .max(i64::from(i16::MIN));
    // Clamped into the i16 range just above.
    PeerScore(i16::try_from(s).unwrap_or(i16::MIN))
}

/// How long after its last failure an address may be dialed again:
/// `min_retry × failures + jitter`, capped at `max_retry` (0: no cap).
/// `None` means never (retries are off: `min_retry` is 0).
pub(crate) fn retry_delay(
    failures: u32,
    min_retry: Duration,
    max_retry: Duration,
    jitter: Duration,
) -> Option<Duration> {
    if failures == 0 {
        return Some(Duration::ZERO);
    }
    if min_retry.is_zero() {
        return None;
    }
    let delay = min_retry.saturating_mul(failures).saturating_add(jitter);
    Some(if max_retry.is_zero() {
        delay
    } else {
        delay.min(max_retry)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_prefers_fixed_then_persistent_then_earned() {
        assert_eq!(score(Some(PeerScore(5)), true, 100, 0), PeerScore(5));
        assert_eq!(score(None, true, -100, 50), PeerScore::PERSISTENT);
        assert_eq!(score(None, false, 10, 3), PeerScore(7));
        assert_eq!(score(None, false, i64::MAX, 0), PeerScore::MAX_EARNED);
        assert_eq!(score(None, false, i64::MIN, u64::MAX), PeerScore::MIN);
    }

    #[test]
    fn retry_delay_grows_linearly_and_caps() {
        let ms = Duration::from_millis;
        assert_eq!(retry_delay(0, ms(100), ms(350), ms(0)), Some(ms(0)));
        assert_eq!(retry_delay(1, ms(100), ms(350), ms(0)), Some(ms(100)));
        assert_eq!(retry_delay(3, ms(100), ms(350), ms(0)), Some(ms(300)));
        assert_eq!(retry_delay(4, ms(100), ms(350), ms(0)), Some(ms(350)));
        assert_eq!(retry_delay(2, ms(100), ms(350), ms(7)), Some(ms(207)));
        assert_eq!(
            retry_delay(u32::MAX, ms(100), ms(0), ms(0)),
            Some(ms(100) * u32::MAX)
        );
        assert_eq!(retry_delay(1, ms(0), ms(0), ms(0)), None);
    }
}
