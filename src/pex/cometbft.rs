//! CometBFT's peer exchange, spoken with every peer on MConnection.
//!
//! What a Tendermint v0.34 or CometBFT v0.37/v0.38 PEX reactor
//! (`p2p/pex/pex_reactor.go`, `p2p/netaddress.go`) enforces, held against
//! such peers and obeyed by us so that they never drop or ban us:
//!
//! | rule | CometBFT | value here | enforced in |
//! |---|---|---|---|
//! | least time between two requests from one peer | `ensurePeersPeriod / 3` (30 s / 3); a peer asking sooner is disconnected and banned for 24 h | [`MIN_REQUEST_INTERVAL`] = 10 s | `PexState::on_request` |
//! | requests before that interval applies | the first two (the first is recorded with a zero time, the second passes free) | [`FREE_REQUESTS`] = 2 | `PexState::on_request` |
//! | our requests to one peer | must keep the rule above | at most one per [`OUR_REQUEST_SPACING`] = 11 s (1 s for jitter) | `PexState::poll_request` |
//! | a response only to an outstanding request, one outstanding per peer | `requestsSent`; otherwise `ErrUnsolicitedList`: disconnect and ban | same; a request is never timed out on their side, so a late answer to ours is accepted | `PexState::on_response` |
//! | most addresses in a response | `maxGetSelection` | [`MAX_ADDRESSES_RECEIVED`] = 250 accepted; we send at most `PexOptions::max_addresses` (≤ 100) | `PexState::on_response`, `Reactor::on_request` |
//! | largest PEX message | `maxMsgSize` = 256 × 250 bytes | 64,000 ≤ our 64 KiB channel maximum | `pex_channel_descriptor` |
//! | an address whose `ip` does not parse, or `port` > 65535 | `NetAddressFromProto` fails: disconnect and ban | the whole response is refused (`PexViolation::BadIp` / `BadPort`), the peer disconnected | [`parse`] |
//! | an address that parses but is not `Valid()`: id not 20 bytes of hex, unspecified IP, 2001:db8::/32, 255.255.255.255 | skipped by the address book | skipped (also port 0: not dialable) | [`parse`] |
//! | a non-routable address (RFC 1918, 3927, 4862, 4193, 4843, loopback, 0.0.0.0/8) | skipped when `addr_book_strict` (their default) | skipped both ways when `PexOptions::strict_addresses` (default off, for local networks) | [`parse`], [`advertisable`] |
//! | what a peer may be told | any `NetAddress`: an IP literal and a port, no DNS names, no scheme | only `mconn://` addresses with an IP literal that pass the checks above | [`advertisable`] |
//! | a message that is neither request nor response | unwrapping fails: disconnect | `PexViolation::Empty`, disconnect | `Reactor::on_message` |
//! | a seed | answers an inbound peer's request once, then hangs up | a seed we dial is asked at once (as every new peer); its answer is kept even when our reactor sees the hang-up first; the hang-up counts as a short visit, so the seed is redialed only after the dial backoff | `PexState::peer_down` / `on_response`, the peer manager |
//! | an inbound peer's own address | `NodeInfo.listen_addr` goes into the book | the same (every transport) | the router's inbound path |

use std::net::IpAddr;
use std::time::Duration;

use super::messages::PexAddress;
use super::state::PexViolation;
use crate::address::{Host, PeerAddress, Protocol};
use crate::identity::NodeId;

/// The least time between two requests from one peer.
pub const MIN_REQUEST_INTERVAL: Duration = Duration::from_secs(10);

/// Requests a peer may send before [`MIN_REQUEST_INTERVAL`] applies.
pub const FREE_REQUESTS: u32 = 2;

/// The least time between two of our requests to one CometBFT peer.
pub const OUR_REQUEST_SPACING: Duration = Duration::from_secs(11);

/// The most addresses accepted in one response (CometBFT sends up to 250).
pub const MAX_ADDRESSES_RECEIVED: usize = 250;

/// An address from a CometBFT peer: `Ok(None)` when their address book
/// would skip it, an error when their decoder would refuse the message.
pub(crate) fn parse(
    address: &PexAddress,
    strict: bool,
) -> Result<Option<PeerAddress>, PexViolation> {
    let ip: IpAddr = address.ip.parse().map_err(|_| PexViolation::BadIp {
        ip: truncated(&address.ip),
    })?;
    let port =
        u16::try_from(address.port).map_err(|_| PexViolation::BadPort { port: address.port })?;
    let Ok(id) = address.id.to_ascii_lowercase().parse::<NodeId>() else {
        return Ok(None);
    };
    if port == 0 || !valid_ip(ip) || (strict && !routable(ip)) {
        return Ok(None);
    }
    Ok(Some(PeerAddress::new(
        Protocol::Mconn,
        id,
        Host::from(ip),
        port,
    )))
}

/// `address` as a CometBFT peer can dial and check it, if it can.
pub(crate) fn advertisable(address: &PeerAddress, strict: bool) -> Option<PexAddress> {
    if address.protocol() != Protocol::Mconn {
        return None;
    }
    let ip = match address.host()? {
        Host::Ipv4(ip) => IpAddr::V4(*ip),
        Host::Ipv6(ip) => IpAddr::V6(*ip),
        Host::Dns(_) => return None,
    };
    let port = address.port().filter(|p| *p != 0)?;
    if !valid_ip(ip) || (strict && !routable(ip)) {
        return None;
    }
    Some(PexAddress::net(
        address.node_id().to_string(),
        ip.to_string(),
        u32::from(port),
    ))
}

/// CometBFT's `NetAddress.Valid` on the IP: not unspecified, not the
/// IPv6 documentation prefix (RFC 3849), not the IPv4 broadcast address.
fn valid_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_broadcast(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let documentation = s[0] == 0x2001 && s[1] == 0x0db8;
            !(v6.is_unspecified() || documentation)
        }
    }
}

