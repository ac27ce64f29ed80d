//! Peer manager transitions, one test per rule, on a hand-advanced clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::peer_store::{AddressRecord, MemoryPeerStore, PeerRecord};

const SEED: u64 = 7;

fn t(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn id(n: u8) -> NodeId {
    NodeId::from_bytes([n; 20])
}

pub(super) fn addr(n: u8) -> PeerAddress {
    format!("quic://{}@127.0.0.1:{}", id(n), 1000 + u16::from(n))
        .parse()
        .unwrap()
}

fn addr2(n: u8) -> PeerAddress {
    format!("mconn://{}@localhost:{}", id(n), 2000 + u16::from(n))
        .parse()
        .unwrap()
}

const SELF: u8 = 0;

/// Deterministic options: no jitter, no cooldown, 100 ms retry step.
fn opts() -> PeerManagerOptions {
    PeerManagerOptions {
        retry_time_jitter: Duration::ZERO,
        disconnect_cooldown: Duration::ZERO,
        min_retry_time: ms(100),
        max_retry_time: ms(1000),
        max_retry_time_persistent: ms(300),
        // Refusals when full are tested as such; transient visitors have
        // their own tests.
        max_transient: 0,
        ..PeerManagerOptions::default()
    }
}

fn manager(options: PeerManagerOptions) -> PeerManager {
    PeerManager::new(id(SELF), options, MemoryPeerStore::new(), SEED).unwrap()
}

fn limited(max_connected: usize, upgrade: usize) -> PeerManagerOptions {
    PeerManagerOptions {
        max_connected,
        max_connected_upgrade: upgrade,
        max_peers: 0,
        ..opts()
    }
}

fn scored(scores: &[(u8, i16)], base: PeerManagerOptions) -> PeerManagerOptions {
    let mut o = base;
    for &(n, s) in scores {
        o.peer_scores.insert(id(n), PeerScore(s));
    }
    o
}

/// Adds, dials and connects `n` at `now`.
fn connect_out(m: &mut PeerManager, n: u8) {
    m.add(addr(n)).unwrap();
    m.dialed(t(0), &addr(n)).unwrap();
}

fn updates(m: &mut PeerManager) -> Vec<PeerUpdate> {
    std::iter::from_fn(|| m.take_update()).collect()
}

// ----- Options ----------------------------------------------------------------

#[test]
fn options_validate_table() {
    let me = id(SELF);
    let base = PeerManagerOptions::default;
    let cases: Vec<(PeerManagerOptions, Result<(), OptionsError>)> = vec![
        (base(), Ok(())),
        (
            PeerManagerOptions {
                persistent_peers: vec![addr(1), addr(2), addr2(2)],
                max_connected: 1,
                max_peers: 0,
                ..base()
            },
            Err(OptionsError::TooManyPersistentPeers {
                persistent: 2,
                max_connected: 1,
            }),
        ),
        (
            PeerManagerOptions {
                persistent_peers: vec![addr(1), addr2(1)],
                max_connected: 1,
                max_connected_upgrade: 0,
                max_peers: 1,
                ..base()
            },
            Ok(()),
        ),
        (
            PeerManagerOptions {
                max_connected: 0,
                max_peers: 10,
                ..base()
            },
            Err(OptionsError::MaxPeersWithoutMaxConnected),
        ),
        (
            PeerManagerOptions {
                max_connected: 10,
                max_connected_upgrade: 2,
                max_peers: 11,
                ..base()
            },
            Err(OptionsError::MaxPeersTooSmall {
                max_peers: 11,
                needed: 12,
            }),
        ),
        (
            PeerManagerOptions {
                min_retry_time: ms(500),
                max_retry_time: ms(100),
                ..base()
            },
            Err(OptionsError::MinRetryAboveMax {
                min: ms(500),
                max: ms(100),
                which: "max_retry_time",
            }),
        ),
        (
            PeerManagerOptions {
                min_retry_time: Duration::ZERO,
                max_retry_time: ms(100),
                ..base()
            },
            Err(OptionsError::MaxRetryWithoutMinRetry),
        ),
        (
            PeerManagerOptions {
                min_retry_time: Duration::ZERO,
                max_retry_time: Duration::ZERO,
                max_retry_time_persistent: Duration::ZERO,
                ..base()
            },
            Ok(()),
        ),
        (
            PeerManagerOptions {
                max_outgoing: 65,
                ..base()
            },
            Err(OptionsError::MaxOutgoingAboveMaxConnected {
                max_outgoing: 65,
                max_connected: 64,
            }),
        ),
        (
            PeerManagerOptions {
                target_connected: 65,
                ..base()
            },
            Err(OptionsError::TargetAboveMaxConnected {
                target_connected: 65,
                max_connected: 64,
            }),
        ),
        (
            PeerManagerOptions {
                persistent_peers: vec![addr(SELF)],
                ..base()
            },
            Err(OptionsError::SelfAsPersistentPeer(me)),
        ),
        (
            PeerManagerOptions {
                self_address: Some(addr(1)),
                ..base()
            },
            Err(OptionsError::SelfAddressMismatch {
                expected: me,
                found: id(1),
            }),
        ),
        (
            PeerManagerOptions {
                max_connected: 0,
                max_peers: 0,
                ..base()
            },
            Ok(()),
        ),
    ];
    for (i, (options, expected)) in cases.into_iter().enumerate() {
        assert_eq!(options.validate(me), expected, "case {i}");
    }
}

#[test]
fn new_rejects_invalid_options() {
    let bad = PeerManagerOptions {
        max_connected: 0,
        max_peers: 5,
        ..opts()
    };
    let err = PeerManager::new(id(SELF), bad, MemoryPeerStore::new(), SEED).unwrap_err();
    assert!(matches!(
        err,
        PeerManagerError::Options(OptionsError::MaxPeersWithoutMaxConnected)
    ));
}

// ----- Persistence ---------------------------------------------------------------

#[test]
fn flush_then_reopen_round_trips_peers() {
    let store = MemoryPeerStore::new();
    let mut m = PeerManager::new(id(SELF), opts(), store.clone(), SEED).unwrap();
    m.add(addr(1)).unwrap();
    m.add(addr2(1)).unwrap();
    m.add(addr(2)).unwrap();
    m.dial_next(t(0)).unwrap();
    m.dial_failed(t(5), &addr(1));
    m.flush().unwrap();
    drop(m);

    let mut m = PeerManager::new(id(SELF), opts(), store, SEED).unwrap();
    assert_eq!(m.addresses(id(1)), vec![addr(1), addr2(1)]);
    assert_eq!(m.addresses(id(2)), vec![addr(2)]);
    // The failure survived: peer 1 ranks below peer 2 now.
    assert_eq!(m.peers(), vec![id(2), id(1)]);
    assert_eq!(m.score(id(1)), Some(PeerScore(-1)));
}

#[test]
fn reopen_recomputes_scores_from_new_options() {
    let store = MemoryPeerStore::new();
    let mut m =
        PeerManager::new(id(SELF), scored(&[(1, 50)], opts()), store.clone(), SEED).unwrap();
    m.add(addr(1)).unwrap();
    m.add(addr(2)).unwrap();
    assert_eq!(m.score(id(1)), Some(PeerScore(50)));
    m.flush().unwrap();
    drop(m);

    let m = PeerManager::new(id(SELF), scored(&[(2, 9)], opts()), store, SEED).unwrap();
    assert_eq!(m.score(id(1)), Some(PeerScore(0)));
    assert_eq!(m.score(id(2)), Some(PeerScore(9)));
}

#[test]
fn reopen_removes_self_id_from_store() {
    let store = MemoryPeerStore::new();
    let mut record = PeerRecord::new(id(SELF));
    record.addresses.push(AddressRecord::new(addr(SELF)));
    store
        .clone()
        .write(&[record, PeerRecord::new(id(1))], &[])
        .unwrap();

    let mut m = PeerManager::new(id(SELF), opts(), store.clone(), SEED).unwrap();
    assert_eq!(m.peers(), vec![id(1)]);
    m.flush().unwrap();
    assert_eq!(
        store.len(),
        1,
        "self record deleted from the store on flush"
    );
}

#[test]
fn reopen_prunes_to_max_peers() {
    let store = MemoryPeerStore::new();
    let mut m = PeerManager::new(id(SELF), limited(0, 0), store.clone(), SEED).unwrap();
    for n in 1..=10 {
        m.add(addr(n)).unwrap();
    }
    m.flush().unwrap();
    drop(m);
    let options = PeerManagerOptions {
        max_connected: 3,
        max_connected_upgrade: 1,
        max_peers: 4,
        ..opts()
    };
    let mut m = PeerManager::new(id(SELF), options, store.clone(), SEED).unwrap();
    assert_eq!(m.peers().len(), 4);
    m.flush().unwrap();
    assert_eq!(store.len(), 4);
}

#[test]
fn reopen_skips_corrupt_records_and_counts_them() {
    let store = MemoryPeerStore::new();
    store.clone().write(&[PeerRecord::new(id(1))], &[]).unwrap();
    store.insert_raw(vec![9; 20], vec![0xde, 0xad, 0xbe, 0xef]);
    let mut m = PeerManager::new(id(SELF), opts(), store, SEED).unwrap();
    assert_eq!(m.corrupt_records(), 1);
    assert_eq!(m.peers(), vec![id(1)]);
}

#[test]
fn flush_failure_is_returned_and_retried() {
    let store = MemoryPeerStore::new();
    let mut m = PeerManager::new(id(SELF), opts(), store.clone(), SEED).unwrap();
    store.set_fail_writes(true);
    m.add(addr(1)).unwrap();
    assert!(matches!(m.flush(), Err(StoreError::Write(_))));
    assert!(store.is_empty());
    store.set_fail_writes(false);
    m.flush().unwrap();
    assert_eq!(store.len(), 1, "the change survived the failed flush");
}

#[test]
fn new_adds_persistent_peers_and_reactivates_them() {
    let store = MemoryPeerStore::new();
    let mut m = PeerManager::new(id(SELF), opts(), store.clone(), SEED).unwrap();
    m.add(addr(1)).unwrap();
    m.inactivate(id(1));
    m.flush().unwrap();
    drop(m);
    let options = PeerManagerOptions {
        persistent_peers: vec![addr(1), addr(2)],
        ..opts()
    };
    let m = PeerManager::new(id(SELF), options, store, SEED).unwrap();
    assert!(!m.is_inactive(id(1)));
    assert_eq!(m.addresses(id(2)), vec![addr(2)]);
    assert_eq!(m.score(id(2)), Some(PeerScore::PERSISTENT));
}

// ----- Add ----------------------------------------------------------------------

#[test]
fn add_new_address_returns_true_and_duplicate_false() {
    let mut m = manager(opts());
    assert_eq!(m.add(addr(1)), Ok(true));
    assert_eq!(m.add(addr(1)), Ok(false));
    assert_eq!(m.add(addr2(1)), Ok(true));
    assert_eq!(m.addresses(id(1)), vec![addr(1), addr2(1)]);
}

#[test]
fn add_self_is_error() {
    let mut m = manager(opts());
    assert_eq!(m.add(addr(SELF)), Err(AddError::SelfAddress));
    assert!(m.peers().is_empty());
}

#[test]
fn add_inactive_peer_is_ignored() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    assert!(m.inactivate(id(1)));
    assert_eq!(m.add(addr2(1)), Ok(false));
    assert_eq!(m.addresses(id(1)), vec![addr(1)]);
}

