//! Turning a [`PeerAddress`] into dialable [`Endpoint`]s, at dial time.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::address::{Host, PeerAddress, Protocol};
use crate::identity::NodeId;

/// How long a name lookup may take unless the caller says otherwise.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A concrete place to dial: a protocol and a socket address, or a memory
/// node id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Endpoint {
    /// The transport protocol serving this endpoint.
    pub protocol: Protocol,
    /// Where the endpoint is.
    pub address: EndpointAddress,
    /// Path and query carried over from the peer address, empty when none.
    pub path: String,
}

/// The location part of an [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndpointAddress {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A node on the in-process memory network.
    Memory(NodeId),
}

impl Endpoint {
    /// An IP endpoint.
    pub fn ip(protocol: Protocol, addr: SocketAddr) -> Self {
        Self {
            protocol,
            address: EndpointAddress::Ip(addr),
            path: String::new(),
        }
    }

    /// A memory-network endpoint.
    pub fn memory(node_id: NodeId) -> Self {
        Self {
            protocol: Protocol::Memory,
            address: EndpointAddress::Memory(node_id),
            path: String::new(),
        }
    }

    /// The socket address, for IP endpoints.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.address {
            EndpointAddress::Ip(addr) => Some(addr),
            EndpointAddress::Memory(_) => None,
        }
    }

    /// The socket address a transport speaking `protocol` dials: refused
    /// as [`DialError::UnsupportedProtocol`] when the endpoint is of another
    /// protocol or not an IP endpoint.
    pub fn dial_addr(&self, protocol: Protocol) -> Result<SocketAddr, crate::transport::DialError> {
        match self.address {
            EndpointAddress::Ip(addr) if self.protocol == protocol => Ok(addr),
            _ => Err(crate::transport::DialError::UnsupportedProtocol(
                self.protocol,
            )),
        }
    }

    /// The peer address reaching `node_id` at this endpoint, e.g. what a
    /// listener advertises.
    pub fn peer_address(&self, node_id: NodeId) -> PeerAddress {
        match self.address {
            EndpointAddress::Ip(addr) => {
                let host = match addr.ip() {
                    IpAddr::V4(ip) => Host::Ipv4(ip),
                    IpAddr::V6(ip) => Host::Ipv6(ip),
                };
                PeerAddress::new(self.protocol, node_id, host, addr.port())
            }
            EndpointAddress::Memory(_) => PeerAddress::memory(node_id),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            EndpointAddress::Ip(addr) => write!(f, "{}://{}{}", self.protocol, addr, self.path),
            EndpointAddress::Memory(id) => write!(f, "{}:{}{}", self.protocol, id, self.path),
        }
    }
}

