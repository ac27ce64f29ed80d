//! The wire messages of the three channels, and the bytes validators
//! sign. Everything decoded here comes from a peer: conversions check
//! lengths and ranges and fail with [`CodecError`], never panic.

use bytes::Bytes;
use malachite_consensus::SignedConsensusMsg;
use malachite_ed25519::Signature;
use malachite_types::{
    CommitCertificate, CommitSignature, NilOrVal, PolkaCertificate, PolkaSignature, Round,
    RoundCertificate, RoundCertificateType, RoundSignature, SignedMessage, SignedProposal,
    SignedVote, VoteType,
};
use prost::Message;

use crate::context::{Address, BlockHash, Ctx, Height, Proposal, Vote};

/// Why a peer's message does not convert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CodecError {
    /// A required field is absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field has the wrong length or an out-of-range value.
    #[error("invalid field {0}")]
    Invalid(&'static str),
}

/// A vote, as signed and sent.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct VoteProto {
    /// 1 prevote, 2 precommit.
    #[prost(uint32, tag = "1")]
    pub(crate) vote_type: u32,
    #[prost(uint64, tag = "2")]
    pub(crate) height: u64,
    #[prost(uint32, tag = "3")]
    pub(crate) round: u32,
    /// The block hash; empty for nil.
    #[prost(bytes = "bytes", tag = "4")]
    pub(crate) value: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    pub(crate) validator: Bytes,
}

/// A proposal, as signed and sent.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ProposalProto {
    #[prost(uint64, tag = "1")]
    pub(crate) height: u64,
    #[prost(uint32, tag = "2")]
    pub(crate) round: u32,
    #[prost(bytes = "bytes", tag = "3")]
    pub(crate) value: Bytes,
    /// -1 for nil.
    #[prost(int64, tag = "4")]
    pub(crate) pol_round: i64,
    #[prost(bytes = "bytes", tag = "5")]
    pub(crate) proposer: Bytes,
}

/// An address and its signature, in a certificate.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SignatureProto {
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) address: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub(crate) signature: Bytes,
    /// Round certificates only: the vote's type and value.
    #[prost(uint32, tag = "3")]
    pub(crate) vote_type: u32,
    #[prost(bytes = "bytes", tag = "4")]
    pub(crate) value: Bytes,
}

/// A commit, polka or round certificate.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct CertificateProto {
    #[prost(uint64, tag = "1")]
    pub(crate) height: u64,
    #[prost(uint32, tag = "2")]
    pub(crate) round: u32,
    /// Commit and polka certificates: the value certified.
    #[prost(bytes = "bytes", tag = "3")]
    pub(crate) value: Bytes,
    #[prost(message, repeated, tag = "4")]
    pub(crate) signatures: Vec<SignatureProto>,
    /// Round certificates: 1 skip, 2 precommit.
    #[prost(uint32, tag = "5")]
    pub(crate) round_type: u32,
}

/// A message on the consensus channel.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ConsensusMessage {
    #[prost(oneof = "consensus_message::Kind", tags = "1, 2, 3, 4")]
    pub(crate) kind: Option<consensus_message::Kind>,
    /// The signature of a vote or proposal.
    #[prost(bytes = "bytes", tag = "5")]
    pub(crate) signature: Bytes,
}

/// The kinds of [`ConsensusMessage`].
pub(crate) mod consensus_message {
    /// What a consensus message carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Kind {
        /// A signed vote.
        #[prost(message, tag = "1")]
        Vote(super::VoteProto),
        /// A signed proposal.
        #[prost(message, tag = "2")]
        Proposal(super::ProposalProto),
        /// A polka certificate (liveness).
        #[prost(message, tag = "3")]
        Polka(super::CertificateProto),
        /// A round certificate (liveness).
        #[prost(message, tag = "4")]
        Round(super::CertificateProto),
    }
}