#[test]
fn add_prunes_lowest_ranked_when_over_max_peers() {
    let options = PeerManagerOptions {
        max_connected: 2,
        max_connected_upgrade: 0,
        max_peers: 2,
        ..scored(&[(1, 5), (2, 3), (3, 4)], opts())
    };
    let mut m = manager(options);
    m.add(addr(1)).unwrap();
    m.add(addr(2)).unwrap();
    assert_eq!(m.add(addr(3)), Ok(true), "3 outranks 2, which is pruned");
    assert_eq!(m.peers(), vec![id(1), id(3)]);
    assert_eq!(m.add(addr(4)), Ok(false), "4 (score 0) is pruned at once");
    assert_eq!(m.peers(), vec![id(1), id(3)]);
}

#[test]
fn add_never_prunes_persistent_or_connected_peers() {
    let options = PeerManagerOptions {
        max_connected: 2,
        max_connected_upgrade: 0,
        max_peers: 2,
        persistent_peers: vec![addr(1)],
        ..scored(&[(3, 10), (4, 10)], opts())
    };
    let mut m = manager(options);
    connect_out(&mut m, 2);
    m.add(addr(3)).unwrap();
    m.add(addr(4)).unwrap();
    let peers = m.peers();
    assert!(peers.contains(&id(1)), "persistent kept");
    assert!(
        peers.contains(&id(2)),
        "connected kept despite its low score"
    );
    assert_eq!(peers.len(), 2);
}

