//! Maps the tokio clock (pausable in tests) to the wall-clock times the
//! peer manager works in and persists.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Maps the tokio clock (pausable in tests) to the wall-clock times the
/// peer manager persists.
pub(super) struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    pub(super) fn new() -> Self {
        Self {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    pub(super) fn now(&self) -> SystemTime {
        self.wall + self.mono.elapsed()
    }

    pub(super) fn instant(&self, t: SystemTime) -> Instant {
        self.mono + t.duration_since(self.wall).unwrap_or(Duration::ZERO)
    }
}
