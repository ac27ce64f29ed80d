//! Node identity in TLS 1.3: self-signed ed25519 certificates, verifiers
//! that accept exactly those, ALPN with the network folded in, and the
//! rustls configurations built from them.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use p2p_router::transport::AuthFailure;
use p2p_router::{NodeId, NodeKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::signer::OwnCertificate;
use crate::verdicts::Verdicts;

/// The protocol name in ALPN; the version follows it.
pub(crate) const ALPN_PREFIX: &str = "p2p-router/1/";

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key
/// bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// DER prefix of an ed25519 PKCS#8 v1 private key (RFC 8410); the 32 seed
/// bytes follow.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why a peer's certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The peer presented no certificate.
    #[error("no certificate presented")]
    Missing,
    /// The peer presented a chain: only a single self-signed certificate is
    /// accepted.
    #[error("certificate chains are not accepted (got {0} certificates)")]
    Chain(usize),
    /// The certificate's key is not ed25519.
    #[error("certificate key is not ed25519")]
    UnsupportedKeyType,
    /// The certificate does not parse.
    #[error("malformed certificate")]
    Malformed,
    /// The certificate proves another node than the one dialed.
    #[error("expected node {expected}, certificate proves {actual}")]
    WrongNodeId {
        /// The node id in the dialed address.
        expected: NodeId,
        /// The node id of the certificate's key.
        actual: NodeId,
    },
}

impl CertificateError {
    /// What the refusal says about the peer, for dial and accept errors.
    pub(crate) fn auth_failure(&self) -> AuthFailure {
        match self {
            CertificateError::UnsupportedKeyType => AuthFailure::UnsupportedKey,
            _ => AuthFailure::BadCertificate,
        }
    }

    fn into_rustls(self) -> rustls::Error {
        use rustls::CertificateError as C;
        let kind = match &self {
            CertificateError::Malformed => C::BadEncoding,
            _ => C::Other(rustls::OtherError(Arc::new(self))),
        };
        rustls::Error::InvalidCertificate(kind)
    }
}

/// The ALPN protocol id for `network`: the protocol name and version, then
/// the first 8 bytes of SHA-256(network) in lowercase hex. Nodes of other
/// networks or versions fail the TLS handshake before any data flows.
pub(crate) fn alpn(network: &str) -> Vec<u8> {
    let digest = Sha256::digest(network.as_bytes());
    let mut out = ALPN_PREFIX.as_bytes().to_vec();
    for byte in &digest[..8] {
        out.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    out
}

/// Extracts the ed25519 key of a peer's certificate after checking that it
/// is a single, well-formed certificate.
///
/// Neither the certificate's own signature nor its validity period is
/// checked: the peer's TLS `CertificateVerify` signature covers the
/// handshake transcript, certificate included, so it already proves that
/// the key's holder presented this certificate, and the validity period is
/// whatever that holder chose. Checking the self-signature would add an
/// ed25519 verification (about 45 µs) to each side's handshake and prove
/// nothing more (docs/PROTOCOL.md, section 3.2).
pub fn verify_certificate(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<VerifyingKey, CertificateError> {
    if !intermediates.is_empty() {
        return Err(CertificateError::Chain(intermediates.len() + 1));
    }
    certificate_key(end_entity)
}

/// The ed25519 key in a certificate's SubjectPublicKeyInfo.
pub fn certificate_key(cert: &CertificateDer<'_>) -> Result<VerifyingKey, CertificateError> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|_| CertificateError::Malformed)?;
    let spki = parsed.subject_public_key_info();
    let bytes = spki.as_ref();
    let key = bytes
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .ok_or(CertificateError::UnsupportedKeyType)?;
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| CertificateError::UnsupportedKeyType)?;
    VerifyingKey::from_bytes(&key).map_err(|_| CertificateError::Malformed)
}

/// A node's certificate and the key that signs for it.
#[derive(Clone)]
pub(crate) struct Identity {
    pub(crate) cert: CertificateDer<'static>,
    own: Arc<OwnCertificate>,
}

impl Identity {
    /// A self-signed certificate for `key`, valid from a day ago for 100
    /// years (so peers with skewed clocks agree). The subject names the
    /// node id for humans; peers only look at the key.
    pub(crate) fn new(key: &NodeKey) -> Result<Self, rcgen::Error> {
        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&key.seed());
        let pkcs8 = PrivatePkcs8KeyDer::from(der);
        let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)?;
        let mut params = rcgen::CertificateParams::new(vec![key.node_id().to_string()])?;
        let day = std::time::Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        params.not_before = (now - day).into();
        params.not_after = (now + 36_500 * day).into();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, key.node_id().to_string());
        let cert = params.self_signed(&pair)?;
        let own = OwnCertificate::new(cert.der().clone(), key.signing_key());
        Ok(Self {
            cert: cert.der().clone(),
            own: Arc::new(own),
        })
    }
}

