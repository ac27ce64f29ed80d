//! The PEX wire messages (protobuf, hand-declared with prost).
//!
//! One schema serves both dialects. It is CometBFT's `tendermint.p2p`
//! `Message` (`pex_request = 1`, `pex_addrs = 2`), `PexAddrs`
//! (`addrs = 1`) and `NetAddress` (`id = 1`, `ip = 2`, `port = 3`), with one
//! field of our own: `url = 4`. On MConnection a peer speaks CometBFT's
//! dialect (`id`, `ip`, `port`; no `url`); on our own transports an address
//! is a URL (`url` only), because it must carry DNS names and every
//! transport's scheme. A CometBFT node skips field 4 as unknown, and we
//! never send it to one.

/// One PEX message: a request or a response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PexMessage {
    /// Which one.
    #[prost(oneof = "PexSum", tags = "1, 2")]
    pub sum: Option<PexSum>,
}

/// The kinds of [`PexMessage`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PexSum {
    /// "Tell me peers you know" (CometBFT's `PexRequest`).
    #[prost(message, tag = "1")]
    Request(PexRequest),
    /// The answer to a request (CometBFT's `PexAddrs`).
    #[prost(message, tag = "2")]
    Response(PexResponse),
}

/// Asks a peer for addresses. Carries nothing.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PexRequest {}

/// Peer addresses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PexResponse {
    /// The addresses.
    #[prost(message, repeated, tag = "1")]
    pub addresses: Vec<PexAddress>,
}

/// One peer address: CometBFT's `NetAddress` (`id`, `ip`, `port`) from and
/// to MConnection peers, a URL (`quic://<id>@host:port`,
/// `mconn://<id>@host:port`, `memory:<id>`) on our own transports.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PexAddress {
    /// CometBFT: the node id, 40 hex digits.
    #[prost(string, tag = "1")]
    pub id: String,
    /// CometBFT: an IP literal.
    #[prost(string, tag = "2")]
    pub ip: String,
    /// CometBFT: the port (a `uint32` on the wire; above 65535 is invalid).
    #[prost(uint32, tag = "3")]
    pub port: u32,
    /// Ours: the whole address as a URL.
    #[prost(string, tag = "4")]
    pub url: String,
}

impl PexAddress {
    /// An address as a URL (our dialect).
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// An address as CometBFT writes it.
    pub fn net(id: impl Into<String>, ip: impl Into<String>, port: u32) -> Self {
        Self {
            id: id.into(),
            ip: ip.into(),
            port,
            url: String::new(),
        }
    }
}

impl PexMessage {
    /// A request.
    pub fn request() -> Self {
        Self {
            sum: Some(PexSum::Request(PexRequest {})),
        }
    }

    /// A response carrying `addresses`.
    pub fn response(addresses: impl IntoIterator<Item = PexAddress>) -> Self {
        Self {
            sum: Some(PexSum::Response(PexResponse {
                addresses: addresses.into_iter().collect(),
            })),
        }
    }
}