/// Why an address could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The lookup took longer than the timeout.
    #[error("resolving {host} timed out after {timeout:?}")]
    Timeout {
        /// The name being resolved.
        host: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The system resolver failed.
    #[error("resolving {host}: {source}")]
    Lookup {
        /// The name being resolved.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The name exists but has no addresses.
    #[error("{host} resolved to no addresses")]
    NoAddresses {
        /// The name being resolved.
        host: String,
    },
    /// The name is in a reserved domain that never resolves (RFC 6761).
    #[error("{host} is in the reserved .invalid domain")]
    Reserved {
        /// The name being resolved.
        host: String,
    },
}

impl PeerAddress {
    /// Resolves this address into every endpoint to try, in order, with
    /// [`DEFAULT_RESOLVE_TIMEOUT`].
    pub async fn resolve(&self) -> Result<Vec<Endpoint>, ResolveError> {
        self.resolve_with_timeout(DEFAULT_RESOLVE_TIMEOUT).await
    }

    /// Resolves this address into every endpoint to try, in order.
    ///
    /// IP literals and memory addresses resolve without IO. Names go to the
    /// system resolver; `localhost` names always resolve to loopback
    /// (RFC 6761) and `.invalid` names never do, without a query leaving the
    /// machine. A name with no addresses is an error, never an empty list.
    pub async fn resolve_with_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Vec<Endpoint>, ResolveError> {
        let protocol = self.protocol();
        let with_path = |mut e: Endpoint| {
            e.path = self.path().to_owned();
            e
        };
        let (host, port) = match (self.host(), self.port()) {
            (Some(host), Some(port)) => (host, port),
            _ => return Ok(vec![with_path(Endpoint::memory(self.node_id()))]),
        };
        let ips: Vec<IpAddr> = match host {
            Host::Ipv4(ip) => vec![IpAddr::V4(*ip)],
            Host::Ipv6(ip) => vec![IpAddr::V6(*ip)],
            Host::Dns(name) => lookup(name, port, timeout).await?,
        };
        Ok(ips
            .into_iter()
            .map(|ip| with_path(Endpoint::ip(protocol, SocketAddr::new(ip, port))))
            .collect())
    }
}

async fn lookup(name: &str, port: u16, timeout: Duration) -> Result<Vec<IpAddr>, ResolveError> {
    if name == "invalid" || name.ends_with(".invalid") {
        return Err(ResolveError::Reserved {
            host: name.to_owned(),
        });
    }
    let is_localhost = name == "localhost" || name.ends_with(".localhost");
    let found = tokio::time::timeout(timeout, tokio::net::lookup_host((name, port))).await;
    let mut ips: Vec<IpAddr> = match found {
        Err(_) if !is_localhost => {
            return Err(ResolveError::Timeout {
                host: name.to_owned(),
                timeout,
            })
        }
        Ok(Err(source)) if !is_localhost => {
            return Err(ResolveError::Lookup {
                host: name.to_owned(),
                source,
            })
        }
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        _ => Vec::new(),
    };
    if is_localhost {
        // A resolver that maps localhost elsewhere is misconfigured; loopback
        // is the only answer RFC 6761 allows.
        ips.retain(|ip| ip.is_loopback());
        if ips.is_empty() {
            ips = vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ];
        }
    }
    // The resolver may list an address once per socket type; keep the first.
    let mut seen = Vec::with_capacity(ips.len());
    ips.retain(|ip| {
        let new = !seen.contains(ip);
        seen.push(*ip);
        new
    });
    if ips.is_empty() {
        return Err(ResolveError::NoAddresses {
            host: name.to_owned(),
        });
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NodeId {
        "89006b58739b9db9d25e4295cdb96ab10ac1ef9f".parse().unwrap()
    }

    async fn resolve(s: &str) -> Result<Vec<Endpoint>, ResolveError> {
        s.parse::<PeerAddress>().unwrap().resolve().await
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_endpoints() {
        let eps = resolve(&format!("quic://{}@localhost:26656", id()))
            .await
            .unwrap();
        assert!(!eps.is_empty());
        for ep in &eps {
            assert_eq!(ep.protocol, Protocol::Quic);
            let addr = ep.socket_addr().unwrap();
            assert!(addr.ip().is_loopback(), "{addr}");
            assert_eq!(addr.port(), 26656);
        }
    }

    #[tokio::test]
    async fn ipv4_literal_resolves_without_lookup() {
        let eps = resolve(&format!("mconn://{}@127.0.0.1:7/p", id()))
            .await
            .unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].to_string(), "mconn://127.0.0.1:7/p");
        assert_eq!(eps[0].protocol, Protocol::Mconn);
    }

    #[tokio::test]
    async fn ipv6_literal_resolves_without_lookup() {
        let eps = resolve(&format!("{}@[::1]:26656", id())).await.unwrap();
        assert_eq!(
            eps,
            vec![Endpoint::ip(Protocol::Quic, "[::1]:26656".parse().unwrap())]
        );
    }

    #[tokio::test]
    async fn invalid_tld_is_an_error_not_an_empty_success() {
        let err = resolve(&format!("quic://{}@no-such-host.invalid:1", id()))
            .await
            .unwrap_err();
        assert!(matches!(err, ResolveError::Reserved { .. }), "{err}");
    }

    #[tokio::test]
    async fn memory_resolves_to_its_node_id() {
        let eps = resolve(&format!("memory:{}", id())).await.unwrap();
        assert_eq!(eps, vec![Endpoint::memory(id())]);
        assert_eq!(
            eps[0].peer_address(id()).to_string(),
            format!("memory:{}", id())
        );
    }

    #[test]
    fn endpoint_peer_address_brackets_ipv6() {
        let ep = Endpoint::ip(Protocol::Quic, "[::1]:9".parse().unwrap());
        assert_eq!(
            ep.peer_address(id()).to_string(),
            format!("quic://{}@[::1]:9", id())
        );
    }
}