/// One part of a proposed block, on the proposal channel.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct BlockPartMessage {
    #[prost(uint64, tag = "1")]
    pub(crate) height: u64,
    #[prost(uint32, tag = "2")]
    pub(crate) round: u32,
    /// -1 for nil.
    #[prost(int64, tag = "3")]
    pub(crate) valid_round: i64,
    /// The proposer of `round`. A new block names the same proposer; a
    /// block proposed again (`valid_round` set) names its maker, the
    /// proposer of an earlier round.
    #[prost(bytes = "bytes", tag = "4")]
    pub(crate) proposer: Bytes,
    #[prost(uint32, tag = "5")]
    pub(crate) index: u32,
    #[prost(uint32, tag = "6")]
    pub(crate) count: u32,
    #[prost(bytes = "bytes", tag = "7")]
    pub(crate) chunk: Bytes,
}

/// A block: what the parts reassemble to and the hash is taken of.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct BlockMessage {
    #[prost(uint64, tag = "1")]
    pub(crate) height: u64,
    #[prost(bytes = "bytes", tag = "2")]
    pub(crate) proposer: Bytes,
    /// Synthetic transactions.
    #[prost(bytes = "bytes", tag = "3")]
    pub(crate) transactions: Bytes,
}

/// A message on the sync channel.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SyncMessage {
    #[prost(oneof = "sync_message::Kind", tags = "1, 2, 3")]
    pub(crate) kind: Option<sync_message::Kind>,
}

/// The kinds of [`SyncMessage`].
pub(crate) mod sync_message {
    /// What a sync message carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Kind {
        /// The sender's last decided height.
        #[prost(uint64, tag = "1")]
        Status(u64),
        /// Asks for the decided block at a height.
        #[prost(uint64, tag = "2")]
        Request(u64),
        /// A decided block with its commit certificate.
        #[prost(message, tag = "3")]
        Response(super::SyncResponse),
    }
}

/// A decided block and the certificate that proves it.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SyncResponse {
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) block: Bytes,
    #[prost(message, optional, tag = "2")]
    pub(crate) certificate: Option<CertificateProto>,
}

fn address(bytes: &[u8]) -> Result<Address, CodecError> {
    Ok(Address(
        bytes
            .try_into()
            .map_err(|_| CodecError::Invalid("address"))?,
    ))
}

fn hash(bytes: &[u8]) -> Result<BlockHash, CodecError> {
    Ok(BlockHash(
        bytes.try_into().map_err(|_| CodecError::Invalid("value"))?,
    ))
}

fn signature(bytes: &[u8]) -> Result<Signature, CodecError> {
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|_| CodecError::Invalid("signature"))?;
    Ok(Signature::from_bytes(bytes))
}

fn round(r: u32) -> Result<Round, CodecError> {
    // Rounds past i32 cannot happen and would overflow the core's maths.
    if r > i32::MAX as u32 {
        return Err(CodecError::Invalid("round"));
    }
    Ok(Round::new(r))
}

fn optional_round(r: i64) -> Result<Round, CodecError> {
    match r {
        -1 => Ok(Round::Nil),
        0..=0x7fff_ffff => Ok(Round::new(r as u32)),
        _ => Err(CodecError::Invalid("round")),
    }
}

fn round_u32(r: Round) -> u32 {
    r.as_u32().unwrap_or(0)
}

fn vote_type(t: u32) -> Result<VoteType, CodecError> {
    match t {
        1 => Ok(VoteType::Prevote),
        2 => Ok(VoteType::Precommit),
        _ => Err(CodecError::Invalid("vote_type")),
    }
}

fn vote_type_u32(t: VoteType) -> u32 {
    match t {
        VoteType::Prevote => 1,
        VoteType::Precommit => 2,
    }
}

fn nil_or_hash(bytes: &[u8]) -> Result<NilOrVal<BlockHash>, CodecError> {
    if bytes.is_empty() {
        Ok(NilOrVal::Nil)
    } else {
        hash(bytes).map(NilOrVal::Val)
    }
}

fn nil_or_hash_bytes(value: &NilOrVal<BlockHash>) -> Bytes {
    match value {
        NilOrVal::Nil => Bytes::new(),
        NilOrVal::Val(h) => Bytes::copy_from_slice(&h.0),
    }
}

impl From<&Vote> for VoteProto {
    fn from(v: &Vote) -> Self {
        Self {
            vote_type: vote_type_u32(v.vote_type),
            height: v.height.0,
            round: round_u32(v.round),
            value: nil_or_hash_bytes(&v.value),
            validator: Bytes::copy_from_slice(&v.validator.0),
        }
    }
}