/// ring's provider with AES-128-GCM first: on common hardware quinn moves
/// far more data with it than with rustls' default AES-256-GCM; the other
/// TLS 1.3 suites stay available.
/// Built once: every dial makes a client configuration with it.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::crypto::ring::cipher_suite as cs;
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites = vec![
                cs::TLS13_AES_128_GCM_SHA256,
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
            ];
            Arc::new(provider)
        })
        .clone()
}

/// Checks a peer's TLS 1.3 handshake signature: ed25519 only (every node
/// key is), verified with ed25519-dalek's strict rules, which refuse weak
/// keys and malleable signatures (36 µs here, against ring's 46 µs; the
/// handshake waits on one verification per side).
fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    verify_ed25519(message, cert, dss.signature())?;
    Ok(HandshakeSignatureValid::assertion())
}

fn verify_ed25519(
    message: &[u8],
    cert: &CertificateDer<'_>,
    signature: &[u8],
) -> Result<(), rustls::Error> {
    let key = certificate_key(cert).map_err(CertificateError::into_rustls)?;
    let bad = || rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
    let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| bad())?;
    key.verify_strict(message, &signature).map_err(|_| bad())
}

/// The signature methods every verifier here shares: TLS 1.2 refused (the
/// configs allow 1.3 alone, so it is never negotiated), a TLS 1.3
/// signature checked by `$verify`, the schemes `$schemes` offered. Our
/// own verifiers accept ed25519 alone; `test_utils` passes the provider's.
macro_rules! tls13_signatures {
    (verify: $verify:expr, schemes: $schemes:expr) => {
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let verify: fn(&Self, &[u8], &CertificateDer<'_>, &DigitallySignedStruct) -> _ =
                $verify;
            verify(self, message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            let schemes: fn(&Self) -> Vec<SignatureScheme> = $schemes;
            schemes(self)
        }
    };
}
#[cfg(feature = "test-utils")]
pub(crate) use tls13_signatures;

/// The dialer's verifier: the server's certificate must prove the node id
/// named in the server name (see [`server_name`]). One per transport (a
/// session resumes only with the verifier that checked it); each dial
/// reads what it saw from `verdicts`.
#[derive(Debug, Default)]
pub(crate) struct ServerVerifier {
    pub(crate) verdicts: Arc<Verdicts>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = match server_name {
            ServerName::DnsName(name) => name.as_ref(),
            _ => "",
        };
        let refuse = |e: CertificateError| {
            self.verdicts.record(name, Some(e.clone()));
            e.into_rustls()
        };
        let key = verify_certificate(end_entity, intermediates).map_err(refuse)?;
        let actual = NodeId::from_public_key(&key);
        let expected = match server_name {
            ServerName::DnsName(name) => name.as_ref().parse::<NodeId>().ok(),
            _ => None,
        };
        match expected {
            Some(expected) if expected == actual => {
                self.verdicts.record(name, None);
                Ok(ServerCertVerified::assertion())
            }
            Some(expected) => Err(refuse(CertificateError::WrongNodeId { expected, actual })),
            None => Err(rustls::Error::General(
                "server name is not a node id".into(),
            )),
        }
    }

    tls13_signatures!(
        verify: |_, m, c, d| verify_signature(m, c, d),
        schemes: |_| vec![SignatureScheme::ED25519]
    );
}

/// The listener's verifier: any single self-signed ed25519 certificate; the
/// router then checks the key against the peer's `NodeInfo`.
#[derive(Debug)]
pub(crate) struct ClientVerifier;

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_certificate(end_entity, intermediates).map_err(CertificateError::into_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    tls13_signatures!(
        verify: |_, m, c, d| verify_signature(m, c, d),
        schemes: |_| vec![SignatureScheme::ED25519]
    );
}

