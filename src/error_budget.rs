//! How many minor errors one peer may cause, and how many log lines
//! something a peer controls may cause.
//!
//! A minor [`PeerError`](crate::PeerError) only lowers a peer's score, so a
//! peer sending nothing but undecodable messages would stay connected on a
//! node with free slots and make it log a line per message. Each connected
//! peer gets a budget of minor errors per window: the first of a window is
//! logged, the rest are counted (their number goes into the next window's
//! first line), and the one past the budget makes the error fatal. With an
//! unlimited budget the same count paces a log line alone (refused inbound
//! connections, in the router and in a transport's listener: one line per
//! window).

use std::time::Duration;

use tokio::time::Instant;

/// One peer's minor errors in the current window.
#[derive(Debug)]
pub(crate) struct ErrorBudget {
    window_start: Instant,
    count: u32,
    /// Errors of the window not logged.
    quiet: u32,
}

/// What to do about one more minor error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Charge {
    /// Log it; `quiet` errors of the last window went unlogged.
    Log { quiet: u32 },
    /// Count it without a log line.
    Quiet,
    /// The budget is spent: the error is fatal. `first` is true once per
    /// window, for the one log line that says so.
    Spent { first: bool },
}

impl ErrorBudget {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            count: 0,
            quiet: 0,
        }
    }

    /// Counts one minor error at `now`: `budget` are allowed per `window`.
    pub(crate) fn charge(&mut self, now: Instant, budget: u32, window: Duration) -> Charge {
        let mut quiet_before = 0;
        if now.duration_since(self.window_start) >= window {
            quiet_before = self.quiet;
            *self = Self::new(now);
        }
        self.count = self.count.saturating_add(1);
        if self.count > budget {
            return Charge::Spent {
                first: self.count == budget + 1,
            };
        }
        if self.count == 1 {
            return Charge::Log {
                quiet: quiet_before,
            };
        }
        self.quiet += 1;
        Charge::Quiet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_of_a_window_is_logged_the_rest_counted_and_the_excess_fatal() {
        let start = Instant::now();
        let window = Duration::from_secs(10);
        let mut b = ErrorBudget::new(start);
        assert_eq!(b.charge(start, 3, window), Charge::Log { quiet: 0 });
        assert_eq!(b.charge(start, 3, window), Charge::Quiet);
        assert_eq!(b.charge(start, 3, window), Charge::Quiet);
        assert_eq!(b.charge(start, 3, window), Charge::Spent { first: true });
        assert_eq!(b.charge(start, 3, window), Charge::Spent { first: false });
        // A new window starts afresh and says how many went unlogged.
        let later = start + window;
        assert_eq!(b.charge(later, 3, window), Charge::Log { quiet: 2 });
        assert_eq!(b.charge(later, 3, window), Charge::Quiet);
    }
}
