//! Peer scores: a small pure function and the score type.

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
}
