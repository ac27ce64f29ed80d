//! The validator's loop: peers' messages in (checked, then fed to the
//! core), the effect handler's messages out, timeouts, and sync.

use std::collections::HashMap;

use malachite_consensus::{Input, State};
use malachite_types::{
    ExtendedCommitCertificate, ExtendedCommitSignature, ValueOrigin, ValueResponse,
    VoteExtensionPolicy,
};
use p2p_router::{ChannelId, Envelope, NodeId, PeerUpdate, SendError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::effects::{peer_id, reactor_error, Io, Out};
use super::{ConsensusChannels, CONSENSUS_CHANNEL, PROPOSAL_CHANNEL, SYNC_CHANNEL};
use crate::blocks::{Assembled, Assembler};
use crate::codec::{
    decode_commit, decode_consensus, encode_commit, sync_message, BlockPartMessage,
    ConsensusMessage, Decoded, SyncMessage, SyncResponse,
};
use crate::context::{Address, Ctx, Height};
use crate::signing::{self};
use malachite_types::ValidatorSet as _;

pub(super) struct Host {
    pub(super) io: Io,
    pub(super) state: State<Ctx>,
    pub(super) assembler: Assembler,
    /// Each peer's last decided height, from its status.
    pub(super) peer_tips: HashMap<NodeId, u64>,
    /// When the current height began, to tell a lag from a race.
    pub(super) height_since: Instant,
    pub(super) channels: ConsensusChannels,
    pub(super) updates: tokio::sync::broadcast::Receiver<PeerUpdate>,
}

impl Host {
    pub(super) async fn run(mut self, cancel: CancellationToken) {
        self.feed(Input::StartHeight(
            Height(1),
            self.io.validators.clone(),
            false,
            None,
            VoteExtensionPolicy::Disabled,
        ));
        let mut status = tokio::time::interval(self.io.config.status_interval);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.flush().await.is_err() {
                break;
            }
            let height = self.state.height();
            tokio::select! {
                () = cancel.cancelled() => break,
                Some(expired) = std::future::poll_fn(|cx| self.io.timers.poll_expired(cx)) => {
                    let timeout = expired.into_inner();
                    self.io.timer_keys.remove(&timeout);
                    self.feed(Input::TimeoutElapsed(timeout));
                }
                message = self.channels.consensus.1.recv() => match message {
                    Some(e) => self.on_consensus(e.peer, e.message),
                    None => break,
                },
                part = self.channels.proposal.1.recv() => match part {
                    Some(e) => self.on_part(e.peer, e.message),
                    None => break,
                },
                message = self.channels.sync.1.recv() => match message {
                    Some(e) => self.on_sync(e.peer, e.message),
                    None => break,
                },
                update = self.updates.recv() => {
                    if !self.on_update(update) {
                        break;
                    }
                }
                _ = status.tick() => {
                    let tip = self.io.store.tip().0;
                    self.io.outbox.push(Out::Sync(SyncMessage {
                        kind: Some(sync_message::Kind::Status(tip)),
                    }));
                }
            }
            if self.state.height() != height {
                self.height_since = Instant::now();
            }
            self.maybe_request_sync();
        }
    }

    /// Feeds `input` and every input its effects produce to the core.
    pub(super) fn feed(&mut self, input: Input<Ctx>) {
        let mut next = Some(input);
        while let Some(input) = next {
            let io = &mut self.io;
            let result: Result<(), malachite_consensus::Error<Ctx>> = malachite_consensus::process!(
                input: input,
                state: &mut self.state,
                metrics: &(),
                with: effect => io.handle(effect)
            );
            if let Err(error) = result {
                warn!(%error, "consensus refused an input");
            }
            next = self.io.inputs.pop_front();
        }
    }

    /// Sends what the effects asked for. Sends never wait for a peer (the
    /// channels drop instead); only a stopped router fails them.
    pub(super) async fn flush(&mut self) -> Result<(), SendError> {
        for out in std::mem::take(&mut self.io.outbox) {
            match out {
                Out::Broadcast(m) => self.channels.consensus.0.broadcast(m).await?,
                Out::Parts(parts) => {
                    for part in parts {
                        self.channels.proposal.0.broadcast(part).await?;
                    }
                }
                Out::Sync(m) => self.channels.sync.0.broadcast(m).await?,
                Out::SyncTo(peer, message) => {
                    self.channels
                        .sync
                        .0
                        .send(Envelope { peer, message })
                        .await?
                }
                Out::Report(e) => self.channels.consensus.0.report(e).await?,
            }
        }
        Ok(())
    }

    pub(super) fn report(
        &mut self,
        peer: NodeId,
        channel: ChannelId,
        what: impl std::fmt::Display,
    ) {
        self.io
            .outbox
            .push(Out::Report(reactor_error(peer, channel, what)));
    }

    pub(super) fn on_consensus(&mut self, peer: NodeId, message: ConsensusMessage) {
        let decoded = match decode_consensus(&message) {
            Ok(d) => d,
            Err(e) => return self.report(peer, CONSENSUS_CHANNEL, e),
        };
        let input = match decoded {
            Decoded::Vote(v) => {
                let msg = malachite_consensus::ConsensusMsg::Vote(v.message.clone());
                if let Err(what) = self.check_signed(&msg, &v.signature, &v.message.validator) {
                    return self.report(peer, CONSENSUS_CHANNEL, what);
                }
                Input::Vote(v)
            }
            Decoded::Proposal(p) => {
                let msg = malachite_consensus::ConsensusMsg::Proposal(p.message.clone());
                if let Err(what) = self.check_signed(&msg, &p.signature, &p.message.proposer) {
                    return self.report(peer, CONSENSUS_CHANNEL, what);
                }
                Input::Proposal(p)
            }
            Decoded::Polka(c) => Input::PolkaCertificate(c),
            Decoded::Round(c) => Input::RoundCertificate(c),
        };
        self.feed(input);
    }

    /// Checks a vote's or proposal's signer and signature on arrival, so a
    /// peer that sends forgeries is reported (the core would only drop
    /// them) and the core's own check of the same signature is free.
    pub(super) fn check_signed(
        &mut self,
        msg: &malachite_consensus::ConsensusMsg<Ctx>,
        signature: &malachite_ed25519::Signature,
        signer: &Address,
    ) -> Result<(), &'static str> {
        let Some(validator) = self.io.validators.get_by_address(signer) else {
            return Err("a message signed by an unknown validator");
        };
        if !signing::verify(msg, signature, &validator.public_key) {
            return Err("a message with a bad signature");
        }
        self.io.preverified.insert(signature.to_bytes());
        Ok(())
    }

    pub(super) fn on_part(&mut self, peer: NodeId, part: BlockPartMessage) {
        let Assembled { value, bytes } = match self.assembler.push(peer, part) {
            Ok(Some(block)) => block,
            Ok(None) => return,
            Err(e) => return self.report(peer, PROPOSAL_CHANNEL, e),
        };
        if value.height < self.state.height()
            || !self.io.store.propose(value.height, value.value, bytes)
        {
            return;
        }
        self.io
            .first_seen
            .entry(value.height)
            .or_insert_with(Instant::now);
        self.feed(Input::ProposedValue(value, ValueOrigin::Consensus));
    }

    pub(super) fn on_sync(&mut self, peer: NodeId, message: SyncMessage) {
        match message.kind {
            Some(sync_message::Kind::Status(tip)) => {
                self.peer_tips.insert(peer, tip);
            }
            Some(sync_message::Kind::Request(height)) => {
                if let Some((block, certificate)) = self.io.store.decided(Height(height)) {
                    let response = SyncResponse {
                        block: block.clone(),
                        certificate: Some(encode_commit(certificate)),
                    };
                    self.io.outbox.push(Out::SyncTo(
                        peer,
                        SyncMessage {
                            kind: Some(sync_message::Kind::Response(response)),
                        },
                    ));
                }
            }
            Some(sync_message::Kind::Response(response)) => self.on_sync_response(peer, response),
            None => self.report(peer, SYNC_CHANNEL, "a sync message without a kind"),
        }
    }

    pub(super) fn on_sync_response(&mut self, peer: NodeId, response: SyncResponse) {
        let asked = self
            .io
            .sync_pending
            .is_some_and(|(whom, height, _)| whom == peer && height == self.state.height());
        if !asked {
            // Late (another peer answered) or unsolicited: nothing to do.
            return;
        }
        let Some(certificate) = response.certificate.as_ref() else {
            self.io.sync_pending = None;
            return self.report(peer, SYNC_CHANNEL, "a sync response without a certificate");
        };
        let certificate = match decode_commit(certificate) {
            Ok(c) if c.height == self.state.height() => c,
            Ok(_) => {
                self.io.sync_pending = None;
                return self.report(peer, SYNC_CHANNEL, "a sync response for another height");
            }
            Err(e) => {
                self.io.sync_pending = None;
                return self.report(peer, SYNC_CHANNEL, e);
            }
        };
        let extended = ExtendedCommitCertificate {
            height: certificate.height,
            round: certificate.round,
            value_id: certificate.value_id,
            commit_signatures: certificate
                .commit_signatures
                .into_iter()
                .map(|s| ExtendedCommitSignature {
                    address: s.address,
                    signature: s.signature,
                    extension: None,
                })
                .collect(),
        };
        self.feed(Input::SyncValueResponse(ValueResponse::new(
            peer_id(peer),
            response.block,
            extended,
        )));
        // A response the core could not use leaves the request to time out.
    }

    /// Asks a peer for the current height's block once a peer has decided
    /// it and we have not: at once if the peer is two heights ahead, after
    /// `sync_timeout` if it is one ahead (it may only have decided first).
    pub(super) fn maybe_request_sync(&mut self) {
        let height = self.state.height();
        let timeout = self.io.config.sync_timeout;
        if let Some((_, asked, since)) = self.io.sync_pending {
            if asked == height && since.elapsed() < timeout {
                return;
            }
            self.io.sync_pending = None;
        }
        let lagging = self.height_since.elapsed() >= timeout;
        let Some((&peer, _)) = self
            .peer_tips
            .iter()
            .filter(|(_, &tip)| tip > height.0 || (tip == height.0 && lagging))
            .max_by_key(|(_, &tip)| tip)
        else {
            return;
        };
        debug!(%height, %peer, "asking for a decided block");
        self.io.sync_pending = Some((peer, height, Instant::now()));
        self.io.outbox.push(Out::SyncTo(
            peer,
            SyncMessage {
                kind: Some(sync_message::Kind::Request(height.0)),
            },
        ));
    }

    /// Follows peers coming and going; false once the router has stopped.
    pub(super) fn on_update(
        &mut self,
        update: Result<PeerUpdate, tokio::sync::broadcast::error::RecvError>,
    ) -> bool {
        use tokio::sync::broadcast::error::RecvError;
        match update {
            Ok(PeerUpdate::Up { peer, .. }) => {
                // Tell a new peer where we are, so a restarted one learns
                // at once what to catch up on.
                let tip = self.io.store.tip().0;
                self.io.outbox.push(Out::SyncTo(
                    peer,
                    SyncMessage {
                        kind: Some(sync_message::Kind::Status(tip)),
                    },
                ));
            }
            Ok(PeerUpdate::Down { peer }) => {
                self.assembler.forget(&peer);
                self.peer_tips.remove(&peer);
            }
            Ok(_) => {}
            // Missed updates only delay a status; the interval repeats it.
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return false,
        }
        true
    }
}