impl TryFrom<&VoteProto> for Vote {
    type Error = CodecError;

    fn try_from(v: &VoteProto) -> Result<Self, CodecError> {
        Ok(Vote {
            vote_type: vote_type(v.vote_type)?,
            height: Height(v.height),
            round: round(v.round)?,
            value: nil_or_hash(&v.value)?,
            validator: address(&v.validator)?,
            extension: None,
        })
    }
}

impl From<&Proposal> for ProposalProto {
    fn from(p: &Proposal) -> Self {
        Self {
            height: p.height.0,
            round: round_u32(p.round),
            value: Bytes::copy_from_slice(&p.value.0),
            pol_round: p.pol_round.as_i64(),
            proposer: Bytes::copy_from_slice(&p.proposer.0),
        }
    }
}

impl TryFrom<&ProposalProto> for Proposal {
    type Error = CodecError;

    fn try_from(p: &ProposalProto) -> Result<Self, CodecError> {
        Ok(Proposal {
            height: Height(p.height),
            round: round(p.round)?,
            value: hash(&p.value)?,
            pol_round: optional_round(p.pol_round)?,
            proposer: address(&p.proposer)?,
        })
    }
}

/// Domain tags keep a vote's signature from being read as a proposal's.
const VOTE_TAG: &[u8] = b"p2p-consensus/vote/v1\0";
const PROPOSAL_TAG: &[u8] = b"p2p-consensus/proposal/v1\0";

/// The bytes a validator signs for `vote`.
pub(crate) fn vote_sign_bytes(vote: &Vote) -> Vec<u8> {
    [VOTE_TAG, &VoteProto::from(vote).encode_to_vec()].concat()
}

/// The bytes a validator signs for `proposal`.
pub(crate) fn proposal_sign_bytes(proposal: &Proposal) -> Vec<u8> {
    [PROPOSAL_TAG, &ProposalProto::from(proposal).encode_to_vec()].concat()
}

/// A signed vote or proposal for the wire.
pub(crate) fn encode_signed(msg: &SignedConsensusMsg<Ctx>) -> ConsensusMessage {
    match msg {
        SignedConsensusMsg::Vote(v) => encode_vote(v),
        SignedConsensusMsg::Proposal(p) => ConsensusMessage {
            kind: Some(consensus_message::Kind::Proposal(ProposalProto::from(
                &p.message,
            ))),
            signature: Bytes::copy_from_slice(&p.signature.to_bytes()),
        },
    }
}

/// A signed vote for the wire.
pub(crate) fn encode_vote(v: &SignedVote<Ctx>) -> ConsensusMessage {
    ConsensusMessage {
        kind: Some(consensus_message::Kind::Vote(VoteProto::from(&v.message))),
        signature: Bytes::copy_from_slice(&v.signature.to_bytes()),
    }
}

/// What a consensus-channel message decodes to.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A signed vote.
    Vote(SignedVote<Ctx>),
    /// A signed proposal.
    Proposal(SignedProposal<Ctx>),
    /// A polka certificate.
    Polka(PolkaCertificate<Ctx>),
    /// A round certificate.
    Round(RoundCertificate<Ctx>),
}

