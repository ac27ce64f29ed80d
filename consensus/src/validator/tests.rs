//! A peer that forges votes is reported and does not stall the validators.

use std::time::Duration;

use bytes::Bytes;
use malachite_types::{NilOrVal, Round, VoteType};
use p2p_router::test_utils::{connect_all, key, within, TestNodeBuilder};
use p2p_router::Envelope;
use p2p_transport_memory::test_utils::StartOnMemory;
use p2p_transport_memory::MemoryNetwork;

use super::*;
use crate::codec::encode_vote;
use crate::context::{Validator, Vote};

const PATIENCE: Duration = Duration::from_secs(600);

fn secret(i: u64) -> [u8; 32] {
    [0x60 + i as u8; 32]
}

fn forged_votes(set: &ValidatorSet) -> Vec<ConsensusMessage> {
    let vote = |validator| Vote {
        vote_type: VoteType::Prevote,
        height: Height(1),
        round: Round::new(0),
        value: NilOrVal::Nil,
        validator,
        extension: None,
    };
    // A real validator's address with a signature it never made.
    let mut bad_signature = encode_vote(
        &Signer::new(PrivateKey::from(secret(9))).sign_vote(vote(set.validators()[0].address)),
    );
    bad_signature.signature = Bytes::from(vec![7; 64]);
    // A well-signed vote of a key outside the set.
    let outsider = Signer::new(PrivateKey::from(secret(9)));
    let unknown = encode_vote(&outsider.sign_vote(vote(Address::of(&outsider.public_key()))));
    // Not even a vote.
    let garbage = ConsensusMessage {
        kind: None,
        signature: Bytes::new(),
    };
    vec![bad_signature, unknown, garbage]
}

#[tokio::test(start_paused = true)]
async fn a_peer_forging_votes_is_reported_and_the_validators_go_on() {
    let net = MemoryNetwork::new();
    let set = ValidatorSet::new(
        (1..=4)
            .map(|i| Validator::from_secret(secret(i), 1))
            .collect(),
    );
    let config = ConsensusConfig {
        block_size: 10_000,
        ..ConsensusConfig::default()
    };
    let mut nodes = Vec::new();
    let mut handles = Vec::new();
    for i in 1..=4 {
        let (node, channels) = TestNodeBuilder::new(key(i)).start_declaring_on(&net, |b| {
            ConsensusChannels::declare(b, &config).expect("channels declare")
        });
        let router = node.router.handle();
        handles.push(spawn_validator(
            router,
            channels,
            secret(i),
            set.clone(),
            config.clone(),
        ));
        nodes.push(node);
    }
    let (forger, channels) = TestNodeBuilder::new(key(5)).start_declaring_on(&net, |b| {
        ConsensusChannels::declare(b, &config).expect("channels declare")
    });
    nodes.push(forger);
    connect_all(&mut nodes).await;
    let forger = nodes.pop().expect("the forger");
    for message in forged_votes(&set) {
        for node in &nodes {
            let envelope = Envelope {
                peer: node.id(),
                message: message.clone(),
            };
            channels.consensus.0.send(envelope).await.expect("send");
        }
    }
    for node in &nodes {
        let stats = within(
            PATIENCE,
            "reported",
            node.router.stats_when(|s| s.peer_errors >= 3),
        )
        .await;
        assert_eq!(stats.peer_errors, 3, "one report per forged message");
    }
    for h in &handles {
        within(PATIENCE, "height 10", h.decisions.reached(10)).await;
    }
    let decisions: Vec<_> = handles.iter().map(|h| h.decisions.clone()).collect();
    crate::check_agreement(&decisions).expect("agreement");
    for h in handles {
        h.shutdown().await;
    }
    forger.router.shutdown().await;
}
