//! Slots per source: at most so many of something (handshakes, HTTP
//! connections) at once from one IPv4 address or one IPv6 /64, each slot
//! given back when its guard drops. The map holds only sources that have a
//! slot, so it is bounded by the slots taken.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::ip_key::IpKey;

/// At most `max` slots per source at once.
#[derive(Debug, Clone)]
pub struct SourceSlots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max: usize,
    counts: Mutex<HashMap<IpKey, usize>>,
}

/// One source's slot, given back when dropped.
#[derive(Debug)]
pub struct SourceSlot {
    inner: Arc<Inner>,
    key: IpKey,
}

impl SourceSlots {
    /// Slots for at most `max` at once per source.
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max,
                counts: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A slot for `ip`, or `None` when its source has `max` already.
    pub fn try_take(&self, ip: IpAddr) -> Option<SourceSlot> {
        let key = IpKey::from(ip);
        let mut counts = self.inner.lock();
        let count = counts.entry(key).or_insert(0);
        if *count >= self.inner.max {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            inner: self.inner.clone(),
            key,
        })
    }

    /// Sources holding a slot now.
    pub fn sources(&self) -> usize {
        self.inner.lock().len()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpKey, usize>> {
        // A panic elsewhere while holding it leaves counts that are still
        // whole numbers: keep going.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.inner.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn a_source_gets_at_most_its_slots_and_they_come_back() {
        let slots = SourceSlots::new(2);
        let a = slots.try_take(ip("10.0.0.1"));
        let b = slots.try_take(ip("10.0.0.1"));
        assert!(a.is_some() && b.is_some());
        assert!(slots.try_take(ip("10.0.0.1")).is_none());
        // One IPv6 /64 is one source.
        let _c = slots.try_take(ip("2001:db8::1"));
        let _d = slots.try_take(ip("2001:db8::2"));
        assert!(slots.try_take(ip("2001:db8::3")).is_none());
        drop((a, b));
        assert_eq!(slots.sources(), 1, "a source without slots leaves the map");
        assert!(slots.try_take(ip("10.0.0.1")).is_some());
    }
}
