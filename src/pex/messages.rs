//! The PEX wire messages (protobuf, hand-declared with prost).

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
    /// "Tell me peers you know."
    #[prost(message, tag = "1")]
    Request(PexRequest),
    /// The answer to a request.
    #[prost(message, tag = "2")]
    Response(PexResponse),
}

/// Asks a peer for addresses. Carries nothing.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PexRequest {}

/// Peer addresses, at most [`MAX_ADDRESSES`](super::MAX_ADDRESSES).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PexResponse {
    /// The addresses.
    #[prost(message, repeated, tag = "1")]
    pub addresses: Vec<PexAddress>,
}

/// One peer address as a URL (`quic://<id>@host:port`,
/// `mconn://<id>@host:port`, `memory:<id>`), so every transport's
/// addresses travel alike.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PexAddress {
    /// The URL.
    #[prost(string, tag = "1")]
    pub url: String,
}

impl PexMessage {
    /// A request.
    pub fn request() -> Self {
        Self {
            sum: Some(PexSum::Request(PexRequest {})),
        }
    }

    /// A response carrying `urls`.
    pub fn response(urls: impl IntoIterator<Item = String>) -> Self {
        Self {
            sum: Some(PexSum::Response(PexResponse {
                addresses: urls.into_iter().map(|url| PexAddress { url }).collect(),
            })),
        }
    }
}
