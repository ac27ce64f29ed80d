use super::*;

const ID: &str = "89006b58739b9db9d25e4295cdb96ab10ac1ef9f";
const ID_UPPER: &str = "89006B58739B9DB9D25E4295CDB96AB10AC1EF9F";

fn ok(input: String, normalized: String) {
    let parsed: PeerAddress = input
        .parse()
        .unwrap_or_else(|e| panic!("{input:?} should parse, got {e}"));
    assert_eq!(parsed.to_string(), normalized, "input {input:?}");
    let again: PeerAddress = normalized.parse().unwrap();
    assert_eq!(again, parsed, "round trip of {normalized:?}");
}

fn err(input: String, expected: ParseAddressError) {
    assert_eq!(
        input.parse::<PeerAddress>(),
        Err(expected),
        "input {input:?}"
    );
}

#[test]
fn valid_addresses_normalize() {
    let cases = [
        (
            format!("quic://{ID}@example.com:26656"),
            format!("quic://{ID}@example.com:26656"),
        ),
        (
            format!("QUIC://{ID_UPPER}@Example.COM:26656"),
            format!("quic://{ID}@example.com:26656"),
        ),
        (
            format!("mconn://{ID}@10.0.0.1:26657"),
            format!("mconn://{ID}@10.0.0.1:26657"),
        ),
        (
            format!("MConn://{ID}@node-1.local:1"),
            format!("mconn://{ID}@node-1.local:1"),
        ),
        (
            format!("{ID}@host:26656"),
            format!("quic://{ID}@host:26656"),
        ),
        (
            format!("{ID_UPPER}@HOST:65535"),
            format!("quic://{ID}@host:65535"),
        ),
        (
            format!("quic://{ID}@[::1]:26656"),
            format!("quic://{ID}@[::1]:26656"),
        ),
        (
            format!("quic://{ID}@[0:0:0:0:0:0:0:1]:26656"),
            format!("quic://{ID}@[::1]:26656"),
        ),
        (
            format!("quic://{ID}@[FE80::AB]:5"),
            format!("quic://{ID}@[fe80::ab]:5"),
        ),
        (format!("memory:{ID}"), format!("memory:{ID}")),
        (format!("Memory:{ID_UPPER}"), format!("memory:{ID}")),
        (format!("memory://{ID}"), format!("memory:{ID}")),
        // Found by the address fuzzer: a `://` in the path is not a scheme.
        (format!("memory://{ID}/a://b"), format!("memory:{ID}/a://b")),
        (format!("{ID}@h:1/x://y"), format!("quic://{ID}@h:1/x://y")),
        (
            format!("quic://{ID}@localhost:26656/some/path?x=1"),
            format!("quic://{ID}@localhost:26656/some/path?x=1"),
        ),
        (
            format!("quic://{ID}@h:7?query"),
            format!("quic://{ID}@h:7?query"),
        ),
        (format!("quic://{ID}@h:007"), format!("quic://{ID}@h:7")),
        (
            format!("quic://{ID}@under_score.example:80"),
            format!("quic://{ID}@under_score.example:80"),
        ),
        (
            format!("quic://{ID}@127.0.0.1:26656"),
            format!("quic://{ID}@127.0.0.1:26656"),
        ),
    ];
    for (input, normalized) in cases {
        ok(input, normalized);
    }
}