/// Builds the rustls client (dialer) configuration around the
/// transport's one `verifier`, resuming sessions by `resumption`.
pub(crate) fn client_config(
    identity: &Identity,
    alpn: Vec<u8>,
    resumption: rustls::client::Resumption,
    verifier: Arc<ServerVerifier>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(identity.own.clone());
    config.alpn_protocols = vec![alpn];
    config.resumption = resumption;
    Ok(config)
}

/// Builds the rustls server (listener) configuration. It remembers up to
/// `sessions` sessions so that dialers can resume them (see
/// [`crate::SessionCache`]); one ticket per handshake, so a dialer holds
/// one reconnect's worth and gets the next one on that reconnect.
pub(crate) fn server_config(
    identity: &Identity,
    alpn: Vec<u8>,
    sessions: usize,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(ClientVerifier))
        .with_cert_resolver(identity.own.clone());
    config.alpn_protocols = vec![alpn];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(sessions);
    config.send_tls13_tickets = usize::from(sessions > 0);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_certificate_verifies_and_yields_the_node_key() {
        let key = NodeKey::from_seed([3; 32]);
        let identity = Identity::new(&key).unwrap();
        assert_eq!(
            verify_certificate(&identity.cert, &[]),
            Ok(key.public_key())
        );
    }

    #[test]
    fn chains_other_key_types_and_malformed_certificates_are_refused() {
        let key = NodeKey::from_seed([3; 32]);
        let identity = Identity::new(&key).unwrap();
        assert_eq!(
            verify_certificate(&identity.cert, std::slice::from_ref(&identity.cert)),
            Err(CertificateError::Chain(2))
        );

        let ecdsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        let cert = params.self_signed(&ecdsa).unwrap();
        assert_eq!(
            verify_certificate(cert.der(), &[]),
            Err(CertificateError::UnsupportedKeyType)
        );

        assert!(matches!(
            verify_certificate(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]), &[]),
            Err(CertificateError::Malformed)
        ));
    }

    fn signed(key: &NodeKey, message: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        key.signing_key().sign(message).to_bytes().to_vec()
    }

    #[test]
    fn only_the_certificate_keys_own_handshake_signature_is_accepted() {
        let key = NodeKey::from_seed([3; 32]);
        let cert = Identity::new(&key).unwrap().cert;
        let transcript = b"handshake transcript";
        assert_eq!(
            verify_ed25519(transcript, &cert, &signed(&key, transcript)),
            Ok(())
        );

        // Another key's signature, a signature over other bytes, a cut one.
        let other = NodeKey::from_seed([4; 32]);
        let bad = Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadSignature,
        ));
        assert_eq!(
            verify_ed25519(transcript, &cert, &signed(&other, transcript)),
            bad
        );
        assert_eq!(
            verify_ed25519(b"other bytes", &cert, &signed(&key, transcript)),
            bad
        );
        assert_eq!(
            verify_ed25519(transcript, &cert, &signed(&key, transcript)[..63]),
            bad
        );
    }

    #[test]
    fn a_certificate_issued_by_another_key_still_names_its_subject_key() {
        // The handshake signature, made with the subject key, is what
        // authenticates; who signed the certificate itself does not matter.
        let subject = NodeKey::from_seed([5; 32]);
        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&subject.seed());
        let subject_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(der),
            &rcgen::PKCS_ED25519,
        )
        .unwrap();
        let issuer_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut ca = rcgen::CertificateParams::new(vec![]).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca, issuer_key);
        let leaf = rcgen::CertificateParams::new(vec!["leaf".into()])
            .unwrap()
            .signed_by(&subject_pair, &issuer)
            .unwrap();
        assert_eq!(
            verify_certificate(leaf.der(), &[]),
            Ok(subject.public_key())
        );
    }

    #[test]
    fn alpn_separates_networks() {
        assert_ne!(alpn("chain-a"), alpn("chain-b"));
        assert!(alpn("chain-a").starts_with(ALPN_PREFIX.as_bytes()));
        assert_eq!(alpn("chain-a").len(), ALPN_PREFIX.len() + 16);
        // docs/PROTOCOL.md, section 3.4.
        assert_eq!(alpn("test-chain"), b"p2p-router/1/26b0b83e7281be3b");
    }
}
