//! Random event sequences against the peer manager's invariants.

use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;
use crate::peer_store::MemoryPeerStore;

#[derive(Debug, Clone)]
enum Event {
    Add(u8),
    DialNext,
    Dialed(u8),
    DialFailed(u8),
    Accepted(u8),
    Ready(u8),
    Disconnected(u8),
    Errored(u8),
    EvictNext,
    Advance(u16),
    AdjustScore(u8, i16),
}

fn event() -> impl Strategy<Value = Event> {
    // Ids 0..12: 0 is this node; 1 and 2 are persistent.
    let peer = 0u8..12;
    prop_oneof![
        peer.clone().prop_map(Event::Add),
        Just(Event::DialNext),
        peer.clone().prop_map(Event::Dialed),
        peer.clone().prop_map(Event::DialFailed),
        peer.clone().prop_map(Event::Accepted),
        peer.clone().prop_map(Event::Ready),
        peer.clone().prop_map(Event::Disconnected),
        peer.clone().prop_map(Event::Errored),
        Just(Event::EvictNext),
        (0u16..2000).prop_map(Event::Advance),
        (peer, any::<i16>()).prop_map(|(p, d)| Event::AdjustScore(p, d)),
    ]
}

use super::tests::{addr, id};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_random_events(
        events in proptest::collection::vec(event(), 1..200),
        max_connected in 1usize..5,
        upgrade in 0usize..3,
        seed in any::<u64>(),
    ) {
        let options = PeerManagerOptions {
            persistent_peers: vec![addr(1), addr(2)],
            max_connected: max_connected.max(2),
            max_connected_upgrade: upgrade,
            max_peers: max_connected.max(2) + upgrade + 2,
            disconnect_cooldown: Duration::from_millis(100),
            ..PeerManagerOptions::default()
        };
        let max = options.max_connected + options.max_connected_upgrade;
        let mut m = PeerManager::new(id(0), options, MemoryPeerStore::new(), seed).unwrap();
        let mut now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut evicting = HashSet::new();
        for e in events {
            match e {
                Event::Add(n) => { let _ = m.add(addr(n)); }
                Event::DialNext => {
                    if let Some(a) = m.dial_next(now) {
                        prop_assert_ne!(a.node_id(), id(0), "never dial self");
                    }
                }
                Event::Dialed(n) => { let _ = m.dialed(now, &addr(n)); }
                Event::DialFailed(n) => m.dial_failed(now, &addr(n)),
                Event::Accepted(n) => { let _ = m.accepted(now, id(n)); }
                Event::Ready(n) => m.ready(id(n), vec![], crate::address::Protocol::Memory),
                Event::Disconnected(n) => { m.disconnected(now, id(n)); evicting.remove(&id(n)); }
                Event::Errored(n) => m.errored(id(n)),
                Event::EvictNext => {
                    if let Some(p) = m.evict_next() {
                        prop_assert!(m.connected.contains_key(&p), "evicts only connected peers");
                        prop_assert!(evicting.insert(p), "never evicts a peer twice");
                    }
                }
                Event::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
                Event::AdjustScore(n, d) => m.adjust_score(id(n), d),
            }
            m.check_index();
            prop_assert!(m.limited_occupied() <= max, "connected + dialing <= max + upgrade");
            prop_assert!(!m.connected.contains_key(&id(0)), "never connected to self");
            prop_assert!(!m.peers.contains_key(&id(0)), "self never stored");
            prop_assert!(m.peers.contains_key(&id(1)) && m.peers.contains_key(&id(2)),
                "persistent peers never pruned");
            prop_assert!(m.peers.len() <= m.options.max_peers
                || m.peers.keys().all(|p| m.connected.contains_key(p)
                    || m.dialing.contains(p) || m.persistent.contains(p)),
                "store within max_peers unless everything left is pinned");
            for p in m.connected.keys() {
                prop_assert!(m.peers.contains_key(p), "connected peers stay in the store");
            }
            prop_assert!(m.ready.iter().all(|p| m.connected.contains_key(p)));
            // One connection per peer is structural (a map); the admission
            // rule behind it is that a second admit is refused:
            for p in m.connected.keys().copied().collect::<Vec<_>>() {
                prop_assert_eq!(m.accepted(now, p), Err(AdmitError::AlreadyConnected(p)));
            }
            if let Some(w) = m.next_wakeup(now) {
                prop_assert!(w >= now, "wakeups are never in the past");
            }
        }
    }

    #[test]
    fn next_wakeup_now_means_dial_next_or_evict_next_acts(
        events in proptest::collection::vec(event(), 1..100),
        seed in any::<u64>(),
    ) {
        let options = PeerManagerOptions {
            max_connected: 3,
            max_connected_upgrade: 1,
            max_peers: 8,
            ..PeerManagerOptions::default()
        };
        let mut m = PeerManager::new(id(0), options, MemoryPeerStore::new(), seed).unwrap();
        let mut now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for e in events {
            match e {
                Event::Add(n) => { let _ = m.add(addr(n)); }
                Event::Dialed(n) => { let _ = m.dialed(now, &addr(n)); }
                Event::DialFailed(n) => m.dial_failed(now, &addr(n)),
                Event::Accepted(n) => { let _ = m.accepted(now, id(n)); }
                Event::Disconnected(n) => m.disconnected(now, id(n)),
                Event::Errored(n) => m.errored(id(n)),
                Event::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
                _ => {}
            }
            m.check_index();
            match m.next_wakeup(now) {
                Some(w) => {
                    // Jump to the wakeup: something must then be actionable.
                    m.expire_transient(w);
                    let acted = m.evict_next().is_some() || m.dial_next(w).is_some();
                    prop_assert!(acted, "wakeup at {:?} led to no action", w);
                    now = w;
                }
                None => {
                    // No wakeup: nothing becomes dialable however long we
                    // wait (the probe may run the index ahead of `now`).
                    let later = now + Duration::from_secs(86_400);
                    prop_assert!(m.dial_next(later).is_none(), "a due dial was missed");
                }
            }
            m.check_index();
        }
    }
}
