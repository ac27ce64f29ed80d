//! Peer exchange (PEX): a reactor on its own channel that asks connected
//! peers for addresses and answers their requests with what the peer
//! manager's `advertise` allows.
//!
//! It speaks two dialects of one schema (see [`PexAddress`]), chosen by the
//! connection's transport: with a peer on MConnection, CometBFT's
//! (`NetAddress`es, and the limits of its reactor, listed in
//! [`cometbft`]); with any other, ours (URLs, [`PexOptions`]). Addresses
//! learned from a CometBFT peer become `mconn://id@ip:port`; a CometBFT
//! peer is told only MConnection addresses with IP literals.
//!
//! The schedule follows what the node needs: every new peer is asked at
//! once; while the node has fewer peers than its connection target it
//! keeps asking at the fastest rate the rules allow; once it has them,
//! stale answers push the next request out and a nearly full store is
//! refreshed only rarely. Peers are held to the same rules we keep: at most one
//! request per minimum interval, responses only when asked, at most
//! [`MAX_ADDRESSES`] parsable addresses. Breaking a rule is a fatal
//! [`PeerError`], and nothing from the offending message is kept.

pub mod cometbft;
mod messages;
mod state;

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use messages::{PexAddress, PexMessage, PexRequest, PexResponse, PexSum};
pub use state::PexViolation;

use self::state::{Dialect, PexState};
use crate::address::{PeerAddress, Protocol};
use crate::channel::{ChannelDescriptor, ChannelId, FullPolicy};
use crate::identity::NodeId;
use crate::peer_manager::PeerUpdate;
use crate::router::{
    Channel, ChannelError, Envelope, PeerError, PeerErrorKind, ReactorContext, RouterBuilder,
    RouterHandle, RouterStopped,
};

/// The PEX channel's id.
pub const PEX_CHANNEL: ChannelId = ChannelId(0x00);

/// The most addresses in one response.
pub const MAX_ADDRESSES: usize = 100;

/// PEX settings. Every default is finite.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PexOptions {
    /// The least time between two requests from one peer (default 100 ms);
    /// we ask any one peer at most every twice this.
    pub min_request_interval: Duration,
    /// The gap between requests once the store is 95 % full (default
    /// 10 min): enough to keep replacing poor peers.
    pub full_store_interval: Duration,
    /// How long to wait when no peer can be asked (default 1 s).
    pub idle_retry: Duration,
    /// How long a request may go unanswered before it is given up and the
    /// peer's score lowered (default 10 s).
    pub response_timeout: Duration,
    /// The most addresses per response, sent or accepted from our own
    /// peers (default and maximum [`MAX_ADDRESSES`]; CometBFT peers may
    /// send [`cometbft::MAX_ADDRESSES_RECEIVED`]).
    pub max_addresses: usize,
    /// Skip addresses that are not publicly routable (private, link-local,
    /// loopback) when talking to CometBFT peers, both ways: CometBFT's
    /// `addr_book_strict`. Default off, so local networks work.
    pub strict_addresses: bool,
}

impl Default for PexOptions {
    fn default() -> Self {
        Self {
            min_request_interval: Duration::from_millis(100),
            full_store_interval: Duration::from_secs(10 * 60),
            idle_retry: Duration::from_secs(1),
            response_timeout: Duration::from_secs(10),
            max_addresses: MAX_ADDRESSES,
            strict_addresses: false,
        }
    }
}

/// The PEX channel's descriptor. Sends never wait (a full queue drops the
/// newest message): PEX must never stall on a slow peer.
pub fn pex_channel_descriptor() -> ChannelDescriptor {
    ChannelDescriptor::new(PEX_CHANNEL, "pex")
        .with_priority(1)
        .with_send_capacity(8)
        .with_receive_capacity(64)
        // 100 URLs of at most a few hundred bytes each; CometBFT's limit
        // (256 × 250 = 64,000 bytes) fits.
        .with_max_message_size(64 * 1024)
        .with_full_policy(FullPolicy::DropNewest)
}

