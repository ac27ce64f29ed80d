//! The wait an accept loop keeps between failed accepts.

/// How long an accept loop waits after a failed `accept()` before trying
/// again. Errors such as EMFILE persist until something frees a file
/// descriptor, and the listener stays readable meanwhile: retrying at once
/// would spin a core and flood the log. The wait doubles from 5 ms up to
/// 1 s and starts over after a success.
#[derive(Debug, Clone)]
pub struct AcceptBackoff {
    next: std::time::Duration,
}

impl AcceptBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(5);
    const MAX: std::time::Duration = std::time::Duration::from_secs(1);

    /// A backoff with no failure yet.
    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The wait after one more failure in a row.
    pub fn failed(&mut self) -> std::time::Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }

    /// An accept succeeded: the next failure waits the least again.
    pub fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_cap_and_resets_on_success() {
        let mut b = AcceptBackoff::new();
        let waits: Vec<_> = (0..10).map(|_| b.failed().as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed().as_millis(), 5);
    }
}
