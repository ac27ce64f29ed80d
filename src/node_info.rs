//! [`NodeInfo`]: what a peer says about itself in the handshake.
//!
//! The message is field-for-field Tendermint's `tendermint.p2p.NodeInfo`
//! (`DefaultNodeInfo` in v0.34), so MConnection peers written in Go decode it
//! unchanged. `proto/p2p.proto` documents the wire format.

use std::collections::BTreeSet;

use std::net::IpAddr;

use crate::address::{parse_port, split_host_port, Host, ParseAddressError, PeerAddress, Protocol};
use crate::channel::ChannelId;
use crate::identity::{NodeId, NodeIdError};

/// The most channels a node may declare (Tendermint's limit, kept for
/// compatibility).
pub const MAX_CHANNELS: usize = 16;
/// The largest encoded `NodeInfo` any transport accepts (Tendermint's
/// `MaxNodeInfoSize`); a bigger one is refused before it is read.
pub const MAX_NODE_INFO_SIZE: usize = 10_240;

/// P2P protocol version we speak (CometBFT v0.34–v0.38 send 8).
pub const P2P_PROTOCOL: u64 = 8;
/// Block protocol version (CometBFT v0.34–v0.38 send 11). Peers must agree.
pub const BLOCK_PROTOCOL: u64 = 11;

/// Protocol versions a node runs.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ProtocolVersion {
    /// P2P protocol version.
    #[prost(uint64, tag = "1")]
    pub p2p: u64,
    /// Block protocol version; peers with different values are incompatible.
    #[prost(uint64, tag = "2")]
    pub block: u64,
    /// Application version.
    #[prost(uint64, tag = "3")]
    pub app: u64,
}

/// Fields Tendermint keeps for its RPC; carried for compatibility.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct NodeInfoOther {
    /// `"on"`, `"off"` or empty, as CometBFT requires.
    #[prost(string, tag = "1")]
    pub tx_index: String,
    /// The node's RPC address, if any.
    #[prost(string, tag = "2")]
    pub rpc_address: String,
}

/// What a node says about itself in the handshake.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct NodeInfo {
    /// Protocol versions.
    #[prost(message, optional, tag = "1")]
    pub protocol_version: Option<ProtocolVersion>,
    /// The node id, 40 hex characters; must match the authenticated key.
    #[prost(string, tag = "2")]
    pub node_id: String,
    /// Where the node listens, `host:port` with an optional `scheme://`.
    #[prost(string, tag = "3")]
    pub listen_addr: String,
    /// The network (chain) id; nodes of different networks never connect.
    #[prost(string, tag = "4")]
    pub network: String,
    /// Software version, free text.
    #[prost(string, tag = "5")]
    pub version: String,
    /// The channels the node serves, one byte each.
    #[prost(bytes = "vec", tag = "6")]
    pub channels: Vec<u8>,
    /// A human-readable name.
    #[prost(string, tag = "7")]
    pub moniker: String,
    /// Tendermint's RPC-related extras.
    #[prost(message, optional, tag = "8")]
    pub other: Option<NodeInfoOther>,
}