#[test]
fn add_caps_addresses_per_peer() {
    let mut m = manager(opts());
    let a =
        |port: u16| -> PeerAddress { format!("quic://{}@10.0.0.1:{port}", id(1)).parse().unwrap() };
    for port in 1..=MAX_ADDRESSES_PER_PEER as u16 {
        assert_eq!(m.add(a(port)), Ok(true));
    }
    assert_eq!(m.add(a(999)), Ok(false), "full list of healthy addresses");
    // A failed address makes room for a new one.
    m.dial_next(t(0)).unwrap();
    m.dial_failed(t(0), &a(1));
    assert_eq!(m.add(a(999)), Ok(true));
    assert!(!m.addresses(id(1)).contains(&a(1)));
    assert_eq!(m.addresses(id(1)).len(), MAX_ADDRESSES_PER_PEER);
}

#[test]
fn add_wakes_dialer_at_once() {
    let mut m = manager(opts());
    assert_eq!(m.next_wakeup(t(0)), None);
    m.add(addr(1)).unwrap();
    assert_eq!(m.next_wakeup(t(0)), Some(t(0)));
}

// ----- Dialing ------------------------------------------------------------------

#[test]
fn dial_next_returns_highest_ranked_first() {
    let mut m = manager(scored(&[(2, 9), (3, 5)], opts()));
    for n in 1..=3 {
        m.add(addr(n)).unwrap();
    }
    assert_eq!(m.dial_next(t(0)), Some(addr(2)));
    assert_eq!(m.dial_next(t(0)), Some(addr(3)));
    assert_eq!(m.dial_next(t(0)), Some(addr(1)));
    assert_eq!(m.dial_next(t(0)), None);
}

#[test]
fn dial_next_skips_connected_and_dialing_peers() {
    let mut m = manager(opts());
    connect_out(&mut m, 1);
    m.add(addr(2)).unwrap();
    assert_eq!(m.dial_next(t(0)), Some(addr(2)));
    assert_eq!(m.status(id(2)), PeerStatus::Dialing);
    assert_eq!(m.dial_next(t(0)), None);
}

#[test]
fn dial_next_returns_nothing_when_full() {
    let mut m = manager(limited(1, 0));
    connect_out(&mut m, 1);
    m.add(addr(2)).unwrap();
    assert_eq!(m.dial_next(t(0)), None);
    assert_eq!(m.next_wakeup(t(0)), None, "only an event can free a slot");
}

#[test]
fn dial_next_counts_dials_against_the_upgrade_ceiling() {
    let mut m = manager(limited(1, 1));
    for n in 1..=3 {
        m.add(addr(n)).unwrap();
    }
    assert!(m.dial_next(t(0)).is_some());
    assert!(m.dial_next(t(0)).is_some());
    assert_eq!(
        m.dial_next(t(0)),
        None,
        "connected + dialing at max + upgrade"
    );
}

#[test]
fn dial_next_returns_nothing_in_cooldown_and_next_wakeup_says_when() {
    let mut m = manager(PeerManagerOptions {
        disconnect_cooldown: ms(500),
        ..opts()
    });
    connect_out(&mut m, 1);
    m.disconnected(t(100), id(1));
    assert_eq!(m.dial_next(t(200)), None);
    assert_eq!(m.next_wakeup(t(200)), Some(t(600)));
    assert_eq!(m.dial_next(t(600)), Some(addr(1)));
}

#[test]
fn dial_next_returns_nothing_in_backoff_and_next_wakeup_says_when() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    m.dial_next(t(0)).unwrap();
    m.dial_failed(t(10), &addr(1));
    assert_eq!(m.dial_next(t(50)), None);
    assert_eq!(m.next_wakeup(t(50)), Some(t(110)));
    assert_eq!(m.dial_next(t(109)), None);
    assert_eq!(m.dial_next(t(110)), Some(addr(1)));
}

/// `opts()` with at most `max` dials of new peers at once.
fn new_dials(max: usize) -> PeerManagerOptions {
    PeerManagerOptions {
        max_dialing_new: max,
        ..opts()
    }
}

#[test]
fn dials_of_new_peers_are_capped_and_leave_room_for_a_proven_one() {
    let mut m = manager(new_dials(2));
    // A peer we were connected to, whose connection failed at once: it
    // now ranks below addresses never dialed.
    connect_out(&mut m, 1);
    m.disconnected(t(0), id(1));
    for n in 2..=6 {
        m.add(addr(n)).unwrap();
    }
    assert!(m.score_of(&id(1)) < m.score_of(&id(2)));
    let first = m.dial_next(t(2000)).unwrap();
    let second = m.dial_next(t(2000)).unwrap();
    assert!(first.node_id() != id(1) && second.node_id() != id(1));
    assert_eq!(
        m.dial_next(t(2000)),
        Some(addr(1)),
        "two new dials at once: the proven peer goes next"
    );
    assert_eq!(m.dial_next(t(2000)), None, "no third new dial");
    assert_eq!(
        m.next_wakeup(t(2000)),
        None,
        "only a dial ending frees a slot for a new peer"
    );
    m.dial_failed(t(2050), &first);
    assert!(m.dial_next(t(2050)).is_some_and(|a| a.node_id() != id(1)));
    m.check_index();
}

