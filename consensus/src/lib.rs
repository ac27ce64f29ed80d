//! A Tendermint consensus application on top of p2p-router: Malachite's
//! sans-IO core (`arc-malachitebft-core-consensus`) driven by a host that
//! speaks over three router channels.
//!
//! - [`context`]: heights, blocks (a value is a block's hash), proposals,
//!   votes and the ed25519 validator set, as the core sees them.
//! - [`validator`]: the host. One task per validator feeds the core votes,
//!   proposals, reassembled blocks, timeouts and synced blocks, and carries
//!   out its effects: publish, sign, verify, build a block, decide.
//! - [`record`]: every decision, and the agreement check across
//!   validators.
//!
//! Channels: `consensus` (votes, proposals and liveness certificates,
//! highest priority), `proposal` (block parts, so a large block never
//! delays a vote: on QUIC each channel is its own stream), `sync` (status,
//! requests and decided blocks with their commit certificates, for a
//! validator that restarted or fell behind).
//!
//! The validator key is separate from the node key: the node key is the
//! network identity every peer sees and is kept in a file next to the peer
//! store, while a validator key signs what the chain depends on and may
//! live elsewhere (a remote signer) or move to another node; a full node
//! has a node key and no validator key. [`spawn_validator`] takes the
//! validator key's 32 secret bytes.

mod blocks;
mod codec;
pub mod context;
pub mod record;
mod signing;
pub mod validator;

pub use context::{Address, BlockHash, Validator, ValidatorSet};
pub use record::{check_agreement, Agreement, Decision, Decisions, Disagreement};
pub use validator::{spawn_validator, ConsensusChannels, ConsensusConfig, ValidatorHandle};
