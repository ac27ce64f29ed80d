//! Signing votes and proposals with the validator key, and checking
//! signatures and certificates against the validator set.

use std::collections::BTreeSet;

use malachite_consensus::ConsensusMsg;
use malachite_ed25519::{PrivateKey, PublicKey, Signature};
use malachite_types::{
    CertificateError, CommitCertificate, ExtendedCommitCertificate, NilOrVal, PolkaCertificate,
    Round, RoundCertificate, RoundCertificateType, SignedMessage, ThresholdParam, ThresholdParams,
    ValidatorSet as _, VoteType,
};

use crate::codec::{proposal_sign_bytes, vote_sign_bytes};
use crate::context::{
    new_vote as vote, Address, BlockHash, Ctx, Height, Proposal, ValidatorSet, Vote,
};

/// Signs with the validator key.
pub(crate) struct Signer {
    key: PrivateKey,
}

impl Signer {
    pub(crate) fn new(key: PrivateKey) -> Self {
        Self { key }
    }

    pub(crate) fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    pub(crate) fn sign_vote(&self, vote: Vote) -> SignedMessage<Ctx, Vote> {
        let signature = self.key.sign(&vote_sign_bytes(&vote));
        SignedMessage::new(vote, signature)
    }

    pub(crate) fn sign_proposal(&self, proposal: Proposal) -> SignedMessage<Ctx, Proposal> {
        let signature = self.key.sign(&proposal_sign_bytes(&proposal));
        SignedMessage::new(proposal, signature)
    }
}

/// Whether `signature` is `key`'s over `message`.
pub(crate) fn verify(message: &ConsensusMsg<Ctx>, signature: &Signature, key: &PublicKey) -> bool {
    let bytes = match message {
        ConsensusMsg::Vote(v) => vote_sign_bytes(v),
        ConsensusMsg::Proposal(p) => proposal_sign_bytes(p),
    };
    key.verify(&bytes, signature).is_ok()
}

/// One signature of a certificate, with the vote it signs.
struct Signed<'a> {
    vote: Vote,
    signature: &'a Signature,
}

/// The votes that the signatures of a commit or polka certificate sign:
/// all of one type, for one value at one height and round.
fn votes_for<'a>(
    vote_type: VoteType,
    (height, round, value): (Height, Round, BlockHash),
    signatures: impl Iterator<Item = (Address, &'a Signature)>,
) -> impl Iterator<Item = Signed<'a>> {
    signatures.map(move |(address, signature)| Signed {
        vote: vote(vote_type, height, round, NilOrVal::Val(value), address),
        signature,
    })
}

/// Checks that each vote is signed by a distinct validator of `set`, and
/// that their power meets `threshold`. `invalid` names the offending
/// signature in the error.
fn verify_votes<'a>(
    votes: impl Iterator<Item = Signed<'a>>,
    set: &ValidatorSet,
    threshold: ThresholdParam,
    invalid: impl Fn(usize) -> CertificateError<Ctx>,
) -> Result<(), CertificateError<Ctx>> {
    let mut seen = BTreeSet::new();
    let mut signed: u64 = 0;
    for (i, Signed { vote, signature }) in votes.enumerate() {
        let address = vote.validator;
        let validator = set
            .get_by_address(&address)
            .ok_or(CertificateError::UnknownValidator(address))?;
        if !seen.insert(address) {
            return Err(CertificateError::DuplicateVote(address));
        }
        if validator
            .public_key
            .verify(&vote_sign_bytes(&vote), signature)
            .is_err()
        {
            return Err(invalid(i));
        }
        signed = signed.checked_add(validator.voting_power).ok_or(
            CertificateError::VotingPowerOverflow {
                signed,
                added: validator.voting_power,
            },
        )?;
    }
    let total = set.total_voting_power();
    if !threshold.is_met(signed, total) {
        return Err(CertificateError::NotEnoughVotingPower {
            signed,
            total,
            expected: threshold.min_expected(total),
        });
    }
    Ok(())
}

/// A commit certificate: +2/3 of the power precommitted its value.
pub(crate) fn verify_commit(
    c: &CommitCertificate<Ctx>,
    set: &ValidatorSet,
    thresholds: ThresholdParams,
) -> Result<(), CertificateError<Ctx>> {
    let signatures = c.commit_signatures.iter();
    let votes = votes_for(
        VoteType::Precommit,
        (c.height, c.round, c.value_id),
        signatures.map(|s| (s.address, &s.signature)),
    );
    verify_votes(votes, set, thresholds.quorum, |i| {
        CertificateError::InvalidCommitSignature(c.commit_signatures[i].clone())
    })
}

/// A commit certificate as sync carries it; this application extends no
/// votes, so an extension is refused.
pub(crate) fn verify_extended_commit(
    c: &ExtendedCommitCertificate<Ctx>,
    set: &ValidatorSet,
    thresholds: ThresholdParams,
) -> Result<(), CertificateError<Ctx>> {
    if let Some(s) = c.commit_signatures.iter().find(|s| s.extension.is_some()) {
        return Err(CertificateError::UnexpectedVoteExtension(s.address));
    }
    let plain = CommitCertificate {
        height: c.height,
        round: c.round,
        value_id: c.value_id,
        commit_signatures: c
            .commit_signatures
            .iter()
            .map(|s| malachite_types::CommitSignature::new(s.address, s.signature))
            .collect(),
    };
    verify_commit(&plain, set, thresholds)
}

/// A polka certificate: +2/3 of the power prevoted its value.
pub(crate) fn verify_polka(
    c: &PolkaCertificate<Ctx>,
    set: &ValidatorSet,
    thresholds: ThresholdParams,
) -> Result<(), CertificateError<Ctx>> {
    let signatures = c.polka_signatures.iter();
    let votes = votes_for(
        VoteType::Prevote,
        (c.height, c.round, c.value_id),
        signatures.map(|s| (s.address, &s.signature)),
    );
    verify_votes(votes, set, thresholds.quorum, |i| {
        CertificateError::InvalidPolkaSignature(c.polka_signatures[i].clone())
    })
}

/// A round certificate: +1/3 of the power voted in the round (skip), or
/// +2/3 precommitted in it (precommit).
pub(crate) fn verify_round(
    c: &RoundCertificate<Ctx>,
    set: &ValidatorSet,
    thresholds: ThresholdParams,
) -> Result<(), CertificateError<Ctx>> {
    let threshold = match c.cert_type {
        RoundCertificateType::Skip => thresholds.honest,
        RoundCertificateType::Precommit => {
            if let Some(s) = c
                .round_signatures
                .iter()
                .find(|s| s.vote_type != VoteType::Precommit)
            {
                return Err(CertificateError::InvalidVoteType(s.address));
            }
            thresholds.quorum
        }
    };
    let votes = c.round_signatures.iter().map(|s| Signed {
        vote: vote(s.vote_type, c.height, c.round, s.value_id, s.address),
        signature: &s.signature,
    });
    verify_votes(votes, set, threshold, |i| {
        CertificateError::InvalidRoundSignature(c.round_signatures[i].clone())
    })
}
