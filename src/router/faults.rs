//! Fault injection for tests (behind the `test-utils` feature): make the
//! router's own tasks panic, to prove that a panicking task is cleaned up
//! exactly like one that ended normally.

use std::sync::atomic::{AtomicU32, Ordering};

/// Panics to inject into a router's tasks. Get it from
/// [`RouterBuilder::faults`](crate::RouterBuilder::faults); each counter
/// makes that many of the next tasks of its kind panic as they start.
#[derive(Debug, Default)]
pub struct Faults {
    peer_tasks: AtomicU32,
    dials: AtomicU32,
    handshakes: AtomicU32,
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

impl Faults {
    /// The next `n` peer tasks panic once the peer is up.
    pub fn panic_peer_tasks(&self, n: u32) {
        self.peer_tasks.store(n, Ordering::Release);
    }

    /// The next `n` dial tasks panic before dialing.
    pub fn panic_dials(&self, n: u32) {
        self.dials.store(n, Ordering::Release);
    }

    /// The next `n` inbound handshake tasks panic before the handshake.
    pub fn panic_handshakes(&self, n: u32) {
        self.handshakes.store(n, Ordering::Release);
    }

    pub(crate) fn peer_task(&self) {
        if take(&self.peer_tasks) {
            panic!("injected fault: peer task");
        }
    }

    pub(crate) fn dial(&self) {
        if take(&self.dials) {
            panic!("injected fault: dial task");
        }
    }

    pub(crate) fn handshake(&self) {
        if take(&self.handshakes) {
            panic!("injected fault: handshake task");
        }
    }
}