#[test]
fn configured_peers_are_never_counted_as_new() {
    let mut m = manager(PeerManagerOptions {
        persistent_peers: vec![addr(1)],
        unconditional_peers: [id(2)].into(),
        ..new_dials(1)
    });
    m.add(addr(2)).unwrap();
    m.add(addr(3)).unwrap();
    m.add(addr(4)).unwrap();
    let dialed: Vec<PeerAddress> = std::iter::from_fn(|| m.dial_next(t(0))).collect();
    assert_eq!(
        dialed.len(),
        3,
        "persistent, unconditional and one new: {dialed:?}"
    );
    assert!(dialed.contains(&addr(1)) && dialed.contains(&addr(2)));
    m.check_index();
}

#[test]
fn no_cap_on_new_dials_when_zero() {
    let mut m = manager(new_dials(0));
    for n in 1..=10 {
        m.add(addr(n)).unwrap();
    }
    assert_eq!(std::iter::from_fn(|| m.dial_next(t(0))).count(), 10);
}

#[test]
fn dial_next_respects_max_outgoing() {
    let mut m = manager(PeerManagerOptions {
        max_outgoing: 2,
        ..opts()
    });
    for n in 1..=4 {
        m.add(addr(n)).unwrap();
    }
    let first = m.dial_next(t(0)).unwrap();
    m.dialed(t(0), &first).unwrap();
    assert!(m.dial_next(t(0)).is_some());
    assert_eq!(m.dial_next(t(0)), None, "one outgoing + one dialing = max");
    // Inbound connections do not count against max_outgoing.
    m.accepted(t(0), id(9)).unwrap();
    m.disconnected(t(0), first.node_id());
    assert!(m.dial_next(t(0)).is_some());
}

#[test]
fn at_its_target_a_node_stops_dialing_but_admits_up_to_the_maximum() {
    let mut m = manager(PeerManagerOptions {
        target_connected: 2,
        ..limited(4, 0)
    });
    for n in 1..=5 {
        m.add(addr(n)).unwrap();
    }
    let mut dialed = Vec::new();
    for _ in 0..2 {
        let next = m.dial_next(t(0)).unwrap();
        m.dialed(t(0), &next).unwrap();
        dialed.push(next.node_id());
    }
    assert_eq!(m.dial_next(t(0)), None, "two connected: at the target");
    assert_eq!(m.next_wakeup(t(0)), None);
    // Peers that dial us are still admitted, up to the maximum.
    m.accepted(t(0), id(8)).unwrap();
    m.accepted(t(0), id(9)).unwrap();
    assert_eq!(m.accepted(t(0), id(10)), Err(AdmitError::Full));
    // Below the target again, the node dials.
    for peer in [id(8), id(9)] {
        m.disconnected(t(0), peer);
    }
    m.disconnected(t(0), dialed[0]);
    assert!(
        m.dial_next(t(0)).is_some(),
        "one connected: below the target"
    );
}

#[test]
fn dial_next_skips_inactive_peers() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    m.inactivate(id(1));
    assert_eq!(m.dial_next(t(0)), None);
    assert_eq!(m.next_wakeup(t(0)), None);
}

#[test]
fn dial_next_prefers_the_address_with_fewer_failures() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    m.add(addr2(1)).unwrap();
    assert_eq!(m.dial_next(t(0)), Some(addr(1)));
    m.dial_failed(t(0), &addr(1));
    assert_eq!(
        m.dial_next(t(0)),
        Some(addr2(1)),
        "the other address is due now"
    );
}

#[test]
fn dial_next_upgrade_reserves_a_lower_scored_victim() {
    let mut m = manager(scored(&[(1, 1), (2, 2), (3, 10)], limited(2, 1)));
    connect_out(&mut m, 1);
    connect_out(&mut m, 2);
    m.add(addr(3)).unwrap();
    assert_eq!(m.dial_next(t(0)), Some(addr(3)));
    assert_eq!(m.upgrading.get(&id(1)), Some(&id(3)));
    m.add(addr(4)).unwrap();
    assert_eq!(m.dial_next(t(0)), None, "score 0 cannot upgrade anyone");
}

#[test]
fn accepted_upgrade_candidate_uses_its_own_reservation() {
    // b is being dialed as an upgrade over a, and connects inbound first.
    let mut m = manager(scored(&[(1, 1), (2, 5)], limited(1, 2)));
    m.accepted(t(0), id(1)).unwrap();
    m.add(addr(2)).unwrap();
    assert_eq!(m.dial_next(t(0)), Some(addr(2)));
    assert_eq!(m.accepted(t(0), id(2)), Ok(()));
    assert_eq!(m.evict_next(), Some(id(1)));
    assert!(m.upgrading.is_empty(), "the reservation is used up");
    // The dial that was still out finds the peer connected.
    assert_eq!(
        m.dialed(t(0), &addr(2)),
        Err(AdmitError::AlreadyConnected(id(2)))
    );
}

#[test]
fn dial_next_without_lower_scored_peer_does_not_upgrade() {
    let mut m = manager(scored(&[(1, 5), (2, 5), (3, 5)], limited(2, 1)));
    connect_out(&mut m, 1);
    connect_out(&mut m, 2);
    m.add(addr(3)).unwrap();
    assert_eq!(m.dial_next(t(0)), None, "equal scores never upgrade");
}

