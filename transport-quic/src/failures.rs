//! What a failed QUIC handshake says: the dial error or accept failure a
//! connection error maps to, from our verifier's verdict or the peer's
//! TLS alert.

use p2p_router::transport::{AcceptFailure, AuthFailure, IncompatibleKind};
use p2p_router::DialError;

use crate::tls::CertificateError;

/// Maps a failed QUIC handshake to the dial error a caller can act on.
pub(crate) fn dial_error(
    error: quinn::ConnectionError,
    verdict: Option<CertificateError>,
) -> DialError {
    match verdict {
        Some(CertificateError::WrongNodeId { expected, actual }) => {
            return DialError::WrongPeer { expected, actual }
        }
        Some(other) => return DialError::Authentication(other.auth_failure()),
        None => {}
    }
    match &error {
        quinn::ConnectionError::ConnectionClosed(close) => match tls_alert(close.error_code) {
            Some(NO_APPLICATION_PROTOCOL) => DialError::Incompatible(IncompatibleKind::Alpn),
            Some(alert) => DialError::Authentication(AuthFailure::TlsAlert(alert)),
            // CONNECTION_REFUSED: the listener refused before any TLS work
            // (over its limits); any other code: it will not talk.
            None => DialError::Refused,
        },
        quinn::ConnectionError::TimedOut => DialError::Timeout,
        quinn::ConnectionError::LocallyClosed => DialError::Closed,
        quinn::ConnectionError::TransportError(_) => DialError::Authentication(AuthFailure::Tls),
        // Reset, closed by the application, version mismatch: the peer
        // went away or will not talk.
        _ => DialError::Refused,
    }
}

/// What a failed incoming QUIC handshake says about the peer.
pub(crate) fn accept_failure(error: &quinn::ConnectionError) -> AcceptFailure {
    let aborted = AcceptFailure::Io(std::io::ErrorKind::ConnectionAborted);
    match error {
        quinn::ConnectionError::TimedOut => AcceptFailure::Timeout,
        // Our TLS refused the dialer, or (a close from the dialer) its TLS
        // refused us, say because we are not the node it meant to reach:
        // either way the alert says why.
        quinn::ConnectionError::TransportError(e) => {
            alert_failure(e.code).unwrap_or(AcceptFailure::Authentication(AuthFailure::Tls))
        }
        quinn::ConnectionError::ConnectionClosed(close) => {
            alert_failure(close.error_code).unwrap_or(aborted)
        }
        _ => aborted,
    }
}

/// What a TLS alert carried by `code` says, if it carries one.
fn alert_failure(code: quinn::TransportErrorCode) -> Option<AcceptFailure> {
    Some(match tls_alert(code)? {
        NO_APPLICATION_PROTOCOL => AcceptFailure::Incompatible(IncompatibleKind::Alpn),
        alert => AcceptFailure::Authentication(AuthFailure::TlsAlert(alert)),
    })
}

/// TLS alert `no_application_protocol` (RFC 7301).
const NO_APPLICATION_PROTOCOL: u8 = 120;

/// The TLS alert a crypto error code carries (RFC 9001 §4.8), if it is
/// one.
fn tls_alert(code: quinn::TransportErrorCode) -> Option<u8> {
    let code = u64::from(code);
    (0x100..0x200)
        .contains(&code)
        .then_some((code & 0xff) as u8)
}
