//! Peer addresses: `quic://<id>@host:port`, `mconn://<id>@host:port`,
//! `memory:<id>`, and the bare `<id>@host:port` (QUIC).
//!
//! Parsing is syntactic only; a DNS name stays a name until
//! [`PeerAddress::resolve`](crate::PeerAddress::resolve) runs at dial time, so
//! a peer that moves keeps working without a restart.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::identity::{NodeId, NodeIdError};

/// The transport protocol an address or endpoint names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Protocol {
    /// QUIC: each channel is one QUIC stream per peer.
    Quic,
    /// TCP + SecretConnection + MConnection, Tendermint-compatible.
    Mconn,
    /// The in-process memory transport used by tests.
    Memory,
}

impl Protocol {
    /// The URL scheme (`quic`, `mconn`, `memory`).
    pub const fn scheme(self) -> &'static str {
        match self {
            Protocol::Quic => "quic",
            Protocol::Mconn => "mconn",
            Protocol::Memory => "memory",
        }
    }

    fn from_scheme(scheme: &str) -> Option<Self> {
        match scheme.to_ascii_lowercase().as_str() {
            "quic" => Some(Protocol::Quic),
            "mconn" => Some(Protocol::Mconn),
            "memory" => Some(Protocol::Memory),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// The host part of an address: a DNS name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, lowercased; resolved at dial time.
    Dns(String),
    /// An IPv4 literal.
    Ipv4(Ipv4Addr),
    /// An IPv6 literal (written in brackets in URLs).
    Ipv6(Ipv6Addr),
}

impl From<std::net::IpAddr> for Host {
    fn from(ip: std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(ip) => Host::Ipv4(ip),
            std::net::IpAddr::V6(ip) => Host::Ipv6(ip),
        }
    }
}

impl Host {
    /// Parses a host as written in an address (IPv6 without brackets).
    pub fn parse(s: &str) -> Result<Self, ParseAddressError> {
        if s.is_empty() {
            return Err(ParseAddressError::MissingHost);
        }
        if let Ok(ip) = Ipv4Addr::from_str(s) {
            return Ok(Host::Ipv4(ip));
        }
        if let Ok(ip) = Ipv6Addr::from_str(s) {
            return Ok(Host::Ipv6(ip));
        }
        let name = s.to_ascii_lowercase();
        if valid_dns_name(&name) {
            Ok(Host::Dns(name))
        } else {
            Err(ParseAddressError::InvalidHost(s.to_owned()))
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Dns(name) => f.write_str(name),
            Host::Ipv4(ip) => write!(f, "{ip}"),
            Host::Ipv6(ip) => write!(f, "[{ip}]"),
        }
    }
}

/// RFC 1123 host names (plus `_`, which private networks use), with one more
/// rule: the last label is never all digits, so a malformed IPv4 literal such
/// as `256.1.1.1` is an error instead of a name lookup.
fn valid_dns_name(name: &str) -> bool {
    if name.len() > 253 {
        return false;
    }
    let mut last = "";
    for label in name.split('.') {
        let ok_len = (1..=63).contains(&label.len());
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok_len || !ok_chars || label.starts_with('-') || label.ends_with('-') {
            return false;
        }
        last = label;
    }
    !last.bytes().all(|b| b.is_ascii_digit())
}

/// A URL naming a peer: protocol, node id and where to reach it.
///
/// Parse with [`FromStr`]; [`Display`](fmt::Display) prints the normalized
/// form (lowercase scheme, id and host; the bare form printed as `quic://`),
/// and parsing that output gives back an equal address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerAddress {
    protocol: Protocol,
    node_id: NodeId,
    host: Option<Host>,
    port: Option<u16>,
    path: String,
}

/// Why a string is not a [`PeerAddress`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseAddressError {
    /// The input is empty.
    #[error("empty address")]
    Empty,
    /// Whitespace or a control character in the address.
    #[error("invalid character at byte {position}")]
    InvalidCharacter {
        /// Byte offset of the offending character.
        position: usize,
    },
    /// The scheme is not `quic`, `mconn` or `memory`.
    #[error("unknown scheme {0:?} (expected quic, mconn or memory)")]
    UnknownScheme(String),
    /// No `<node-id>@` part.
    #[error("missing node id (expected <node-id>@host:port)")]
    MissingNodeId,
    /// The node id is malformed.
    #[error("invalid node id: {0}")]
    InvalidNodeId(#[from] NodeIdError),
    /// No host after the `@`, or a host-based scheme used without `//`.
    #[error("missing host")]
    MissingHost,
    /// The host is neither an IP literal nor a valid DNS name.
    #[error("invalid host {0:?}")]
    InvalidHost(String),
    /// An IPv6 literal without brackets (`[::1]:26656` is the form).
    #[error("IPv6 hosts must be written in brackets, e.g. [::1]:26656")]
    UnbracketedIpv6,
    /// A memory address names a host; memory addresses are `memory:<id>`.
    #[error("memory addresses take no host")]
    HostNotAllowed,
    /// The protocol needs a port and none was given.
    #[error("missing port")]
    MissingPort,
    /// The port is not a decimal number.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// The port is above 65535.
    #[error("port {0} out of range (1-65535)")]
    PortOutOfRange(String),
    /// Port 0 cannot be dialed.
    #[error("port 0 cannot be dialed")]
    PortZero,
    /// Characters after a complete address part.
    #[error("unexpected trailing characters {0:?}")]
    TrailingGarbage(String),
}