#[test]
fn invalid_addresses_give_precise_errors() {
    use ParseAddressError as E;
    let short = &ID[..39];
    let nonhex = format!("{}z", &ID[..39]);
    // Shorthands for the variants that carry the offending text.
    let scheme = |s: &str| E::UnknownScheme(s.into());
    let range = |s: &str| E::PortOutOfRange(s.into());
    let port = |s: &str| E::InvalidPort(s.into());
    let garbage = |s: &str| E::TrailingGarbage(s.into());
    let host = |s: &str| E::InvalidHost(s.into());
    let cases = [
        (String::new(), E::Empty),
        (format!("http://{ID}@host:1"), scheme("http")),
        (format!("TCP://{ID}@host:1"), scheme("tcp")),
        ("quic://host:26656".to_owned(), E::MissingNodeId),
        ("host:26656".to_owned(), E::MissingNodeId),
        ("quic://@host:26656".to_owned(), E::MissingNodeId),
        (
            format!("quic://{short}@host:1"),
            E::InvalidNodeId(NodeIdError::Length(39)),
        ),
        (
            format!("quic://{nonhex}@host:1"),
            E::InvalidNodeId(NodeIdError::NotHex { position: 39 }),
        ),
        (format!("quic://{ID}@"), E::MissingHost),
        (format!("quic://{ID}@:26656"), E::MissingHost),
        (format!("quic:{ID}@host:1"), E::MissingHost),
        (format!("quic://{ID}@host"), E::MissingPort),
        (format!("quic://{ID}@host:"), E::MissingPort),
        (format!("mconn://{ID}@[::1]"), E::MissingPort),
        (format!("quic://{ID}@host:0"), E::PortZero),
        (format!("quic://{ID}@host:65536"), range("65536")),
        (
            format!("quic://{ID}@host:99999999999999999999"),
            range("99999999999999999999"),
        ),
        (format!("quic://{ID}@host:-1"), port("-1")),
        (format!("quic://{ID}@host:26656x"), port("26656x")),
        (format!("quic://{ID}@::1:26656"), E::UnbracketedIpv6),
        (format!("quic://{ID}@[::1]x"), garbage("x")),
        (format!("quic://{ID}@[::1:26656"), host("[::1:26656")),
        (format!("quic://{ID}@[not-ip]:1"), host("[not-ip]")),
        (format!("quic://{ID}@bad..name:1"), host("bad..name")),
        (
            format!("quic://{ID}@-lead.example:1"),
            host("-lead.example"),
        ),
        (format!("quic://{ID}@256.1.1.1:1"), host("256.1.1.1")),
        (format!("quic://{ID}@a@b:1"), host("a@b")),
        (
            format!("quic://{ID}@host:1 "),
            E::InvalidCharacter {
                position: 7 + 40 + 7,
            },
        ),
        (
            format!(" quic://{ID}@host:1"),
            E::InvalidCharacter { position: 0 },
        ),
        (format!("memory:{ID}@host:1"), E::HostNotAllowed),
        ("memory:".to_owned(), E::MissingNodeId),
        (
            format!("memory:{ID}00"),
            E::InvalidNodeId(NodeIdError::Length(42)),
        ),
        (
            format!("quic://{ID}@{}:1", "a".repeat(64)),
            E::InvalidHost("a".repeat(64)),
        ),
    ];
    assert!(cases.len() >= 30);
    for (input, expected) in cases {
        err(input, expected);
    }
}

#[test]
fn accessors_expose_the_parts() {
    let a: PeerAddress = format!("mconn://{ID}@[::1]:9/x").parse().unwrap();
    assert_eq!(a.protocol(), Protocol::Mconn);
    assert_eq!(a.node_id().to_string(), ID);
    assert_eq!(a.host(), Some(&Host::Ipv6(Ipv6Addr::LOCALHOST)));
    assert_eq!(a.port(), Some(9));
    assert_eq!(a.path(), "/x");
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<PeerAddress>();
        }

        #[test]
        fn display_round_trips(
            id in proptest::array::uniform20(any::<u8>()),
            host in "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z][a-z0-9]{0,5}){0,3}",
            port in 1u16..,
            mconn in any::<bool>(),
        ) {
            let protocol = if mconn { Protocol::Mconn } else { Protocol::Quic };
            let host = Host::parse(&host).unwrap();
            let a = PeerAddress::new(protocol, NodeId::from_bytes(id), host, port);
            prop_assert_eq!(a.to_string().parse::<PeerAddress>().unwrap(), a);
        }
    }
}