/// The PEX reactor. It is declared on a [`RouterBuilder`] like any other
/// reactor, using only the router's public API, and runs under the
/// router's ownership: it stops when the router shuts down.
#[derive(Debug)]
pub struct Pex;

impl Pex {
    /// Declares the PEX channel and the reactor on `builder`.
    pub fn register(builder: &mut RouterBuilder, options: PexOptions) -> Result<(), ChannelError> {
        let mut options = options;
        options.max_addresses = options.max_addresses.min(MAX_ADDRESSES);
        let channel = builder.channel::<PexMessage>(pex_channel_descriptor())?;
        builder.reactor("pex", move |cx: ReactorContext| {
            let reactor = Reactor {
                state: PexState::new(options.clone(), Instant::now()),
                options,
                updates: cx.peer_updates,
                router: cx.router,
                channel,
                cancel: cx.shutdown,
            };
            reactor.run()
        });
        Ok(())
    }
}

struct Reactor {
    state: PexState,
    options: PexOptions,
    updates: tokio::sync::broadcast::Receiver<PeerUpdate>,
    router: RouterHandle,
    channel: Channel<PexMessage>,
    cancel: CancellationToken,
}

impl Reactor {
    async fn run(mut self) {
        // Every error here means the router stopped.
        let _ = self.run_inner().await;
    }