impl PeerAddress {
    /// An address reached over a host and port.
    pub fn new(protocol: Protocol, node_id: NodeId, host: Host, port: u16) -> Self {
        Self {
            protocol,
            node_id,
            host: Some(host),
            port: Some(port),
            path: String::new(),
        }
    }

    /// The memory-transport address of `node_id`.
    pub fn memory(node_id: NodeId) -> Self {
        Self {
            protocol: Protocol::Memory,
            node_id,
            host: None,
            port: None,
            path: String::new(),
        }
    }

    /// The protocol to dial with.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The id the peer must prove it owns.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The host, absent for memory addresses.
    pub fn host(&self) -> Option<&Host> {
        self.host.as_ref()
    }

    /// The port, absent for memory addresses.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Path and query as written (`/…` or `?…`), empty when none.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl FromStr for PeerAddress {
    type Err = ParseAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParseAddressError::Empty);
        }
        if let Some(position) = s.find(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(ParseAddressError::InvalidCharacter { position });
        }
        // A scheme is what comes before the first `:`, if it has a
        // scheme's shape (RFC 3986: a letter, then letters, digits, `+`,
        // `-`, `.`). Looking for the first `://` instead would take one
        // inside a path for the scheme, and an address would not parse
        // back from how it prints.
        if let Some((scheme, rest)) = s.split_once(':').filter(|(scheme, _)| is_scheme(scheme)) {
            let protocol = Protocol::from_scheme(scheme);
            if let Some(after) = rest.strip_prefix("//") {
                let protocol = protocol
                    .ok_or_else(|| ParseAddressError::UnknownScheme(scheme.to_ascii_lowercase()))?;
                return parse_after_scheme(protocol, after);
            }
            // `scheme:rest` without `//`: only `memory:` has that form.
            match protocol {
                Some(Protocol::Memory) => return parse_after_scheme(Protocol::Memory, rest),
                Some(_) => return Err(ParseAddressError::MissingHost),
                // A bare `host:port` with no id; the bare form reports it.
                None => {}
            }
        }
        parse_after_scheme(Protocol::Quic, s)
    }
}

/// Whether `s` has the shape of a URL scheme.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn parse_after_scheme(protocol: Protocol, rest: &str) -> Result<PeerAddress, ParseAddressError> {
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if protocol == Protocol::Memory {
        if authority.contains('@') {
            return Err(ParseAddressError::HostNotAllowed);
        }
        if authority.is_empty() {
            return Err(ParseAddressError::MissingNodeId);
        }
        let mut address = PeerAddress::memory(authority.parse()?);
        address.path = path.to_owned();
        return Ok(address);
    }
    let (id, hostport) = authority
        .split_once('@')
        .ok_or(ParseAddressError::MissingNodeId)?;
    if id.is_empty() {
        return Err(ParseAddressError::MissingNodeId);
    }
    let node_id: NodeId = id.parse()?;
    let (host, port) = split_host_port(hostport)?;
    let port = match port {
        Some(p) => Some(parse_port(p)?),
        None => return Err(ParseAddressError::MissingPort),
    };
    Ok(PeerAddress {
        protocol,
        node_id,
        host: Some(host),
        port,
        path: path.to_owned(),
    })
}

/// Splits `host[:port]`, handling bracketed IPv6.
pub(crate) fn split_host_port(hostport: &str) -> Result<(Host, Option<&str>), ParseAddressError> {
    if hostport.is_empty() {
        return Err(ParseAddressError::MissingHost);
    }
    if let Some(inner) = hostport.strip_prefix('[') {
        let (ip, after) = inner
            .split_once(']')
            .ok_or_else(|| ParseAddressError::InvalidHost(hostport.to_owned()))?;
        let ip = Ipv6Addr::from_str(ip)
            .map_err(|_| ParseAddressError::InvalidHost(format!("[{ip}]")))?;
        return match after {
            "" => Ok((Host::Ipv6(ip), None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((Host::Ipv6(ip), Some(port))),
                None => Err(ParseAddressError::TrailingGarbage(after.to_owned())),
            },
        };
    }
    if hostport.matches(':').count() > 1 {
        return Err(ParseAddressError::UnbracketedIpv6);
    }
    let (host, port) = match hostport.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (hostport, None),
    };
    let host = Host::parse(host)?;
    Ok((host, port))
}

pub(crate) fn parse_port(p: &str) -> Result<u16, ParseAddressError> {
    if p.is_empty() {
        return Err(ParseAddressError::MissingPort);
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseAddressError::InvalidPort(p.to_owned()));
    }
    let value = p.trim_start_matches('0');
    if value.len() > 5 {
        return Err(ParseAddressError::PortOutOfRange(p.to_owned()));
    }
    // At most five digits: fits in u32.
    let n: u32 = value.parse().unwrap_or(0);
    match n {
        0 => Err(ParseAddressError::PortZero),
        1..=65535 => Ok(n as u16),
        _ => Err(ParseAddressError::PortOutOfRange(p.to_owned())),
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.port) {
            (Some(host), Some(port)) => write!(
                f,
                "{}://{}@{}:{}{}",
                self.protocol, self.node_id, host, port, self.path
            ),
            (Some(host), None) => write!(
                f,
                "{}://{}@{}{}",
                self.protocol, self.node_id, host, self.path
            ),
            (None, _) => write!(f, "{}:{}{}", self.protocol, self.node_id, self.path),
        }
    }
}

#[cfg(test)]
mod tests;
