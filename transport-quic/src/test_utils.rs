//! For tests and benchmarks that speak TLS to the transport by hand
//! (feature `test-utils`): a verifier that takes any server certificate,
//! and the transport's own client verifier and crypto provider.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::tls::tls13_signatures;

/// Accepts any server certificate, but checks the TLS 1.3
/// handshake signature made with it, so a connection still proves
/// possession of the certificate's key. For hand-built clients (attackers,
/// the raw-quinn baseline), never for a node.
#[derive(Debug)]
pub struct AcceptAnyCert(pub Arc<CryptoProvider>);

impl AcceptAnyCert {
    /// With the ring provider.
    pub fn ring() -> Arc<Self> {
        Arc::new(Self(Arc::new(rustls::crypto::ring::default_provider())))
    }
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    tls13_signatures!(
        verify: |this, m, c, d| {
            rustls::crypto::verify_tls13_signature(m, c, d, &this.0.signature_verification_algorithms)
        },
        schemes: |this| this.0.signature_verification_algorithms.supported_schemes()
    );
}

/// The verifier a listener of this transport uses for client certificates
/// (any single self-signed ed25519 certificate, its handshake signature
/// checked strictly), for a hand-built server that should authenticate
/// clients exactly as a node does.
pub fn client_verifier() -> Arc<dyn ClientCertVerifier> {
    Arc::new(crate::tls::ClientVerifier)
}

/// The crypto provider the transport uses (ring, AES-128-GCM first).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    crate::tls::provider()
}

/// The congestion controller the transport runs with BBR and
/// [`QuicConfig::max_congestion_window`](crate::QuicConfig::max_congestion_window)
/// set to `cap`, for a hand-built quinn endpoint compared with it.
pub fn bbr(cap: Option<u64>) -> Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
    crate::congestion::controller(true, cap)
}