/// Why a [`NodeInfo`] is invalid on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeInfoError {
    /// The node id is malformed.
    #[error("invalid node id: {0}")]
    NodeId(#[from] NodeIdError),
    /// The listen address is not `host:port`.
    #[error("invalid listen address {address:?}: {reason}")]
    ListenAddr {
        /// The address as sent.
        address: String,
        /// What is wrong with it.
        reason: ParseAddressError,
    },
    /// More than [`MAX_CHANNELS`] channels.
    #[error("{0} channels declared, at most {MAX_CHANNELS} allowed")]
    TooManyChannels(usize),
    /// A channel is listed twice.
    #[error("channel {0} listed twice")]
    DuplicateChannel(ChannelId),
    /// A text field holds a non-printable or non-ASCII character.
    #[error("field {0} must be printable ASCII")]
    NotPrintable(&'static str),
    /// The moniker is empty or only spaces.
    #[error("moniker must not be empty")]
    EmptyMoniker,
    /// The version is only spaces (it may be empty).
    #[error("version must not be blank")]
    BlankVersion,
    /// `other.tx_index` is not `"on"`, `"off"` or empty (CometBFT refuses
    /// the peer otherwise).
    #[error("other.tx_index must be \"on\", \"off\" or empty")]
    TxIndex,
    /// The network id is empty.
    #[error("network must not be empty")]
    EmptyNetwork,
}

/// Why two valid [`NodeInfo`]s cannot connect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IncompatibleError {
    /// The block protocol versions differ.
    #[error("block protocol {theirs} differs from ours ({ours})")]
    BlockVersion {
        /// Ours.
        ours: u64,
        /// Theirs.
        theirs: u64,
    },
    /// The networks differ.
    #[error("network {theirs:?} differs from ours ({ours:?})")]
    Network {
        /// Ours.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// No channel in common.
    #[error("no channel in common (ours {ours:?}, theirs {theirs:?})")]
    NoCommonChannel {
        /// Ours.
        ours: Vec<u8>,
        /// Theirs.
        theirs: Vec<u8>,
    },
}

fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl NodeInfo {
    /// A `NodeInfo` with our protocol versions and no channels yet.
    pub fn new(node_id: NodeId, network: impl Into<String>, moniker: impl Into<String>) -> Self {
        Self {
            protocol_version: Some(ProtocolVersion {
                p2p: P2P_PROTOCOL,
                block: BLOCK_PROTOCOL,
                app: 0,
            }),
            node_id: node_id.to_string(),
            network: network.into(),
            moniker: moniker.into(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            other: Some(NodeInfoOther::default()),
            ..Self::default()
        }
    }

    /// The declared node id, parsed in its wire form (lower case only).
    pub fn parsed_node_id(&self) -> Result<NodeId, NodeIdError> {
        NodeId::parse_wire(&self.node_id)
    }

    /// The declared channels.
    pub fn channel_ids(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.channels.iter().map(|&c| ChannelId(c))
    }

    /// Whether the node declared `channel`.
    pub fn has_channel(&self, channel: ChannelId) -> bool {
        self.channels.contains(&channel.0)
    }

    fn versions(&self) -> ProtocolVersion {
        self.protocol_version.unwrap_or_default()
    }

    /// Checks the fields on their own, as received from a peer.
    pub fn validate(&self) -> Result<(), NodeInfoError> {
        self.parsed_node_id()?;
        self.validate_listen_addr()?;
        if self.channels.len() > MAX_CHANNELS {
            return Err(NodeInfoError::TooManyChannels(self.channels.len()));
        }
        let mut seen = BTreeSet::new();
        for id in self.channel_ids() {
            if !seen.insert(id) {
                return Err(NodeInfoError::DuplicateChannel(id));
            }
        }
        let other = self.other.clone().unwrap_or_default();
        for (name, value) in [
            ("network", &self.network),
            ("version", &self.version),
            ("moniker", &self.moniker),
            ("other.tx_index", &other.tx_index),
            ("other.rpc_address", &other.rpc_address),
        ] {
            if !printable(value) {
                return Err(NodeInfoError::NotPrintable(name));
            }
        }
        if self.network.is_empty() {
            return Err(NodeInfoError::EmptyNetwork);
        }
        // CometBFT's checks: a moniker with something besides spaces, a
        // version that is empty or not blank, a known tx_index value.
        if self.moniker.trim_matches(' ').is_empty() {
            return Err(NodeInfoError::EmptyMoniker);
        }
        if !self.version.is_empty() && self.version.trim_matches(' ').is_empty() {
            return Err(NodeInfoError::BlankVersion);
        }
        if !matches!(other.tx_index.as_str(), "" | "on" | "off") {
            return Err(NodeInfoError::TxIndex);
        }
        Ok(())
    }

    fn validate_listen_addr(&self) -> Result<(), NodeInfoError> {
        let error = |reason| NodeInfoError::ListenAddr {
            address: self.listen_addr.clone(),
            reason,
        };
        // A memory-transport node listens at `memory:<node-id>`.
        if let Some(id) = self.listen_addr.strip_prefix("memory:") {
            return match id.parse::<NodeId>() {
                Ok(_) => Ok(()),
                Err(e) => Err(error(ParseAddressError::InvalidNodeId(e))),
            };
        }
        // Tendermint writes `tcp://host:port`; the scheme says nothing the
        // handshake needs, so any is accepted.
        let hostport = match self.listen_addr.split_once("://") {
            Some((_, rest)) => rest,
            None => &self.listen_addr,
        };
        if !printable(hostport) {
            return Err(error(ParseAddressError::InvalidCharacter { position: 0 }));
        }
        let (_, port) = split_host_port(hostport).map_err(error)?;
        match parse_port(port.ok_or(ParseAddressError::MissingPort).map_err(error)?) {
            // Port 0 means "not dialable" (a node bound to an ephemeral
            // port, as Tendermint test nodes announce): valid, as
            // Tendermint accepts it; it is simply never dialed.
            Ok(_) | Err(ParseAddressError::PortZero) => {}
            Err(e) => return Err(error(e)),
        }
        Ok(())
    }

    /// Where the peer says it can be dialed over `protocol`, as an address
    /// for the address book: `None` when its `listen_addr` is not dialable
    /// (port 0, unparsable, or a memory address of another node). An
    /// unspecified IP (`0.0.0.0`, `::`: "every interface") is replaced by
    /// `remote`, the address the connection came from.
    pub fn self_address(&self, protocol: Protocol, remote: Option<IpAddr>) -> Option<PeerAddress> {
        let id = self.node_id.parse::<NodeId>().ok()?;
        if let Some(memory) = self.listen_addr.strip_prefix("memory:") {
            let listed = memory.parse::<NodeId>().ok()?;
            return (protocol == Protocol::Memory && listed == id).then(|| PeerAddress::memory(id));
        }
        if protocol == Protocol::Memory {
            return None;
        }
        let hostport = self
            .listen_addr
            .split_once("://")
            .map_or(self.listen_addr.as_str(), |(_, rest)| rest);
        let (host, port) = split_host_port(hostport).ok()?;
        let port = parse_port(port?).ok()?;
        let host = match host {
            Host::Ipv4(ip) if ip.is_unspecified() => Host::from(remote?),
            Host::Ipv6(ip) if ip.is_unspecified() => Host::from(remote?),
            host => host,
        };
        Some(PeerAddress::new(protocol, id, host, port))
    }

    /// Checks that a peer with `other` can talk to us: same block protocol,
    /// same network, at least one common channel.
    pub fn compatible_with(&self, other: &NodeInfo) -> Result<(), IncompatibleError> {
        let (ours, theirs) = (self.versions().block, other.versions().block);
        if ours != theirs {
            return Err(IncompatibleError::BlockVersion { ours, theirs });
        }
        if self.network != other.network {
            return Err(IncompatibleError::Network {
                ours: self.network.clone(),
                theirs: other.network.clone(),
            });
        }
        if !self.channels.iter().any(|c| other.channels.contains(c)) {
            return Err(IncompatibleError::NoCommonChannel {
                ours: self.channels.clone(),
                theirs: other.channels.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Any bytes from a peer: decoding, checking and comparing
            /// never panic.
            #[test]
            fn any_bytes_as_node_info_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                if let Ok(theirs) = NodeInfo::decode(&bytes[..]) {
                    let _ = theirs.validate();
                    let _ = info().compatible_with(&theirs);
                    let _ = theirs.parsed_node_id();
                }
            }

            #[test]
            fn node_info_round_trips(
                moniker in "[a-z]{1,20}",
                channels in proptest::collection::btree_set(any::<u8>(), 1..16),
                port in any::<u16>(),
            ) {
                let mut i = info();
                i.moniker = moniker;
                i.channels = channels.into_iter().collect();
                i.listen_addr = format!("127.0.0.1:{port}");
                let decoded = NodeInfo::decode(&i.encode_to_vec()[..]).unwrap();
                prop_assert_eq!(&decoded, &i);
                prop_assert_eq!(decoded.validate(), Ok(()));
            }
        }
    }
    use crate::identity::NodeKey;
    use prost::Message;

    fn info() -> NodeInfo {
        let mut info = NodeInfo::new(NodeKey::from_seed([1; 32]).node_id(), "test-chain", "node0");
        info.listen_addr = "tcp://0.0.0.0:26656".into();
        info.channels = vec![0x20, 0x21, 0x30];
        info
    }

    #[test]
    fn valid_node_info_passes() {
        assert_eq!(info().validate(), Ok(()));
        let mut i = info();
        i.listen_addr = "[::1]:1".into();
        assert_eq!(i.validate(), Ok(()));
        i.listen_addr = "localhost:26656".into();
        assert_eq!(i.validate(), Ok(()));
        i.listen_addr = format!("memory:{}", i.node_id);
        assert_eq!(i.validate(), Ok(()));
    }

    #[test]
    fn validate_accepts_port_zero_as_not_dialable() {
        let mut i = info();
        for addr in ["0.0.0.0:0", "tcp://0.0.0.0:0", "[::]:0"] {
            i.listen_addr = addr.into();
            assert_eq!(i.validate(), Ok(()), "{addr}");
        }
    }

    #[test]
    fn validate_reports_exactly_what_is_wrong() {
        let check = |f: &dyn Fn(&mut NodeInfo), expected: NodeInfoError| {
            let mut i = info();
            f(&mut i);
            assert_eq!(i.validate(), Err(expected));
        };
        check(
            &|i| i.node_id = "xyz".into(),
            NodeInfoError::NodeId(NodeIdError::Length(3)),
        );
        let first_letter = info().node_id.find(|c: char| c.is_ascii_alphabetic());
        check(
            &|i| i.node_id = i.node_id.to_uppercase(),
            NodeInfoError::NodeId(NodeIdError::NotLowerCase {
                position: first_letter.unwrap(),
            }),
        );
        check(
            &|i| i.channels = (0..17).collect(),
            NodeInfoError::TooManyChannels(17),
        );
        check(
            &|i| i.channels = vec![1, 2, 1],
            NodeInfoError::DuplicateChannel(ChannelId(1)),
        );
        check(&|i| i.moniker = String::new(), NodeInfoError::EmptyMoniker);
        check(&|i| i.moniker = "   ".into(), NodeInfoError::EmptyMoniker);
        check(&|i| i.version = "  ".into(), NodeInfoError::BlankVersion);
        check(
            &|i| {
                i.other = Some(NodeInfoOther {
                    tx_index: "maybe".into(),
                    rpc_address: String::new(),
                })
            },
            NodeInfoError::TxIndex,
        );
        check(&|i| i.network = String::new(), NodeInfoError::EmptyNetwork);
        check(
            &|i| i.moniker = "tab\there".into(),
            NodeInfoError::NotPrintable("moniker"),
        );
        check(
            &|i| i.version = "é".into(),
            NodeInfoError::NotPrintable("version"),
        );
        check(
            &|i| {
                i.other = Some(NodeInfoOther {
                    tx_index: "\0".into(),
                    rpc_address: String::new(),
                })
            },
            NodeInfoError::NotPrintable("other.tx_index"),
        );
        check(
            &|i| i.listen_addr = "0.0.0.0".into(),
            NodeInfoError::ListenAddr {
                address: "0.0.0.0".into(),
                reason: ParseAddressError::MissingPort,
            },
        );
        check(
            &|i| i.listen_addr = String::new(),
            NodeInfoError::ListenAddr {
                address: String::new(),
                reason: ParseAddressError::MissingHost,
            },
        );
        check(
            &|i| i.listen_addr = "h:70000".into(),
            NodeInfoError::ListenAddr {
                address: "h:70000".into(),
                reason: ParseAddressError::PortOutOfRange("70000".into()),
            },
        );
    }

    #[test]
    fn empty_node_info_is_invalid() {
        assert!(NodeInfo::default().validate().is_err());
    }

    #[test]
    fn compatible_with_says_what_differs() {
        let a = info();
        assert_eq!(a.compatible_with(&a), Ok(()));

        let mut b = info();
        b.network = "other".into();
        assert_eq!(
            a.compatible_with(&b),
            Err(IncompatibleError::Network {
                ours: "test-chain".into(),
                theirs: "other".into()
            })
        );

        let mut b = info();
        b.protocol_version = Some(ProtocolVersion {
            p2p: 8,
            block: 10,
            app: 0,
        });
        assert_eq!(
            a.compatible_with(&b),
            Err(IncompatibleError::BlockVersion {
                ours: 11,
                theirs: 10
            })
        );

        let mut b = info();
        b.channels = vec![0x40];
        assert!(matches!(
            a.compatible_with(&b),
            Err(IncompatibleError::NoCommonChannel { .. })
        ));

        let mut b = info();
        b.channels = vec![0x40, 0x30];
        assert_eq!(a.compatible_with(&b), Ok(()));
    }

    /// Field numbers and types match `tendermint.p2p.NodeInfo`; this pins the
    /// encoding so a change to them cannot go unnoticed.
    #[test]
    fn wire_encoding_matches_tendermint_field_layout() {
        let i = NodeInfo {
            protocol_version: Some(ProtocolVersion {
                p2p: 8,
                block: 11,
                app: 0,
            }),
            node_id: "ab".into(),
            listen_addr: "c".into(),
            network: "n".into(),
            version: "v".into(),
            channels: vec![0x20],
            moniker: "m".into(),
            other: Some(NodeInfoOther {
                tx_index: "on".into(),
                rpc_address: String::new(),
            }),
        };
        let bytes = i.encode_to_vec();
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "0a04", "0808", "100b", // protocol_version {p2p: 8, block: 11}
                "1202", "6162", // node_id "ab"
                "1a01", "63", // listen_addr "c"
                "2201", "6e", // network "n"
                "2a01", "76", // version "v"
                "3201", "20", // channels [0x20]
                "3a01", "6d", // moniker "m"
                "4204", "0a02", "6f6e", // other {tx_index: "on"}
            )
        );
        assert_eq!(NodeInfo::decode(&bytes[..]).unwrap(), i);
    }

    #[test]
    fn self_address_is_the_dialable_listen_address_of_that_transport() {
        use std::net::{IpAddr, Ipv4Addr};
        let key = crate::identity::NodeKey::from_seed([4; 32]);
        let id = key.node_id();
        let mut i = NodeInfo::new(id, "net", "m");
        let remote = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)));
        let at = |i: &NodeInfo, p| i.self_address(p, remote).map(|a| a.to_string());
        i.listen_addr = "tcp://0.0.0.0:26656".into();
        assert_eq!(
            at(&i, Protocol::Mconn),
            Some(format!("mconn://{id}@10.0.0.7:26656"))
        );
        i.listen_addr = "127.0.0.1:5000".into();
        assert_eq!(
            at(&i, Protocol::Quic),
            Some(format!("quic://{id}@127.0.0.1:5000"))
        );
        i.listen_addr = "[::]:5000".into();
        assert_eq!(
            at(&i, Protocol::Quic),
            Some(format!("quic://{id}@10.0.0.7:5000"))
        );
        assert_eq!(
            i.self_address(Protocol::Quic, None),
            None,
            "unspecified, no remote"
        );
        i.listen_addr = "0.0.0.0:0".into();
        assert_eq!(at(&i, Protocol::Quic), None, "port 0: dial only");
        i.listen_addr = format!("memory:{id}");
        assert_eq!(at(&i, Protocol::Memory), Some(format!("memory:{id}")));
        assert_eq!(at(&i, Protocol::Quic), None);
        let other = crate::identity::NodeKey::from_seed([5; 32]).node_id();
        i.listen_addr = format!("memory:{other}");
        assert_eq!(at(&i, Protocol::Memory), None, "another node's address");
    }
}