/// CometBFT's `NetAddress.Routable` on the IP: none of the private,
/// link-local, unique-local, ORCHID or local ranges.
fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            // RFC 1918, RFC 3927, loopback and 0.0.0.0/8.
            !(v4.is_private() || v4.is_link_local() || v4.is_loopback() || o[0] == 0)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let link_local = s[0] == 0xfe80 && s[1..4] == [0, 0, 0]; // RFC 4862
            let unique_local = s[0] & 0xfe00 == 0xfc00; // RFC 4193
            let orchid = s[0] == 0x2001 && s[1] & 0xfff0 == 0x0010; // RFC 4843
            !(link_local || unique_local || orchid || v6.is_loopback())
        }
    }
}

fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    mod properties {
        use proptest::prelude::*;
        use prost::Message;

        use super::*;
        use crate::pex::PexMessage;

        proptest! {
            /// Any bytes on the PEX channel: decoding and reading every
            /// address in both dialects never panic, and what parses as a
            /// CometBFT address is one we would tell them again.
            #[test]
            fn any_bytes_as_a_pex_message_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let Ok(message) = PexMessage::decode(&bytes[..]) else { return Ok(()) };
                let Some(crate::pex::PexSum::Response(response)) = message.sum else { return Ok(()) };
                for a in &response.addresses {
                    let _ = a.url.parse::<PeerAddress>();
                    for strict in [false, true] {
                        if let Ok(Some(address)) = parse(a, strict) {
                            prop_assert!(advertisable(&address, strict).is_some());
                        }
                    }
                }
            }

            /// Their shape of address: any id, IP text and port.
            #[test]
            fn any_cometbft_address_parses_or_is_refused(
                id in "[0-9a-fA-F]{0,44}",
                ip in "[0-9a-f.:]{0,40}",
                port in any::<u32>(),
            ) {
                let a = PexAddress::net(id, ip, port);
                if let Ok(Some(address)) = parse(&a, false) {
                    let again = advertisable(&address, false);
                    prop_assert!(again.is_some());
                }
            }
        }
    }
    use crate::identity::NodeKey;

    fn id() -> NodeId {
        NodeKey::from_seed([3; 32]).node_id()
    }

    fn net(ip: &str, port: u32) -> PexAddress {
        PexAddress::net(id().to_string(), ip, port)
    }

    #[test]
    fn an_unparsable_ip_or_a_port_over_65535_refuses_the_message() {
        assert!(matches!(
            parse(&net("", 26656), false),
            Err(PexViolation::BadIp { .. })
        ));
        assert!(matches!(
            parse(&net("example.com", 26656), false),
            Err(PexViolation::BadIp { .. })
        ));
        assert_eq!(
            parse(&net("1.2.3.4", 65536), false),
            Err(PexViolation::BadPort { port: 65536 })
        );
    }

    #[test]
    fn addresses_their_book_would_skip_are_skipped() {
        let bad_id = PexAddress::net("zz", "1.2.3.4", 26656);
        let short_id = PexAddress::net("abcd", "1.2.3.4", 26656);
        for skipped in [
            bad_id,
            short_id,
            net("0.0.0.0", 26656),
            net("::", 26656),
            net("255.255.255.255", 26656),
            net("2001:db8::1", 26656),
            net("1.2.3.4", 0),
        ] {
            assert_eq!(parse(&skipped, false), Ok(None), "{skipped:?}");
        }
        // Upper-case hex is a valid id to them, and to us.
        let upper = PexAddress::net(id().to_string().to_uppercase(), "1.2.3.4", 26656);
        assert!(parse(&upper, false).unwrap().is_some());
    }

    #[test]
    fn strict_mode_skips_what_is_not_routable() {
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.0.1",
            "127.0.0.1",
            "0.1.2.3",
            "fe80::1",
            "fc00::1",
            "2001:10::1",
            "::1",
        ] {
            assert!(
                parse(&net(private, 1), false).unwrap().is_some(),
                "{private}"
            );
            assert_eq!(parse(&net(private, 1), true), Ok(None), "{private}");
        }
        for public in ["1.2.3.4", "2a01::1"] {
            assert!(parse(&net(public, 1), true).unwrap().is_some(), "{public}");
        }
    }

    #[test]
    fn only_mconn_addresses_with_ip_literals_are_advertised() {
        let mconn = PeerAddress::new(
            Protocol::Mconn,
            id(),
            Host::Ipv4([1, 2, 3, 4].into()),
            26656,
        );
        assert_eq!(
            advertisable(&mconn, false),
            Some(PexAddress::net(id().to_string(), "1.2.3.4", 26656))
        );
        let v6 = PeerAddress::new(
            Protocol::Mconn,
            id(),
            Host::Ipv6("2a01::7".parse().unwrap()),
            9,
        );
        assert_eq!(advertisable(&v6, false).unwrap().ip, "2a01::7");
        let quic = PeerAddress::new(Protocol::Quic, id(), Host::Ipv4([1, 2, 3, 4].into()), 26656);
        let dns = PeerAddress::new(
            Protocol::Mconn,
            id(),
            Host::Dns("node.example".into()),
            26656,
        );
        let local = PeerAddress::new(
            Protocol::Mconn,
            id(),
            Host::Ipv4([127, 0, 0, 1].into()),
            26656,
        );
        assert_eq!(advertisable(&quic, false), None);
        assert_eq!(advertisable(&dns, false), None);
        assert_eq!(advertisable(&PeerAddress::memory(id()), false), None);
        assert!(advertisable(&local, false).is_some());
        assert_eq!(advertisable(&local, true), None);
    }
}
