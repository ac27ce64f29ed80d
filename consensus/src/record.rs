//! What each validator decided, and the agreement check across them: the
//! safety property, always on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::context::BlockHash;

/// One decided height, as a validator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// The height.
    pub height: u64,
    /// The block decided.
    pub value: BlockHash,
    /// The round it was decided in.
    pub round: u32,
    /// How many precommits its certificate holds.
    pub signers: usize,
    /// From the first proposal part (or our own proposal) to the decision;
    /// `None` when the height was caught up by sync.
    pub latency: Option<Duration>,
}

/// A validator's decisions, shared with whoever checks them.
#[derive(Debug, Clone)]
pub struct Decisions {
    log: Arc<Mutex<BTreeMap<u64, Decision>>>,
    height: watch::Sender<u64>,
}

impl Default for Decisions {
    fn default() -> Self {
        Self {
            log: Arc::default(),
            height: watch::Sender::new(0),
        }
    }
}

impl Decisions {
    pub(crate) fn record(&self, decision: Decision) {
        let height = decision.height;
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(height, decision);
        self.height.send_if_modified(|h| {
            let higher = height > *h;
            *h = (*h).max(height);
            higher
        });
    }

    /// The highest height decided.
    pub fn height(&self) -> u64 {
        *self.height.borrow()
    }

    /// Waits until `height` is decided.
    pub async fn reached(&self, height: u64) {
        let mut rx = self.height.subscribe();
        // The sender lives in `self`, so this only ends at the height.
        let _ = rx.wait_for(|h| *h >= height).await;
    }

    /// Every decision so far, by height.
    pub fn all(&self) -> Vec<Decision> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.values().cloned().collect()
    }

    /// The decision at `height`, if any.
    pub fn at(&self, height: u64) -> Option<Decision> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.get(&height).cloned()
    }
}

/// Two validators decided different blocks at one height: consensus was
/// not safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "validators {first} and {second} disagree at height {height}: {first_value} vs {second_value}"
)]
#[non_exhaustive]
pub struct Disagreement {
    /// The height.
    pub height: u64,
    /// The first validator's index.
    pub first: usize,
    /// Its block.
    pub first_value: BlockHash,
    /// The second validator's index.
    pub second: usize,
    /// Its block.
    pub second_value: BlockHash,
}

/// What the agreement check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Agreement {
    /// Heights that two or more validators decided, all alike.
    pub shared_heights: u64,
    /// The highest height any validator decided.
    pub highest: u64,
}

/// Checks that every height decided by more than one of `validators` was
/// decided alike.
pub fn check_agreement(validators: &[Decisions]) -> Result<Agreement, Disagreement> {
    let mut by_height: BTreeMap<u64, (usize, BlockHash, usize)> = BTreeMap::new();
    let mut highest = 0;
    for (index, decisions) in validators.iter().enumerate() {
        for d in decisions.all() {
            highest = highest.max(d.height);
            match by_height.get_mut(&d.height) {
                None => {
                    by_height.insert(d.height, (index, d.value, 1));
                }
                Some((first, value, count)) => {
                    if *value != d.value {
                        return Err(Disagreement {
                            height: d.height,
                            first: *first,
                            first_value: *value,
                            second: index,
                            second_value: d.value,
                        });
                    }
                    *count += 1;
                }
            }
        }
    }
    let shared_heights = by_height.values().filter(|(_, _, n)| *n > 1).count() as u64;
    Ok(Agreement {
        shared_heights,
        highest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(height: u64, value: u8) -> Decision {
        Decision {
            height,
            value: BlockHash([value; 32]),
            round: 0,
            signers: 3,
            latency: None,
        }
    }

    #[test]
    fn agreeing_validators_pass_and_a_fork_names_its_height() {
        let (a, b) = (Decisions::default(), Decisions::default());
        for h in 1..=3 {
            a.record(decision(h, h as u8));
            b.record(decision(h, h as u8));
        }
        b.record(decision(4, 4));
        let agreement = check_agreement(&[a.clone(), b.clone()]).unwrap();
        assert_eq!((agreement.shared_heights, agreement.highest), (3, 4));
        a.record(decision(4, 9));
        let fork = check_agreement(&[a, b]).unwrap_err();
        assert_eq!((fork.height, fork.first, fork.second), (4, 0, 1));
    }
}
