//! Node identity in TLS 1.3: self-signed ed25519 certificates, verifiers
//! that accept exactly those, ALPN with the network folded in, and the
//! rustls configurations built from them.

use std::sync::{Arc, Mutex};

use ed25519_dalek::VerifyingKey;
use p2p_router::{NodeId, NodeKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

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
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// The certificate is not valid now.
    #[error("certificate expired or not yet valid")]
    Expired,
    /// The certificate is not signed by its own key.
    #[error("certificate is not self-signed by its key: {0}")]
    BadSignature(String),
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
    fn into_rustls(self) -> rustls::Error {
        use rustls::CertificateError as C;
        let kind = match &self {
            CertificateError::Expired => C::Expired,
            CertificateError::BadSignature(_) => C::BadSignature,
            CertificateError::Malformed(_) => C::BadEncoding,
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

/// Extracts the ed25519 key of a certificate after checking that it is a
/// single, currently valid certificate self-signed by that key.
pub fn verify_certificate(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<VerifyingKey, CertificateError> {
    if !intermediates.is_empty() {
        return Err(CertificateError::Chain(intermediates.len() + 1));
    }
    let key = certificate_key(end_entity)?;
    let parsed = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    let anchor = webpki::anchor_from_trusted_cert(end_entity)
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    // The certificate is its own trust anchor: this checks the validity
    // period and that the signature verifies under its own key.
    parsed
        .verify_for_usage(
            &[webpki::ring::ED25519],
            &[anchor],
            &[],
            now,
            webpki::KeyUsage::required_if_present(&[]),
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                CertificateError::Expired
            }
            webpki::Error::UnsupportedSignatureAlgorithmContext(_)
            | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
                CertificateError::UnsupportedKeyType
            }
            other => CertificateError::BadSignature(format!("{other:?}")),
        })?;
    Ok(key)
}

/// The ed25519 key in a certificate's SubjectPublicKeyInfo.
pub fn certificate_key(cert: &CertificateDer<'_>) -> Result<VerifyingKey, CertificateError> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
    let spki = parsed.subject_public_key_info();
    let bytes = spki.as_ref();
    let key = bytes
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .ok_or(CertificateError::UnsupportedKeyType)?;
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| CertificateError::UnsupportedKeyType)?;
    VerifyingKey::from_bytes(&key).map_err(|e| CertificateError::Malformed(e.to_string()))
}

/// A node's certificate and private key, as rustls takes them.
pub(crate) struct Identity {
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) key: PrivatePkcs8KeyDer<'static>,
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
        Ok(Self {
            cert: cert.der().clone(),
            key: pkcs8,
        })
    }
}

/// ring's provider with AES-128-GCM first: on common hardware quinn moves
/// far more data with it than with rustls' default AES-256-GCM; the other
/// TLS 1.3 suites stay available.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// Only ed25519 signatures: every node key is ed25519.
fn algorithms(provider: &CryptoProvider) -> WebPkiSupportedAlgorithms {
    provider.signature_verification_algorithms
}

fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
}

/// The dialer's verifier: the server's certificate must prove the node id
/// named in the server name (see [`server_name`]).
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    algs: WebPkiSupportedAlgorithms,
    /// Why the last certificate was refused, for a typed dial error.
    verdict: Verdict,
}

/// Where a verifier leaves its refusal.
pub(crate) type Verdict = Arc<Mutex<Option<CertificateError>>>;

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refuse = |e: CertificateError| {
            *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            e.into_rustls()
        };
        let key = verify_certificate(end_entity, intermediates, now).map_err(refuse)?;
        let actual = NodeId::from_public_key(&key);
        let expected = match server_name {
            ServerName::DnsName(name) => name.as_ref().parse::<NodeId>().ok(),
            _ => None,
        };
        match expected {
            Some(expected) if expected == actual => Ok(ServerCertVerified::assertion()),
            Some(expected) => Err(refuse(CertificateError::WrongNodeId { expected, actual })),
            None => Err(rustls::Error::General(
                "server name is not a node id".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.2 is never negotiated (the configs allow TLS 1.3 only).
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
        verify_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The listener's verifier: any single self-signed ed25519 certificate; the
/// router then checks the key against the peer's `NodeInfo`.
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_certificate(end_entity, intermediates, now)
            .map_err(CertificateError::into_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
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
        verify_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Builds the rustls client (dialer) configuration, with the slot where
/// its verifier explains a refusal.
pub(crate) fn client_config(
    identity: &Identity,
    alpn: Vec<u8>,
) -> Result<(rustls::ClientConfig, Verdict), rustls::Error> {
    let provider = provider();
    let verdict = Verdict::default();
    let verifier = Arc::new(ServerVerifier {
        algs: algorithms(&provider),
        verdict: verdict.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
        )?;
    config.alpn_protocols = vec![alpn];
    Ok((config, verdict))
}

/// Builds the rustls server (listener) configuration.
pub(crate) fn server_config(
    identity: &Identity,
    alpn: Vec<u8>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(ClientVerifier {
        algs: algorithms(&provider),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
        )?;
    config.alpn_protocols = vec![alpn];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn own_certificate_verifies_and_yields_the_node_key() {
        let key = NodeKey::from_seed([3; 32]);
        let identity = Identity::new(&key).unwrap();
        assert_eq!(
            verify_certificate(&identity.cert, &[], now()),
            Ok(key.public_key())
        );
    }

    #[test]
    fn chains_other_key_types_and_expired_certificates_are_refused() {
        let key = NodeKey::from_seed([3; 32]);
        let identity = Identity::new(&key).unwrap();
        assert_eq!(
            verify_certificate(&identity.cert, std::slice::from_ref(&identity.cert), now()),
            Err(CertificateError::Chain(2))
        );

        let ecdsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        let cert = params.self_signed(&ecdsa).unwrap();
        assert_eq!(
            verify_certificate(cert.der(), &[], now()),
            Err(CertificateError::UnsupportedKeyType)
        );

        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&key.seed());
        let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(der),
            &rcgen::PKCS_ED25519,
        )
        .unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let expired = params.self_signed(&pair).unwrap();
        assert_eq!(
            verify_certificate(expired.der(), &[], now()),
            Err(CertificateError::Expired)
        );

        assert!(matches!(
            verify_certificate(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]), &[], now()),
            Err(CertificateError::Malformed(_))
        ));
    }

    #[test]
    fn a_certificate_signed_by_another_key_is_refused() {
        let subject = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let issuer_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut ca = rcgen::CertificateParams::new(vec![]).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca, issuer_key);
        let leaf = rcgen::CertificateParams::new(vec!["leaf".into()])
            .unwrap()
            .signed_by(&subject, &issuer)
            .unwrap();
        assert!(matches!(
            verify_certificate(leaf.der(), &[], now()),
            Err(CertificateError::BadSignature(_))
        ));
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
