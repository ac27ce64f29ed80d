//! The router's handshake rules, as pure functions: what a peer's
//! `NodeInfo` must satisfy, and which of two connections to one peer wins.

use std::time::Duration;

use ed25519_dalek::VerifyingKey;

use crate::identity::NodeId;
use crate::node_info::{IncompatibleError, NodeInfo, NodeInfoError};
use crate::peer_manager::Direction;

/// Why a handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer's `NodeInfo` is malformed.
    #[error("invalid NodeInfo: {0}")]
    InvalidNodeInfo(#[from] NodeInfoError),
    /// `NodeInfo.node_id` is not the id of the authenticated key.
    #[error("NodeInfo claims {claimed}, but the peer's key is {authenticated}")]
    KeyMismatch {
        /// The id in `NodeInfo`.
        claimed: String,
        /// The id of the authenticated key.
        authenticated: NodeId,
    },
    /// The peer is not the one the dialed address names.
    #[error("dialed {expected}, but reached {actual}")]
    WrongPeer {
        /// The id in the dialed address.
        expected: NodeId,
        /// The id of the peer reached.
        actual: NodeId,
    },
    /// The peer is this node.
    #[error("connection to self")]
    SelfConnection,
    /// The peer cannot talk to us (other network, no common channel...).
    #[error("incompatible peer: {0}")]
    Incompatible(#[from] IncompatibleError),
    /// The transport found the peer incompatible before any exchange
    /// (another network or protocol version, e.g. a QUIC ALPN mismatch).
    #[error("incompatible transport: {0}")]
    IncompatibleTransport(crate::transport::IncompatibleKind),
    /// The peer refused us.
    #[error("refused by peer: {0:?}")]
    Refused(crate::transport::RefusalReason),
    /// The transport failed during the handshake.
    #[error("transport: {0}")]
    Transport(#[from] crate::transport::ConnectionError),
    /// The handshake took too long.
    #[error("handshake timed out")]
    Timeout,
}

impl HandshakeError {
    /// Whether the peer should be marked inactive (it belongs elsewhere).
    pub(crate) fn marks_inactive(&self) -> bool {
        matches!(
            self,
            HandshakeError::Incompatible(
                IncompatibleError::Network { .. } | IncompatibleError::NoCommonChannel { .. }
            ) | HandshakeError::IncompatibleTransport(_)
        )
    }
}

/// Checks a peer's `NodeInfo` against its authenticated key, the id we
/// dialed (if we dialed), our own id and our `NodeInfo`. Returns the peer's
/// id.
pub(crate) fn check_peer_info(
    ours: &NodeInfo,
    theirs: &NodeInfo,
    peer_key: &VerifyingKey,
    dialed: Option<NodeId>,
    self_id: NodeId,
) -> Result<NodeId, HandshakeError> {
    let authenticated = NodeId::from_public_key(peer_key);
    if let Some(expected) = dialed {
        if expected != authenticated {
            return Err(HandshakeError::WrongPeer {
                expected,
                actual: authenticated,
            });
        }
    }
    theirs.validate()?;
    if theirs.parsed_node_id().ok() != Some(authenticated) {
        return Err(HandshakeError::KeyMismatch {
            claimed: theirs.node_id.clone(),
            authenticated,
        });
    }
    if authenticated == self_id {
        return Err(HandshakeError::SelfConnection);
    }
    ours.compatible_with(theirs)?;
    Ok(authenticated)
}

/// Decides whether a new connection to `peer` replaces an existing one.
///
/// - An existing connection older than `takeover_after` is taken over: the
///   peer would not dial or accept again if its side were alive, so it
///   restarted or lost the connection.
/// - Two young connections are a simultaneous dial: both nodes keep the one
///   dialed by the larger node id, so they agree without talking.
/// - Two young connections in the same direction: the newer wins (a quick
///   restart).
pub(crate) fn new_connection_wins(
    self_id: NodeId,
    peer: NodeId,
    existing: Direction,
    existing_age: Duration,
    new: Direction,
    takeover_after: Duration,
) -> bool {
    if existing_age >= takeover_after || existing == new {
        return true;
    }
    let dialer = |d: Direction| match d {
        Direction::Outbound => self_id,
        Direction::Inbound => peer,
    };
    dialer(new) == self_id.max(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelId;
    use crate::identity::NodeKey;

    fn info(key: &NodeKey, network: &str, channels: &[u8]) -> NodeInfo {
        let mut i = NodeInfo::new(key.node_id(), network, "m");
        i.listen_addr = "127.0.0.1:1".into();
        i.channels = channels.to_vec();
        i
    }

    #[test]
    fn check_peer_info_accepts_a_good_peer() {
        let (me, them) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
        let ours = info(&me, "n", &[1, 2]);
        let theirs = info(&them, "n", &[2, 3]);
        let got = check_peer_info(
            &ours,
            &theirs,
            &them.public_key(),
            Some(them.node_id()),
            me.node_id(),
        );
        assert_eq!(got, Ok(them.node_id()));
        assert!(ours.has_channel(ChannelId(2)));
    }

    #[test]
    fn check_peer_info_refusals_are_typed() {
        let (me, them, other) = (
            NodeKey::from_seed([1; 32]),
            NodeKey::from_seed([2; 32]),
            NodeKey::from_seed([3; 32]),
        );
        let ours = info(&me, "n", &[1]);
        let good = info(&them, "n", &[1]);
        let key = them.public_key();
        let check = |theirs: &NodeInfo, key: &VerifyingKey, dialed| {
            check_peer_info(&ours, theirs, key, dialed, me.node_id())
        };
        assert!(matches!(
            check(&NodeInfo::default(), &key, None),
            Err(HandshakeError::InvalidNodeInfo(_))
        ));
        assert!(matches!(
            check(&info(&other, "n", &[1]), &key, None),
            Err(HandshakeError::KeyMismatch { .. })
        ));
        assert!(matches!(
            check(&good, &key, Some(other.node_id())),
            Err(HandshakeError::WrongPeer { .. })
        ));
        assert_eq!(
            check(&info(&me, "n", &[1]), &me.public_key(), None),
            Err(HandshakeError::SelfConnection)
        );
        let e = check(&info(&them, "other", &[1]), &key, None).unwrap_err();
        assert!(e.marks_inactive(), "{e}");
        let e = check(&info(&them, "n", &[9]), &key, None).unwrap_err();
        assert!(e.marks_inactive(), "{e}");
    }

    #[test]
    fn simultaneous_dial_keeps_the_connection_dialed_by_the_larger_id() {
        let small = NodeId::from_bytes([1; 20]);
        let large = NodeId::from_bytes([2; 20]);
        let young = Duration::from_millis(1);
        let window = Duration::from_secs(5);
        use Direction::{Inbound, Outbound};
        // On the small node: its outbound loses to the large node's dial.
        assert!(new_connection_wins(
            small, large, Outbound, young, Inbound, window
        ));
        assert!(!new_connection_wins(
            small, large, Inbound, young, Outbound, window
        ));
        // On the large node: its own dial wins, whichever arrives first.
        assert!(!new_connection_wins(
            large, small, Outbound, young, Inbound, window
        ));
        assert!(new_connection_wins(
            large, small, Inbound, young, Outbound, window
        ));
    }

    #[test]
    fn restarted_peer_takes_over_an_old_connection() {
        let small = NodeId::from_bytes([1; 20]);
        let large = NodeId::from_bytes([2; 20]);
        let window = Duration::from_secs(5);
        use Direction::{Inbound, Outbound};
        assert!(new_connection_wins(
            large, small, Outbound, window, Inbound, window
        ));
        assert!(new_connection_wins(
            small,
            large,
            Inbound,
            Duration::ZERO,
            Inbound,
            window
        ));
    }
}