#[test]
fn dial_failed_retry_schedule_grows_linearly_and_caps() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    let mut now = 0;
    let mut waits = Vec::new();
    for _ in 0..12 {
        assert_eq!(m.dial_next(t(now)), Some(addr(1)));
        m.dial_failed(t(now), &addr(1));
        let wake = m.next_wakeup(t(now)).unwrap();
        let wait = wake.duration_since(t(now)).unwrap();
        waits.push(wait.as_millis());
        now += u64::try_from(wait.as_millis()).unwrap();
    }
    assert_eq!(
        waits,
        [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1000, 1000]
    );
}

#[test]
fn dial_failed_persistent_peer_uses_its_own_cap_and_is_retried_forever() {
    let mut m = manager(PeerManagerOptions {
        persistent_peers: vec![addr(1)],
        ..opts()
    });
    let mut now = 0;
    for _ in 0..50 {
        assert_eq!(m.dial_next(t(now)), Some(addr(1)));
        m.dial_failed(t(now), &addr(1));
        let wake = m.next_wakeup(t(now)).unwrap();
        assert!(wake <= t(now + 300), "persistent cap of 300 ms");
        now += 300;
    }
}

#[test]
fn dial_failed_with_zero_min_retry_disables_retries() {
    let mut m = manager(PeerManagerOptions {
        min_retry_time: Duration::ZERO,
        max_retry_time: Duration::ZERO,
        max_retry_time_persistent: Duration::ZERO,
        ..opts()
    });
    m.add(addr(1)).unwrap();
    m.dial_next(t(0)).unwrap();
    m.dial_failed(t(0), &addr(1));
    assert_eq!(m.dial_next(t(1_000_000)), None);
    assert_eq!(m.next_wakeup(t(0)), None);
}

#[test]
fn dial_failed_jitter_is_seeded_and_bounded() {
    let wake = |seed| {
        let options = PeerManagerOptions {
            retry_time_jitter: ms(1000),
            ..opts()
        };
        let mut m = PeerManager::new(id(SELF), options, MemoryPeerStore::new(), seed).unwrap();
        m.add(addr(1)).unwrap();
        m.dial_next(t(0)).unwrap();
        m.dial_failed(t(0), &addr(1));
        m.next_wakeup(t(0)).unwrap()
    };
    assert_eq!(wake(1), wake(1), "same seed, same schedule");
    for seed in 0..20 {
        let w = wake(seed);
        assert!(w >= t(100) && w <= t(1000), "min retry + jitter, capped");
    }
}

#[test]
fn dial_failed_releases_the_upgrade_reservation() {
    let mut m = manager(scored(&[(1, 1), (3, 10)], limited(1, 1)));
    connect_out(&mut m, 1);
    m.add(addr(3)).unwrap();
    assert_eq!(m.dial_next(t(0)), Some(addr(3)));
    m.dial_failed(t(0), &addr(3));
    assert!(m.upgrading.is_empty());
    assert_eq!(m.evict_next(), None);
}

#[test]
fn dial_failed_lowers_the_score() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    m.add(addr(2)).unwrap();
    assert_eq!(m.dial_next(t(0)), Some(addr(1)));
    m.dial_failed(t(0), &addr(1));
    assert_eq!(m.score(id(1)), Some(PeerScore(-1)));
    assert_eq!(m.peers(), vec![id(2), id(1)]);
}

#[test]
fn dial_failed_for_unknown_address_only_clears_dialing() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    m.dial_next(t(0)).unwrap();
    m.dial_failed(t(0), &addr2(1));
    assert_eq!(m.status(id(1)), PeerStatus::Down);
    assert_eq!(m.score(id(1)), Some(PeerScore(0)));
}

// ----- Dialed -------------------------------------------------------------------

#[test]
fn dialed_self_is_error() {
    let mut m = manager(opts());
    assert_eq!(m.dialed(t(0), &addr(SELF)), Err(AdmitError::SelfConnection));
}

#[test]
fn dialed_already_connected_is_error() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    m.accepted(t(0), id(1)).unwrap();
    assert_eq!(
        m.dialed(t(0), &addr(1)),
        Err(AdmitError::AlreadyConnected(id(1)))
    );
    assert_eq!(m.status(id(1)), PeerStatus::Connected(Direction::Inbound));
}

#[test]
fn dialed_when_full_without_reservation_is_refused() {
    let mut m = manager(limited(1, 1));
    m.add(addr(1)).unwrap();
    m.add(addr(2)).unwrap();
    let a = m.dial_next(t(0)).unwrap();
    let b = m.dial_next(t(0)).unwrap();
    m.dialed(t(0), &a).unwrap();
    assert_eq!(m.dialed(t(0), &b), Err(AdmitError::Full));
    assert_eq!(m.status(b.node_id()), PeerStatus::Down);
}

#[test]
fn dialed_when_full_evicts_lowest_scored() {
    let mut m = manager(scored(&[(1, 1), (2, 2), (3, 10)], limited(2, 1)));
    connect_out(&mut m, 2);
    connect_out(&mut m, 1);
    m.add(addr(3)).unwrap();
    assert_eq!(m.dial_next(t(0)), Some(addr(3)));
    m.dialed(t(0), &addr(3)).unwrap();
    assert_eq!(m.next_wakeup(t(0)), Some(t(0)));
    assert_eq!(m.evict_next(), Some(id(1)));
    assert_eq!(m.evict_next(), None);
    m.disconnected(t(0), id(1));
    assert_eq!(m.connected_count(), 2);
}

#[test]
fn dialed_upgrade_evicts_an_even_lower_peer_that_appeared_meanwhile() {
    let options = PeerManagerOptions {
        unconditional_peers: [id(9)].into(),
        ..scored(&[(1, 5), (2, 5), (3, 10), (4, -3)], limited(2, 2))
    };
    let mut m = manager(options);
    connect_out(&mut m, 1);
    connect_out(&mut m, 2);
    m.add(addr(3)).unwrap();
    assert_eq!(m.dial_next(t(0)), Some(addr(3)));
    // While 3 is dialing, peer 1 leaves and the low-scored 4 takes its slot.
    m.disconnected(t(0), id(1));
    m.accepted(t(0), id(4)).unwrap();
    m.dialed(t(0), &addr(3)).unwrap();
    assert_eq!(m.evict_next(), Some(id(4)));
}