    async fn run_inner(&mut self) -> Result<(), RouterStopped> {
        loop {
            let deadline = self.state.next_deadline();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Ok(()),
                update = self.updates.recv() => match update {
                    Ok(PeerUpdate::Up { peer, channels, protocol, .. }) => {
                        if channels.contains(&PEX_CHANNEL) {
                            let dialect = match protocol {
                                Protocol::Mconn => Dialect::CometBft,
                                _ => Dialect::Native,
                            };
                            self.state.peer_up(peer, dialect, Instant::now());
                        }
                    }
                    Ok(PeerUpdate::Down { peer }) => self.state.peer_down(peer),
                    Err(RecvError::Lagged(_)) => self.resync().await?,
                    Err(RecvError::Closed) => return Ok(()),
                },
                envelope = self.channel.recv() => match envelope {
                    Some(envelope) => self.on_message(envelope).await?,
                    None => return Ok(()),
                },
                () = tokio::time::sleep_until(deadline) => {}
            }
            let now = Instant::now();
            for peer in self.state.expire(now) {
                tracing::debug!(%peer, "PEX request unanswered");
                let kind = PeerErrorKind::Pex(PexViolation::Unanswered);
                self.report(PeerError::minor(peer, kind)).await?;
            }
            while let Some(peer) = self.state.poll_request(now) {
                tracing::trace!(%peer, "asking for addresses");
                let request = Envelope {
                    peer,
                    message: PexMessage::request(),
                };
                self.channel
                    .send(request)
                    .await
                    .map_err(|_| RouterStopped)?;
            }
        }
    }

    /// We missed peer updates: forget peers that are gone. Peers that came
    /// up meanwhile are learned when they next come up; they may still ask
    /// us, within the same limits.
    async fn resync(&mut self) -> Result<(), RouterStopped> {
        let connected: std::collections::HashSet<NodeId> =
            self.router.connected_peers().await?.into_iter().collect();
        let gone: Vec<NodeId> = self
            .state
            .known_peers()
            .into_iter()
            .filter(|p| !connected.contains(p))
            .collect();
        for peer in gone {
            self.state.peer_down(peer);
        }
        Ok(())
    }

    async fn on_message(&mut self, envelope: Envelope<PexMessage>) -> Result<(), RouterStopped> {
        let peer = envelope.peer;
        let outcome = match envelope.message.sum {
            Some(PexSum::Request(_)) => self.on_request(peer).await?,
            Some(PexSum::Response(response)) => self.on_response(peer, response).await?,
            None => Err(PexViolation::Empty),
        };
        if let Err(violation) = outcome {
            tracing::info!(%peer, %violation, "PEX violation");
            self.report(PeerError::fatal(peer, PeerErrorKind::Pex(violation)))
                .await?;
        }
        Ok(())
    }

    async fn on_request(
        &mut self,
        peer: NodeId,
    ) -> Result<Result<(), PexViolation>, RouterStopped> {
        // The answer's form depends on the peer's dialect. A peer not up
        // (gone, its request queued behind its Down event; or, after our
        // update stream lagged, not yet seen up) is not answered: nothing
        // about it is kept, and a wrong dialect would get us dropped.
        let Some(dialect) = self.state.up_dialect(peer) else {
            tracing::debug!(%peer, "PEX request from a peer not up; not answered");
            return Ok(Ok(()));
        };
        if let Err(v) = self.state.on_request(peer, Instant::now()) {
            return Ok(Err(v));
        }
        let limit = self.options.max_addresses;
        let strict = self.options.strict_addresses;
        let addresses: Vec<PexAddress> = match dialect {
            Dialect::Native => self
                .router
                .advertise(peer, limit)
                .await?
                .iter()
                .map(|a| PexAddress::url(a.to_string()))
                .collect(),
            Dialect::CometBft => self
                .router
                .advertise_matching(peer, limit, move |a| {
                    cometbft::advertisable(a, strict).is_some()
                })
                .await?
                .iter()
                .filter_map(|a| cometbft::advertisable(a, strict))
                .collect(),
        };
        tracing::trace!(%peer, count = addresses.len(), ?dialect, "answering PEX request");
        let response = Envelope {
            peer,
            message: PexMessage::response(addresses),
        };
        self.channel
            .send(response)
            .await
            .map_err(|_| RouterStopped)?;
        Ok(Ok(()))
    }

    async fn on_response(
        &mut self,
        peer: NodeId,
        response: PexResponse,
    ) -> Result<Result<(), PexViolation>, RouterStopped> {
        if let Err(v) = self
            .state
            .on_response(peer, response.addresses.len(), Instant::now())
        {
            return Ok(Err(v));
        }
        let dialect = self.state.dialect(peer).unwrap_or(Dialect::Native);
        let strict = self.options.strict_addresses;
        let mut addresses = Vec::with_capacity(response.addresses.len());
        // One bad address taints the whole answer: keep none.
        for a in response.addresses {
            match dialect {
                Dialect::Native => match a.url.parse::<PeerAddress>() {
                    Ok(address) => addresses.push(address),
                    Err(reason) => {
                        return Ok(Err(PexViolation::BadAddress {
                            address: a.url.chars().take(80).collect(),
                            reason,
                        }))
                    }
                },
                Dialect::CometBft => match cometbft::parse(&a, strict) {
                    Ok(Some(address)) => addresses.push(address),
                    // What CometBFT's address book would skip.
                    Ok(None) => {}
                    Err(violation) => return Ok(Err(violation)),
                },
            }
        }
        let received = addresses.len();
        let added = self.router.add_peers(addresses).await?;
        let stats = self.router.stats();
        // The peers we want: the connection target, or with no target
        // every peer we know.
        let target = match self.router.connection_target() {
            0 => stats.known_peers,
            n => n as u64,
        };
        // Visits hold a slot for a moment but are not peers we keep.
        let wanting = stats.connected_peers.saturating_sub(stats.transient_peers) < target;
        tracing::debug!(
            %peer,
            received,
            added,
            known = stats.known_peers,
            connected = stats.connected_peers,
            target,
            "PEX response"
        );
        self.state.learned(
            added,
            stats.known_peers as usize,
            self.router.peer_store_capacity(),
            wanting,
            Instant::now(),
        );
        Ok(Ok(()))
    }

    async fn report(&self, error: PeerError) -> Result<(), RouterStopped> {
        self.router.report(error).await
    }
}