/// Decodes a consensus-channel message from a peer.
pub(crate) fn decode_consensus(m: &ConsensusMessage) -> Result<Decoded, CodecError> {
    match m.kind.as_ref().ok_or(CodecError::Missing("kind"))? {
        consensus_message::Kind::Vote(v) => Ok(Decoded::Vote(SignedMessage::new(
            Vote::try_from(v)?,
            signature(&m.signature)?,
        ))),
        consensus_message::Kind::Proposal(p) => Ok(Decoded::Proposal(SignedMessage::new(
            Proposal::try_from(p)?,
            signature(&m.signature)?,
        ))),
        consensus_message::Kind::Polka(c) => Ok(Decoded::Polka(PolkaCertificate {
            height: Height(c.height),
            round: round(c.round)?,
            value_id: hash(&c.value)?,
            polka_signatures: c
                .signatures
                .iter()
                .map(|s| {
                    Ok(PolkaSignature::new(
                        address(&s.address)?,
                        signature(&s.signature)?,
                    ))
                })
                .collect::<Result<_, CodecError>>()?,
        })),
        consensus_message::Kind::Round(c) => Ok(Decoded::Round(RoundCertificate {
            height: Height(c.height),
            round: round(c.round)?,
            cert_type: match c.round_type {
                1 => RoundCertificateType::Skip,
                2 => RoundCertificateType::Precommit,
                _ => return Err(CodecError::Invalid("round_type")),
            },
            round_signatures: c
                .signatures
                .iter()
                .map(|s| {
                    Ok(RoundSignature {
                        vote_type: vote_type(s.vote_type)?,
                        value_id: nil_or_hash(&s.value)?,
                        address: address(&s.address)?,
                        signature: signature(&s.signature)?,
                    })
                })
                .collect::<Result<_, CodecError>>()?,
        })),
    }
}

fn signature_proto(address: &Address, signature: &Signature) -> SignatureProto {
    SignatureProto {
        address: Bytes::copy_from_slice(&address.0),
        signature: Bytes::copy_from_slice(&signature.to_bytes()),
        vote_type: 0,
        value: Bytes::new(),
    }
}

/// A polka certificate for the wire.
pub(crate) fn encode_polka(c: &PolkaCertificate<Ctx>) -> ConsensusMessage {
    let proto = CertificateProto {
        height: c.height.0,
        round: round_u32(c.round),
        value: Bytes::copy_from_slice(&c.value_id.0),
        signatures: c
            .polka_signatures
            .iter()
            .map(|s| signature_proto(&s.address, &s.signature))
            .collect(),
        round_type: 0,
    };
    ConsensusMessage {
        kind: Some(consensus_message::Kind::Polka(proto)),
        signature: Bytes::new(),
    }
}

/// A round certificate for the wire.
pub(crate) fn encode_round(c: &RoundCertificate<Ctx>) -> ConsensusMessage {
    let proto = CertificateProto {
        height: c.height.0,
        round: round_u32(c.round),
        value: Bytes::new(),
        signatures: c
            .round_signatures
            .iter()
            .map(|s| SignatureProto {
                vote_type: vote_type_u32(s.vote_type),
                value: nil_or_hash_bytes(&s.value_id),
                ..signature_proto(&s.address, &s.signature)
            })
            .collect(),
        round_type: match c.cert_type {
            RoundCertificateType::Skip => 1,
            RoundCertificateType::Precommit => 2,
        },
    };
    ConsensusMessage {
        kind: Some(consensus_message::Kind::Round(proto)),
        signature: Bytes::new(),
    }
}

/// A commit certificate for the wire.
pub(crate) fn encode_commit(c: &CommitCertificate<Ctx>) -> CertificateProto {
    CertificateProto {
        height: c.height.0,
        round: round_u32(c.round),
        value: Bytes::copy_from_slice(&c.value_id.0),
        signatures: c
            .commit_signatures
            .iter()
            .map(|s| signature_proto(&s.address, &s.signature))
            .collect(),
        round_type: 0,
    }
}

/// Decodes a commit certificate from a peer.
pub(crate) fn decode_commit(c: &CertificateProto) -> Result<CommitCertificate<Ctx>, CodecError> {
    Ok(CommitCertificate {
        height: Height(c.height),
        round: round(c.round)?,
        value_id: hash(&c.value)?,
        commit_signatures: c
            .signatures
            .iter()
            .map(|s| {
                Ok(CommitSignature::new(
                    address(&s.address)?,
                    signature(&s.signature)?,
                ))
            })
            .collect::<Result<_, CodecError>>()?,
    })
}

/// Reads a round carried as an `int64` (-1 for nil).
pub(crate) fn read_optional_round(r: i64) -> Result<Round, CodecError> {
    optional_round(r)
}

/// Reads a round carried as a `uint32`.
pub(crate) fn read_round(r: u32) -> Result<Round, CodecError> {
    round(r)
}

/// Reads an address.
pub(crate) fn read_address(bytes: &[u8]) -> Result<Address, CodecError> {
    address(bytes)
}