#[test]
fn dialed_reactivates_and_a_connection_that_lasts_resets_failures() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    m.dial_next(t(0)).unwrap();
    m.dial_failed(t(0), &addr(1));
    m.inactivate(id(1));
    m.dialed(t(200), &addr(1)).unwrap();
    assert!(!m.is_inactive(id(1)));
    m.disconnected(t(3200), id(1));
    assert_eq!(m.score(id(1)), Some(PeerScore(0)));
}

#[test]
fn repeated_short_visits_back_off_like_failed_dials() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    let mut at = 0;
    let mut gaps = Vec::new();
    for _ in 0..4 {
        let due = (at..)
            .step_by(10)
            .take(1000)
            .find(|&ms| m.dial_next(t(ms)).is_some());
        let due = due.unwrap_or_else(|| unreachable!());
        gaps.push(due - at);
        m.dialed(t(due), &addr(1)).unwrap();
        m.disconnected(t(due + 10), id(1));
        at = due + 10;
    }
    // Each visit ends as a failure on top of the last: the waits grow.
    assert!(gaps.windows(2).skip(1).all(|w| w[1] > w[0]), "{gaps:?}");
}

#[test]
fn dialed_unknown_peer_is_added_to_the_store() {
    let mut m = manager(opts());
    m.dialed(t(0), &addr(5)).unwrap();
    assert_eq!(m.addresses(id(5)), vec![addr(5)]);
    assert_eq!(m.status(id(5)), PeerStatus::Connected(Direction::Outbound));
}

// ----- Accepted -----------------------------------------------------------------

#[test]
fn accepted_self_is_error() {
    let mut m = manager(opts());
    assert_eq!(m.accepted(t(0), id(SELF)), Err(AdmitError::SelfConnection));
}

#[test]
fn accepted_already_connected_is_error() {
    let mut m = manager(opts());
    connect_out(&mut m, 1);
    assert_eq!(
        m.accepted(t(0), id(1)),
        Err(AdmitError::AlreadyConnected(id(1)))
    );
}

#[test]
fn accepted_when_full_evicts_lower_scored() {
    let mut m = manager(scored(&[(1, 1), (2, 7)], limited(1, 1)));
    connect_out(&mut m, 1);
    m.accepted(t(0), id(2)).unwrap();
    assert_eq!(m.evict_next(), Some(id(1)));
}

#[test]
fn accepted_when_full_without_lower_scored_peer_is_refused() {
    let mut m = manager(limited(1, 1));
    connect_out(&mut m, 1);
    assert_eq!(m.accepted(t(0), id(2)), Err(AdmitError::Full));
    assert_eq!(m.status(id(2)), PeerStatus::Down);
}

#[test]
fn accepted_with_no_upgrade_slot_is_refused() {
    let mut m = manager(scored(&[(1, 1), (2, 7), (3, 8)], limited(1, 1)));
    connect_out(&mut m, 1);
    m.accepted(t(0), id(2)).unwrap();
    assert_eq!(
        m.accepted(t(0), id(3)),
        Err(AdmitError::Full),
        "upgrade slot in use"
    );
}

#[test]
fn accepted_counts_dials_against_the_upgrade_ceiling() {
    let mut m = manager(limited(2, 0));
    m.add(addr(1)).unwrap();
    m.add(addr(2)).unwrap();
    m.dial_next(t(0)).unwrap();
    m.dial_next(t(0)).unwrap();
    assert_eq!(m.accepted(t(0), id(3)), Err(AdmitError::Full));
    // A peer we are dialing may still come in (simultaneous dial).
    m.accepted(t(0), id(1)).unwrap();
}

#[test]
fn accepted_unconditional_peer_when_full() {
    let mut m = manager(PeerManagerOptions {
        unconditional_peers: [id(9)].into(),
        ..limited(1, 0)
    });
    connect_out(&mut m, 1);
    m.accepted(t(0), id(9)).unwrap();
    assert_eq!(m.evict_next(), None, "unconditional peers take no slot");
    assert_eq!(m.accepted(t(0), id(2)), Err(AdmitError::Full));
}

// ----- Ready, disconnected --------------------------------------------------------

#[test]
fn ready_emits_up_with_channels() {
    let mut m = manager(opts());
    connect_out(&mut m, 1);
    m.ready(id(1), vec![ChannelId(1), ChannelId(2)], Protocol::Memory);
    m.ready(id(1), vec![ChannelId(1)], Protocol::Memory);
    assert_eq!(
        updates(&mut m),
        vec![PeerUpdate::Up {
            peer: id(1),
            channels: vec![ChannelId(1), ChannelId(2)],
            protocol: Protocol::Memory,
            direction: Direction::Outbound,
        }],
        "a second ready is ignored"
    );
    assert_eq!(m.status(id(1)), PeerStatus::Up(Direction::Outbound));
}

#[test]
fn ready_for_unconnected_peer_is_ignored() {
    let mut m = manager(opts());
    m.ready(id(1), vec![ChannelId(1)], Protocol::Memory);
    assert!(updates(&mut m).is_empty());
}

#[test]
fn disconnected_emits_down_only_when_ready() {
    let mut m = manager(opts());
    connect_out(&mut m, 1);
    connect_out(&mut m, 2);
    m.ready(id(1), vec![], Protocol::Memory);
    updates(&mut m);
    m.disconnected(t(0), id(1));
    m.disconnected(t(0), id(2));
    assert_eq!(updates(&mut m), vec![PeerUpdate::Down { peer: id(1) }]);
    assert_eq!(m.status(id(1)), PeerStatus::Down);
}

#[test]
fn disconnected_wakes_dialer_after_cooldown() {
    let mut m = manager(PeerManagerOptions {
        disconnect_cooldown: ms(250),
        ..opts()
    });
    connect_out(&mut m, 1);
    assert_eq!(m.next_wakeup(t(0)), None);
    m.disconnected(t(1000), id(1));
    assert_eq!(m.next_wakeup(t(1000)), Some(t(1250)));
}

