//! Micro-benchmarks of hot paths: message framing through the QUIC
//! transport's public surface is covered by `transports`; here the pieces
//! that run per message or per peer: NodeInfo encoding, address parsing and
//! the peer manager's `dial_next` over 10,000 known peers.

// criterion's macros generate undocumented functions.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use p2p_router::{
    MemoryPeerStore, NodeInfo, NodeKey, PeerAddress, PeerManager, PeerManagerOptions,
};
use prost::Message;

fn node_info(c: &mut Criterion) {
    let key = NodeKey::from_seed([1; 32]);
    let mut info = NodeInfo::new(key.node_id(), "bench-chain", "node0");
    info.listen_addr = "127.0.0.1:26656".into();
    info.channels = (0x20..0x30).collect();
    let encoded = info.encode_length_delimited_to_vec();
    c.bench_function("node_info/encode_delimited", |b| {
        b.iter(|| std::hint::black_box(&info).encode_length_delimited_to_vec())
    });
    c.bench_function("node_info/decode_and_validate", |b| {
        b.iter(|| {
            let i = NodeInfo::decode_length_delimited(std::hint::black_box(&encoded[..])).unwrap();
            i.validate().unwrap();
        })
    });
}

fn frames(c: &mut Criterion) {
    // The length-delimited framing every transport uses for messages.
    let message = vec![7u8; 100];
    let mut buf = bytes::BytesMut::with_capacity(1 << 20);
    c.bench_function("frame/encode_100B", |b| {
        b.iter(|| {
            buf.clear();
            prost::encoding::encode_varint(message.len() as u64, &mut buf);
            buf.extend_from_slice(std::hint::black_box(&message));
        })
    });
    let mut wire = bytes::BytesMut::new();
    for _ in 0..1000 {
        prost::encoding::encode_varint(100, &mut wire);
        wire.extend_from_slice(&message);
    }
    let wire = wire.freeze();
    c.bench_function("frame/decode_1000x100B", |b| {
        b.iter(|| {
            let mut w = wire.clone();
            let mut n = 0;
            while !w.is_empty() {
                let len = prost::encoding::decode_varint(&mut w).unwrap() as usize;
                let _frame = w.split_to(len);
                n += 1;
            }
            assert_eq!(n, 1000);
        })
    });
}

fn addresses(c: &mut Criterion) {
    let text = "quic://89006b58739b9db9d25e4295cdb96ab10ac1ef9f@seed-1.example.org:26656";
    c.bench_function("address/parse", |b| {
        b.iter(|| std::hint::black_box(text).parse::<PeerAddress>().unwrap())
    });
}

/// The id of benchmark peer `i`.
fn peer_id(i: u32) -> p2p_router::NodeId {
    let mut seed = [1u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    NodeKey::from_seed(seed).node_id()
}

/// A distinct private address of benchmark peer `i`.
fn peer_address(i: u32) -> PeerAddress {
    format!(
        "quic://{}@10.{}.{}.{}:26656",
        peer_id(i),
        i >> 16,
        (i >> 8) & 255,
        i & 255
    )
    .parse()
    .unwrap()
}

/// A peer manager that knows 10,000 peers and connects up to
/// `max_connected` (0: no limit).
fn knowing_10k(max_connected: usize) -> PeerManager {
    let mut options = PeerManagerOptions::default();
    options.max_peers = 20_000;
    options.max_connected = max_connected;
    let mut pm = PeerManager::new(
        NodeKey::from_seed([0; 32]).node_id(),
        options,
        MemoryPeerStore::new(),
        1,
    )
    .unwrap();
    for i in 0..10_000u32 {
        pm.add(peer_address(i)).unwrap();
    }
    pm
}

fn dial_next(c: &mut Criterion) {
    let setup = || knowing_10k(PeerManagerOptions::default().max_connected);
    c.bench_function("peer_manager/dial_next_10k", |b| {
        b.iter_batched_ref(
            setup,
            |pm| {
                let now = SystemTime::now();
                for _ in 0..16 {
                    if let Some(a) = pm.dial_next(now) {
                        pm.dial_failed(now, &a);
                    }
                }
            },
            BatchSize::LargeInput,
        )
    });
}

/// The actor's work after one event at 10,000 known and 200 connected
/// peers: the event itself (a peer leaves and another connects), then what
/// the actor asks every loop turn (due dials, evictions, the next wakeup).
fn actor_turn(c: &mut Criterion) {
    let setup = || {
        let mut pm = knowing_10k(200);
        let now = SystemTime::now();
        for i in 0..200u32 {
            pm.dialed(now, &peer_address(i)).unwrap();
        }
        (pm, 0u32)
    };
    c.bench_function("peer_manager/actor_turn_10k_known_200_connected", |b| {
        b.iter_batched_ref(
            setup,
            |(pm, turn)| {
                let now = SystemTime::now();
                let leaving = *turn % 200;
                pm.disconnected(now, peer_id(leaving));
                pm.accepted(now, peer_id(leaving)).unwrap();
                *turn += 1;
                while let Some(a) = pm.dial_next(now) {
                    pm.dial_failed(now, &a);
                }
                while pm.evict_next().is_some() {}
                std::hint::black_box(pm.next_wakeup(now));
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, node_info, frames, addresses, dial_next, actor_turn);
criterion_main!(benches);