#[test]
fn disconnected_victim_releases_its_reservation() {
    let mut m = manager(scored(&[(1, 1), (2, 2), (3, 10)], limited(2, 1)));
    connect_out(&mut m, 1);
    connect_out(&mut m, 2);
    m.add(addr(3)).unwrap();
    m.dial_next(t(0)).unwrap();
    m.disconnected(t(0), id(1));
    assert!(m.upgrading.is_empty());
    m.dialed(t(0), &addr(3)).unwrap();
    assert_eq!(m.evict_next(), None, "a slot freed up: no eviction needed");
}

// ----- Errored, evict_next ---------------------------------------------------------

#[test]
fn errored_marks_for_eviction_and_wakes() {
    let mut m = manager(opts());
    connect_out(&mut m, 1);
    assert_eq!(m.next_wakeup(t(0)), None);
    m.errored(id(1));
    assert_eq!(m.next_wakeup(t(0)), Some(t(0)));
    assert_eq!(m.evict_next(), Some(id(1)));
    assert_eq!(m.next_wakeup(t(0)), None);
}

#[test]
fn errored_unconnected_peer_is_ignored() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    m.errored(id(1));
    assert_eq!(m.evict_next(), None);
}

#[test]
fn evict_next_takes_errored_first_then_over_capacity_lowest_first() {
    let mut m = manager(scored(&[(1, 1), (2, 2), (3, 3), (4, 4)], limited(4, 0)));
    for n in 1..=4 {
        connect_out(&mut m, n);
    }
    m.errored(id(3));
    assert_eq!(m.evict_next(), Some(id(3)));
    assert_eq!(m.evict_next(), None);
    // Lower the limit by reopening is not possible; emulate over-capacity
    // through an unconditional-free manager with max 2.
    let mut m = manager(scored(&[(1, 1), (2, 2), (3, 3), (4, 4)], limited(2, 2)));
    connect_out(&mut m, 1);
    connect_out(&mut m, 2);
    m.accepted(t(0), id(3)).unwrap();
    m.accepted(t(0), id(4)).unwrap();
    assert_eq!(m.evict_next(), Some(id(1)));
    assert_eq!(m.evict_next(), Some(id(2)));
    assert_eq!(m.evict_next(), None);
}

#[test]
fn evict_next_never_returns_a_peer_twice() {
    let mut m = manager(opts());
    connect_out(&mut m, 1);
    m.errored(id(1));
    assert_eq!(m.evict_next(), Some(id(1)));
    m.errored(id(1));
    assert_eq!(m.evict_next(), None, "already being evicted");
}

#[test]
fn evict_next_returns_nothing_when_nothing_to_evict() {
    let mut m = manager(limited(2, 1));
    connect_out(&mut m, 1);
    assert_eq!(m.evict_next(), None);
}

// ----- Advertise ----------------------------------------------------------------

#[test]
fn advertise_puts_self_address_first() {
    let mut m = manager(PeerManagerOptions {
        self_address: Some(addr(SELF)),
        ..opts()
    });
    m.add(addr(1)).unwrap();
    assert_eq!(m.advertise(id(7), 10), vec![addr(SELF), addr(1)]);
    assert_eq!(m.advertise(id(7), 1), vec![addr(SELF)]);
    assert!(m.advertise(id(7), 0).is_empty());
}

#[test]
fn advertise_excludes_asking_peer_private_and_inactive() {
    let mut m = manager(PeerManagerOptions {
        private_peers: [id(2)].into(),
        ..opts()
    });
    for n in 1..=4 {
        m.add(addr(n)).unwrap();
    }
    m.add(addr2(1)).unwrap();
    m.inactivate(id(3));
    assert_eq!(m.advertise(id(1), 100), vec![addr(4)]);
}

#[test]
fn advertise_respects_the_limit() {
    let mut m = manager(opts());
    for n in 1..=50 {
        m.add(addr(n)).unwrap();
        m.add(addr2(n)).unwrap();
    }
    assert_eq!(m.advertise(id(99), 7).len(), 7);
    assert_eq!(m.advertise(id(99), 1000).len(), 100);
}

#[test]
fn advertise_is_biased_to_higher_scores() {
    let mut m = manager(scored(&[(40, 9), (41, 8)], opts()));
    for n in 1..=41 {
        m.add(addr(n)).unwrap();
    }
    assert_eq!(m.advertise(id(99), 2), vec![addr(40), addr(41)]);
    // Ties are shuffled: repeated asks do not always return the same set.
    let picks: HashSet<_> = (0..20).map(|_| m.advertise(id(99), 3)[2].clone()).collect();
    assert!(picks.len() > 1);
}

// ----- Inactivate, scores, status ---------------------------------------------------

#[test]
fn inactivate_prevents_dialing_until_the_peer_connects() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    assert!(m.inactivate(id(1)));
    assert_eq!(m.dial_next(t(0)), None);
    m.accepted(t(0), id(1)).unwrap();
    assert!(!m.is_inactive(id(1)));
    m.disconnected(t(0), id(1));
    assert_eq!(m.dial_next(t(0)), Some(addr(1)));
}

#[test]
fn inactivate_never_marks_persistent_or_unconditional_peers() {
    // As after a handshake refused for NoCommonChannel: the configured
    // peer stays dialable, on its normal backoff.
    let mut o = opts();
    o.persistent_peers = vec![addr(1)];
    o.unconditional_peers = [id(2)].into();
    let mut m = manager(o);
    m.add(addr(2)).unwrap();
    for n in [1, 2] {
        assert_eq!(m.dial_next(t(0)).map(|a| a.node_id()), Some(id(n)));
        assert!(!m.inactivate(id(n)), "peer {n}");
        m.dial_failed(t(0), &addr(n));
        assert!(!m.is_inactive(id(n)));
    }
    assert_eq!(m.dial_next(t(0)), None, "both back off");
    let due = m.next_wakeup(t(0)).expect("a retry is scheduled");
    assert!(due > t(0));
    let mut redialed: Vec<_> = std::iter::from_fn(|| m.dial_next(t(1_000)))
        .map(|a| a.node_id())
        .collect();
    redialed.sort();
    assert_eq!(redialed, vec![id(1), id(2)]);
}

#[test]
fn inactivate_unknown_peer_returns_false() {
    let mut m = manager(opts());
    assert!(!m.inactivate(id(1)));
}

#[test]
fn scores_fixed_over_persistent_over_earned() {
    let mut m = manager(PeerManagerOptions {
        persistent_peers: vec![addr(1), addr(2)],
        ..scored(&[(2, 3)], opts())
    });
    m.add(addr(3)).unwrap();
    assert_eq!(
        m.scores(),
        vec![
            (id(1), PeerScore::PERSISTENT),
            (id(2), PeerScore(3)),
            (id(3), PeerScore(0))
        ]
    );
}

#[test]
fn adjust_score_changes_rank_but_not_fixed_scores() {
    let mut m = manager(scored(&[(3, 1)], opts()));
    m.add(addr(1)).unwrap();
    m.add(addr(2)).unwrap();
    m.add(addr(3)).unwrap();
    m.adjust_score(id(1), -2);
    m.adjust_score(id(2), 5);
    m.adjust_score(id(3), -100);
    assert_eq!(m.peers(), vec![id(2), id(3), id(1)]);
    m.adjust_score(id(2), i16::MAX);
    m.adjust_score(id(2), i16::MAX);
    assert_eq!(
        m.score(id(2)),
        Some(PeerScore::MAX_EARNED),
        "never reaches persistent"
    );
}

#[test]
fn status_tracks_the_lifecycle() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    assert_eq!(m.status(id(1)), PeerStatus::Down);
    m.dial_next(t(0)).unwrap();
    assert_eq!(m.status(id(1)), PeerStatus::Dialing);
    m.dialed(t(0), &addr(1)).unwrap();
    assert_eq!(m.status(id(1)), PeerStatus::Connected(Direction::Outbound));
    m.ready(id(1), vec![], Protocol::Memory);
    assert_eq!(m.status(id(1)), PeerStatus::Up(Direction::Outbound));
    m.disconnected(t(0), id(1));
    assert_eq!(m.status(id(1)), PeerStatus::Down);
}

#[test]
fn next_wakeup_is_the_earliest_of_several_peers() {
    let mut m = manager(opts());
    m.add(addr(1)).unwrap();
    m.add(addr(2)).unwrap();
    m.dial_next(t(0)).unwrap();
    m.dial_next(t(0)).unwrap();
    m.dial_failed(t(0), &addr(1));
    m.dial_failed(t(0), &addr(1)); // second report of the same dial: counted again
    m.dial_failed(t(30), &addr(2));
    assert_eq!(m.next_wakeup(t(40)), Some(t(130)));
}

#[test]
fn a_full_node_admits_a_few_visitors_without_a_slot_and_evicts_them_in_time() {
    let mut m = manager(PeerManagerOptions {
        max_connected: 2,
        max_connected_upgrade: 0,
        max_transient: 1,
        transient_time: ms(500),
        ..opts()
    });
    connect_out(&mut m, 1);
    connect_out(&mut m, 2);
    assert!(m.is_full());
    // A visitor: admitted, but holds no slot and is nobody's victim.
    assert_eq!(m.accepted(t(0), id(3)), Ok(()));
    assert!(m.is_transient(id(3)));
    assert!(m.is_full());
    assert_eq!(m.evict_next(), None, "not over capacity");
    // Only one visitor at a time.
    assert_eq!(m.accepted(t(0), id(4)), Err(AdmitError::Full));
    // Its time up, it is evicted; then the next one may visit.
    assert_eq!(m.next_wakeup(t(0)), Some(t(500)));
    m.expire_transient(t(499));
    assert_eq!(m.evict_next(), None);
    m.expire_transient(t(500));
    assert_eq!(m.evict_next(), Some(id(3)));
    m.disconnected(t(500), id(3));
    assert!(!m.is_transient(id(3)));
    assert_eq!(m.accepted(t(600), id(4)), Ok(()));
    assert!(m.is_transient(id(4)));
}

#[test]
fn a_visitor_is_never_an_upgrade_victim() {
    let mut m = manager(PeerManagerOptions {
        max_connected: 1,
        max_connected_upgrade: 1,
        max_transient: 1,
        peer_scores: [(id(5), PeerScore(50))].into_iter().collect(),
        ..opts()
    });
    connect_out(&mut m, 1);
    m.adjust_score(id(1), 10);
    // Scored below peer 1: it can only visit.
    m.adjust_score(id(3), -10);
    assert_eq!(m.accepted(t(0), id(3)), Ok(()));
    assert!(m.is_transient(id(3)));
    // A better peer upgrades over peer 1, never over the visitor.
    assert_eq!(m.accepted(t(0), id(5)), Ok(()));
    assert!(!m.is_transient(id(5)));
    assert_eq!(m.evict_next(), Some(id(1)));
}

#[test]
fn a_served_visitor_leaves_after_a_short_grace() {
    let mut m = manager(PeerManagerOptions {
        max_connected: 1,
        max_connected_upgrade: 0,
        max_transient: 1,
        transient_time: ms(2000),
        ..opts()
    });
    connect_out(&mut m, 1);
    assert_eq!(m.accepted(t(0), id(3)), Ok(()));
    assert_eq!(m.next_wakeup(t(0)), Some(t(2000)));
    m.visit_served(t(100), id(3));
    assert_eq!(m.next_wakeup(t(100)), Some(t(350)));
    // Serving a peer that holds a slot changes nothing.
    m.visit_served(t(100), id(1));
    m.expire_transient(t(350));
    assert_eq!(m.evict_next(), Some(id(3)));
}
