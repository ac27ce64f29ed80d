//! Tendermint's SecretConnection: an authenticated, encrypted byte stream
//! over TCP, byte-compatible with Tendermint v0.34 to CometBFT v0.38.
//!
//! Handshake: X25519 ephemeral keys exchanged as length-delimited
//! `BytesValue`s; a Merlin transcript over both keys and the shared secret
//! yields the challenge; HKDF-SHA256 over the shared secret yields one
//! ChaCha20-Poly1305 key per direction; each side then sends, encrypted, an
//! `AuthSigMessage` with its ed25519 key and its signature of the challenge.
//!
//! Frames: 1028 plaintext bytes (4-byte little-endian data length ≤ 1024,
//! data, zero padding), sealed with a 16-byte tag under a 12-byte nonce
//! whose last 8 bytes count frames little-endian, per direction.

use bytes::{Bytes, BytesMut};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use ed25519_dalek::{Signer, Verifier, VerifyingKey};
use hkdf::Hkdf;
use p2p_router::transport::{AuthFailure, ProtocolViolation};
use p2p_router::NodeKey;
use prost::Message;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use p2p_router::wire::{self, take_delimited, ReadDelimitedError, WireError};

use crate::proto::{self, AuthSigMessage, BytesValue};

/// Data bytes per frame.
pub(crate) const DATA_MAX: usize = 1024;
/// Plaintext bytes per frame: length prefix and data.
const FRAME: usize = DATA_MAX + 4;
/// Bytes per frame on the wire.
const SEALED: usize = FRAME + 16;
/// Plaintext staged before the writer seals and sends it on its own.
const WRITE_BUFFER: usize = 64 * 1024;

const TRANSCRIPT: &[u8] = b"TENDERMINT_SECRET_CONNECTION_TRANSCRIPT_HASH";
const LABEL_LOWER: &[u8] = b"EPHEMERAL_LOWER_PUBLIC_KEY";
const LABEL_UPPER: &[u8] = b"EPHEMERAL_UPPER_PUBLIC_KEY";
const LABEL_DH: &[u8] = b"DH_SECRET";
const LABEL_MAC: &[u8] = b"SECRET_CONNECTION_MAC";
const HKDF_INFO: &[u8] = b"TENDERMINT_SECRET_CONNECTION_KEY_AND_CHALLENGE_GEN";

/// Why a SecretConnection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The TCP stream failed or ended.
    #[error("i/o: {0}")]
    Io(std::io::ErrorKind),
    /// The peer's ephemeral key message is not a 32-byte `BytesValue`.
    #[error("malformed ephemeral key message: {0}")]
    EphemeralKey(String),
    /// The key exchange gave the all-zero secret (a low-order point).
    #[error("ephemeral key is a low-order point")]
    LowOrderPoint,
    /// The peer's `AuthSigMessage` does not decode.
    #[error("malformed auth signature message: {0}")]
    AuthMessage(String),
    /// The peer's key is not ed25519.
    #[error("peer key is not ed25519")]
    UnsupportedKeyType,
    /// The peer's signature of the challenge does not verify.
    #[error("bad challenge signature")]
    BadSignature,
    /// A frame failed authentication.
    #[error("frame failed to decrypt")]
    Decrypt,
    /// A frame declares more than 1024 data bytes.
    #[error("frame data length {0} exceeds 1024")]
    FrameLength(u32),
    /// 2^64 frames were sent or received in one direction.
    #[error("nonce counter exhausted")]
    NonceOverflow,
}

impl SecretError {
    /// What a failed handshake says about the peer, or the IO error that
    /// ended it.
    pub(crate) fn auth_failure(&self) -> Result<AuthFailure, std::io::ErrorKind> {
        Err(match self {
            SecretError::Io(kind) => *kind,
            SecretError::LowOrderPoint => return Ok(AuthFailure::WeakKeyExchange),
            SecretError::UnsupportedKeyType => return Ok(AuthFailure::UnsupportedKey),
            SecretError::BadSignature => return Ok(AuthFailure::BadSignature),
            SecretError::EphemeralKey(_)
            | SecretError::AuthMessage(_)
            | SecretError::Decrypt
            | SecretError::FrameLength(_)
            | SecretError::NonceOverflow => return Ok(AuthFailure::MalformedHandshake),
        })
    }

    /// The violation a frame error is, once the connection is up; `None`
    /// for an IO error (the connection just ended).
    pub(crate) fn violation(&self) -> Option<ProtocolViolation> {
        match self {
            SecretError::Io(_) => None,
            SecretError::FrameLength(_) => Some(ProtocolViolation::FrameLength),
            SecretError::NonceOverflow => Some(ProtocolViolation::NonceExhausted),
            // Handshake messages cannot occur after the handshake: any
            // other failure is a frame that did not authenticate.
            _ => Some(ProtocolViolation::FrameDecrypt),
        }
    }
}

fn io(e: std::io::Error) -> SecretError {
    SecretError::Io(e.kind())
}

/// The per-direction nonce: 4 zero bytes, then a little-endian counter.
#[derive(Debug, Default)]
struct FrameNonce {
    counter: u64,
    exhausted: bool,
}

impl FrameNonce {
    /// The nonce for the next frame, advancing the counter.
    fn next(&mut self) -> Result<Nonce, SecretError> {
        if self.exhausted {
            return Err(SecretError::NonceOverflow);
        }
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.counter.to_le_bytes());
        match self.counter.checked_add(1) {
            Some(next) => self.counter = next,
            None => self.exhausted = true,
        }
        Ok(Nonce::from(nonce))
    }
}

/// The receiving half: decrypts frames into a plaintext buffer.
pub(crate) struct SecretReader<R> {
    inner: R,
    cipher: ChaCha20Poly1305,
    nonce: FrameNonce,
    sealed: Box<[u8; SEALED]>,
    /// Decrypted bytes not yet consumed.
    pub(crate) plain: BytesMut,
}

impl<R: AsyncRead + Unpin> SecretReader<R> {
    /// Reads and decrypts one frame, appending its data to `plain`.
    pub(crate) async fn read_frame(&mut self) -> Result<(), SecretError> {
        self.inner
            .read_exact(&mut self.sealed[..])
            .await
            .map_err(io)?;
        let nonce = self.nonce.next()?;
        let (frame, tag) = self.sealed.split_at_mut(FRAME);
        let tag = Tag::clone_from_slice(tag);
        self.cipher
            .decrypt_in_place_detached(&nonce, b"", frame, &tag)
            .map_err(|_| SecretError::Decrypt)?;
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        if len as usize > DATA_MAX {
            return Err(SecretError::FrameLength(len));
        }
        self.plain.extend_from_slice(&frame[4..4 + len as usize]);
        Ok(())
    }

    /// Reads one length-delimited message of at most `max` bytes.
    pub(crate) async fn read_delimited(&mut self, max: usize) -> Result<Bytes, ReadError> {
        loop {
            match take_delimited(&mut self.plain, max) {
                Ok(Some(body)) => return Ok(body),
                Ok(None) => self.read_frame().await.map_err(ReadError::Secret)?,
                Err(e) => return Err(ReadError::Delimited(e)),
            }
        }
    }
}

/// Why reading a delimited message failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    Secret(SecretError),
    Delimited(WireError),
}

/// The sending half: stages plaintext, seals it into frames on flush.
pub(crate) struct SecretWriter<W> {
    inner: W,
    cipher: ChaCha20Poly1305,
    nonce: FrameNonce,
    staged: BytesMut,
    out: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> SecretWriter<W> {
    /// Plaintext waiting for [`flush`](Self::flush).
    pub(crate) fn staged(&mut self) -> &mut BytesMut {
        &mut self.staged
    }

    /// Seals everything staged into frames and writes them out.
    pub(crate) async fn flush(&mut self) -> Result<(), SecretError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.out.clear();
        for chunk in self.staged.chunks(DATA_MAX) {
            let start = self.out.len();
            self.out.resize(start + SEALED, 0);
            let frame = &mut self.out[start..start + FRAME];
            frame[..4].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
            frame[4..4 + chunk.len()].copy_from_slice(chunk);
            let nonce = self.nonce.next()?;
            let tag = self
                .cipher
                .encrypt_in_place_detached(&nonce, b"", frame)
                .map_err(|_| SecretError::Decrypt)?;
            self.out[start + FRAME..start + SEALED].copy_from_slice(&tag);
        }
        self.staged.clear();
        self.inner.write_all(&self.out).await.map_err(io)?;
        self.inner.flush().await.map_err(io)
    }

    /// Stages a length-delimited message and flushes.
    pub(crate) async fn write_delimited(
        &mut self,
        message: &impl Message,
    ) -> Result<(), SecretError> {
        message
            .encode_length_delimited(&mut self.staged)
            // Staging into a growable buffer cannot run out of room.
            .map_err(|_| SecretError::Io(std::io::ErrorKind::OutOfMemory))?;
        self.flush().await
    }

    /// Shuts down the sending direction of the socket.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.inner.shutdown().await;
    }
}

/// Splits the output of HKDF-SHA256 over the shared secret into the
/// receive and send keys (which half is which depends on whose ephemeral
/// key sorts first).
pub(crate) fn derive_secrets(dh_secret: &[u8; 32], local_is_least: bool) -> ([u8; 32], [u8; 32]) {
    let hkdf = Hkdf::<Sha256>::new(None, dh_secret);
    let mut okm = [0u8; 96];
    // 96 bytes is far below HKDF-SHA256's limit of 8160.
    let _ = hkdf.expand(HKDF_INFO, &mut okm);
    let (mut first, mut second) = ([0u8; 32], [0u8; 32]);
    first.copy_from_slice(&okm[..32]);
    second.copy_from_slice(&okm[32..64]);
    if local_is_least {
        (first, second)
    } else {
        (second, first)
    }
}

/// Reads one plaintext length-delimited message of at most `max` bytes
/// straight from the socket (used before encryption starts).
async fn read_plain_delimited<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Bytes, SecretError> {
    wire::read_delimited(r, max).await.map_err(|e| match e {
        ReadDelimitedError::Io(e) => io(e),
        ReadDelimitedError::Truncated => SecretError::Io(std::io::ErrorKind::UnexpectedEof),
        ReadDelimitedError::Wire(WireError::Oversized { size, .. }) => {
            SecretError::EphemeralKey(format!("{size} bytes"))
        }
        _ => SecretError::EphemeralKey("bad length prefix".into()),
    })
}

/// Runs the SecretConnection handshake on `stream` (both sides do the
/// same) and returns the two halves and the peer's authenticated key.
pub(crate) async fn handshake<R, W>(
    reader: R,
    writer: W,
    key: &NodeKey,
) -> Result<(SecretReader<R>, SecretWriter<W>, VerifyingKey), SecretError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    handshake_with(reader, writer, key, Tamper::None).await
}

/// Misbehaviour a test peer can put into its side of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tamper {
    None,
    /// Sends this as its ephemeral key message instead of a real key.
    #[cfg(test)]
    EphemeralMessage(&'static [u8]),
    /// Signs something other than the challenge.
    #[cfg(test)]
    BadSignature,
    /// Presents a secp256k1 key.
    #[cfg(test)]
    Secp256k1,
    /// Stops after the key exchange, never sending its signature.
    #[cfg(test)]
    NoSignature,
}

async fn handshake_with<R, W>(
    mut reader: R,
    mut writer: W,
    key: &NodeKey,
    tamper: Tamper,
) -> Result<(SecretReader<R>, SecretWriter<W>, VerifyingKey), SecretError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|_| SecretError::Io(std::io::ErrorKind::Other))?;
    let local_secret = x25519_dalek::StaticSecret::from(seed);
    let local_public = x25519_dalek::PublicKey::from(&local_secret);

    #[allow(unused_mut)]
    let mut ours = BytesValue {
        value: local_public.as_bytes().to_vec(),
    }
    .encode_length_delimited_to_vec();
    #[cfg(test)]
    if let Tamper::EphemeralMessage(bytes) = tamper {
        ours = bytes.to_vec();
    }
    let send = async {
        writer.write_all(&ours).await.map_err(io)?;
        writer.flush().await.map_err(io)
    };
    // A 32-byte BytesValue is 34 bytes; allow a little slack for encoders
    // that add nothing harmful, refuse anything larger.
    let (sent, theirs) = tokio::join!(send, read_plain_delimited(&mut reader, 64));
    sent?;
    let theirs =
        BytesValue::decode(&theirs?[..]).map_err(|e| SecretError::EphemeralKey(e.to_string()))?;
    let remote: [u8; 32] = theirs
        .value
        .as_slice()
        .try_into()
        .map_err(|_| SecretError::EphemeralKey(format!("{} bytes", theirs.value.len())))?;

    let (lo, hi) = if local_public.as_bytes()[..] < remote[..] {
        (*local_public.as_bytes(), remote)
    } else {
        (remote, *local_public.as_bytes())
    };
    let local_is_least = lo == *local_public.as_bytes();
    let mut transcript = merlin::Transcript::new(TRANSCRIPT);
    transcript.append_message(LABEL_LOWER, &lo);
    transcript.append_message(LABEL_UPPER, &hi);
    let shared = local_secret.diffie_hellman(&x25519_dalek::PublicKey::from(remote));
    if !shared.was_contributory() {
        return Err(SecretError::LowOrderPoint);
    }
    transcript.append_message(LABEL_DH, shared.as_bytes());
    let (recv_key, send_key) = derive_secrets(shared.as_bytes(), local_is_least);
    let mut challenge = [0u8; 32];
    transcript.challenge_bytes(LABEL_MAC, &mut challenge);

    let mut reader = SecretReader {
        inner: reader,
        cipher: ChaCha20Poly1305::new(Key::from_slice(&recv_key)),
        nonce: FrameNonce::default(),
        sealed: Box::new([0u8; SEALED]),
        plain: BytesMut::with_capacity(4 * DATA_MAX),
    };
    let mut writer = SecretWriter {
        inner: writer,
        cipher: ChaCha20Poly1305::new(Key::from_slice(&send_key)),
        nonce: FrameNonce::default(),
        staged: BytesMut::with_capacity(WRITE_BUFFER),
        out: Vec::new(),
    };

    #[allow(unused_mut)]
    let mut signature = key.signing_key().sign(&challenge);
    #[allow(unused_mut)]
    let mut pub_key = proto::public_key::Sum::Ed25519(key.public_key().to_bytes().to_vec());
    #[cfg(test)]
    match tamper {
        Tamper::BadSignature => signature = key.signing_key().sign(b"not the challenge"),
        Tamper::Secp256k1 => pub_key = proto::public_key::Sum::Secp256k1(vec![2; 33]),
        Tamper::NoSignature => std::future::pending::<()>().await,
        _ => {}
    }
    let _ = tamper;
    let auth = AuthSigMessage {
        pub_key: Some(proto::PublicKey { sum: Some(pub_key) }),
        sig: signature.to_bytes().to_vec(),
    };
    let (sent, theirs) = tokio::join!(writer.write_delimited(&auth), reader.read_delimited(1024));
    sent?;
    let theirs = theirs.map_err(|e| match e {
        ReadError::Secret(e) => e,
        ReadError::Delimited(e) => SecretError::AuthMessage(format!("{e:?}")),
    })?;
    let theirs =
        AuthSigMessage::decode(theirs).map_err(|e| SecretError::AuthMessage(e.to_string()))?;
    let remote_key = peer_key(&theirs, &challenge)?;
    Ok((reader, writer, remote_key))
}

/// The peer's key from its `AuthSigMessage`, once its signature of
/// `challenge` verifies: an ed25519 key only.
pub(crate) fn peer_key(
    auth: &AuthSigMessage,
    challenge: &[u8; 32],
) -> Result<VerifyingKey, SecretError> {
    let remote_key = match auth.pub_key.as_ref().and_then(|k| k.sum.as_ref()) {
        Some(proto::public_key::Sum::Ed25519(bytes)) => {
            let bytes: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| SecretError::AuthMessage("ed25519 key is not 32 bytes".into()))?;
            VerifyingKey::from_bytes(&bytes).map_err(|_| SecretError::BadSignature)?
        }
        Some(proto::public_key::Sum::Secp256k1(_)) => return Err(SecretError::UnsupportedKeyType),
        None => return Err(SecretError::AuthMessage("no public key".into())),
    };
    let signature =
        ed25519_dalek::Signature::from_slice(&auth.sig).map_err(|_| SecretError::BadSignature)?;
    remote_key
        .verify(challenge, &signature)
        .map_err(|_| SecretError::BadSignature)?;
    Ok(remote_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    mod properties {
        use proptest::prelude::*;

        use super::*;

        const KEY: [u8; 32] = [7; 32];

        fn reader(bytes: Vec<u8>) -> SecretReader<std::io::Cursor<Vec<u8>>> {
            SecretReader {
                inner: std::io::Cursor::new(bytes),
                cipher: ChaCha20Poly1305::new(Key::from_slice(&KEY)),
                nonce: FrameNonce::default(),
                sealed: Box::new([0; SEALED]),
                plain: BytesMut::new(),
            }
        }

        /// One frame sealed with the reader's key and first nonce, whose
        /// length field says `len` (a peer holding the key can send any).
        fn sealed_frame(len: u32, fill: u8) -> Vec<u8> {
            let mut frame = vec![fill; FRAME];
            frame[..4].copy_from_slice(&len.to_le_bytes());
            let cipher = ChaCha20Poly1305::new(Key::from_slice(&KEY));
            let nonce = FrameNonce::default().next().unwrap();
            let tag = cipher
                .encrypt_in_place_detached(&nonce, b"", &mut frame)
                .unwrap();
            frame.extend_from_slice(&tag);
            frame
        }

        fn block_on<F: std::future::Future>(f: F) -> F::Output {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(f)
        }

        proptest! {
            /// Bytes that were not sealed with the key: an error, never a
            /// panic, never any plaintext.
            #[test]
            fn unsealed_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..3 * SEALED)) {
                let mut r = reader(bytes);
                let got = block_on(r.read_delimited(1024));
                prop_assert!(got.is_err());
                prop_assert!(r.plain.is_empty());
            }

            /// A sealed frame's length field: up to DATA_MAX is taken as
            /// said, anything more is `FrameLength` (never a read past the
            /// frame).
            #[test]
            fn a_sealed_length_beyond_the_frame_is_refused(len in any::<u32>(), fill in any::<u8>()) {
                let mut r = reader(sealed_frame(len, fill));
                let got = block_on(r.read_frame());
                if len as usize <= DATA_MAX {
                    prop_assert_eq!(got, Ok(()));
                    prop_assert_eq!(r.plain.len(), len as usize);
                } else {
                    prop_assert_eq!(got, Err(SecretError::FrameLength(len)));
                }
            }
        }
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The first rows of `p2p/conn/testdata/TestDeriveSecretsAndChallengeGolden.golden`
    /// in tendermint v0.34.24 (github.com/tendermint/tendermint, Apache-2.0):
    /// DH secret, whether the local key sorts first, receive key, send key
    /// (the fifth column, an unused challenge, is omitted).
    const GOLDEN: [(&str, bool, &str, &str); 4] = [
        (
            "9fe4a5a73df12dbd8659b1d9280873fe993caefec6b0ebc2686dd65027148e03",
            true,
            "80a83ad6afcb6f8175192e41973aed31dd75e3c106f813d986d9567a4865eb2f",
            "96362a04f628a0666d9866147326898bb0847b8db8680263ad19e6336d4eed9e",
        ),
        (
            "0716764b370d543fee692af03832c16410f0a56e4ddb79604ea093b10bb6f654",
            false,
            "84f2b1e8658456529a2c324f46c3406c3c6fecd5fbbf9169f60bed8956a8b03d",
            "cba357ae33d7234520d5742102a2a6cdb39b7db59c14a58fa8aadd310127630f",
        ),
        (
            "358dd73aae2c5b7b94b57f950408a3c681e748777ecab2063c8ca51a63588fa8",
            false,
            "c2e2f664c8ee561af8e1e30553373be4ae23edecc8c6bd762d44b2afb7f2a037",
            "d1563f428ac1c023c15d8082b2503157fe9ecbde4fb3493edd69ebc299b4970c",
        ),
        (
            "6104474c791cda24d952b356fb41a5d273c0ce6cc87d270b1701d0523cd5aa13",
            true,
            "1cb4397b9e478430321af4647da2ccbef62ff8888542d31cca3f626766c8080f",
            "673b23318826bd31ad1a4995c6e5095c4b092f5598aa0a96381a3e977bc0eaf9",
        ),
    ];

    #[test]
    fn hkdf_matches_the_reference_golden_vectors() {
        for (secret, least, recv, send) in GOLDEN {
            let secret: [u8; 32] = unhex(secret).try_into().unwrap();
            let (r, s) = derive_secrets(&secret, least);
            assert_eq!(r.to_vec(), unhex(recv));
            assert_eq!(s.to_vec(), unhex(send));
        }
    }

    type Half = tokio::io::DuplexStream;
    type Ends = (
        SecretReader<tokio::io::ReadHalf<Half>>,
        SecretWriter<tokio::io::WriteHalf<Half>>,
        VerifyingKey,
    );

    /// Runs our handshake against a peer doing `tamper`, over memory pipes.
    async fn against(tamper: Tamper) -> Result<Ends, SecretError> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let (ka, kb) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
        let peer = tokio::spawn(async move {
            let _ = handshake_with(br, bw, &kb, tamper).await;
            // Keep the pipe open until the test ends.
            std::future::pending::<()>().await;
        });
        let ours =
            tokio::time::timeout(std::time::Duration::from_secs(5), handshake(ar, aw, &ka)).await;
        peer.abort();
        ours.unwrap_or(Err(SecretError::Io(std::io::ErrorKind::TimedOut)))
    }

    #[tokio::test]
    async fn both_ends_agree_and_carry_data_both_ways_at_once() {
        let (a, b) = tokio::io::duplex(8 * 1024);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let (ka, kb) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
        let (x, y) = tokio::join!(handshake(ar, aw, &ka), handshake(br, bw, &kb));
        let (mut ar, mut aw, a_sees) = x.unwrap();
        let (mut br, mut bw, b_sees) = y.unwrap();
        assert_eq!(a_sees, kb.public_key());
        assert_eq!(b_sees, ka.public_key());
        // 300 KiB each way, written and read concurrently through a small
        // pipe: neither direction may wait for the other.
        let data: Vec<u8> = (0..300 * 1024).map(|i| (i % 253) as u8).collect();
        async fn send(w: &mut SecretWriter<tokio::io::WriteHalf<Half>>, d: &[u8]) {
            w.staged().extend_from_slice(d);
            w.flush().await.unwrap();
        }
        async fn read_all(r: &mut SecretReader<tokio::io::ReadHalf<Half>>, n: usize) -> Vec<u8> {
            while r.plain.len() < n {
                r.read_frame().await.unwrap();
            }
            r.plain.split_to(n).to_vec()
        }
        let ((), (), got_b, got_a) = tokio::join!(
            send(&mut aw, &data),
            send(&mut bw, &data),
            read_all(&mut br, data.len()),
            read_all(&mut ar, data.len())
        );
        assert_eq!(got_b, data);
        assert_eq!(got_a, data);
    }

    #[tokio::test]
    async fn malformed_ephemeral_key_messages_are_refused() {
        // A 3-byte key.
        let got = against(Tamper::EphemeralMessage(&[0x05, 0x0a, 0x03, 1, 2, 3])).await;
        assert!(
            matches!(got, Err(SecretError::EphemeralKey(_))),
            "{:?}",
            got.err()
        );
        // Not protobuf at all.
        let got = against(Tamper::EphemeralMessage(&[0x03, 0xff, 0xff, 0xff])).await;
        assert!(
            matches!(got, Err(SecretError::EphemeralKey(_))),
            "{:?}",
            got.err()
        );
        // A length prefix far over the limit: refused before reading it.
        let got = against(Tamper::EphemeralMessage(&[0xff, 0xff, 0xff, 0x7f])).await;
        assert!(
            matches!(got, Err(SecretError::EphemeralKey(_))),
            "{:?}",
            got.err()
        );
    }

    #[tokio::test]
    async fn a_low_order_ephemeral_key_is_refused() {
        // The all-zero point gives the all-zero shared secret.
        const ZERO_KEY: [u8; 35] = {
            let mut m = [0u8; 35];
            m[0] = 0x22;
            m[1] = 0x0a;
            m[2] = 0x20;
            m
        };
        let got = against(Tamper::EphemeralMessage(&ZERO_KEY)).await;
        assert_eq!(got.err(), Some(SecretError::LowOrderPoint));
    }

    #[tokio::test]
    async fn bad_signatures_and_other_key_types_are_refused() {
        let got = against(Tamper::BadSignature).await;
        assert_eq!(got.err(), Some(SecretError::BadSignature));
        let got = against(Tamper::Secp256k1).await;
        assert_eq!(got.err(), Some(SecretError::UnsupportedKeyType));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_sends_its_key_or_signature_stalls_until_the_caller_gives_up() {
        // The transport bounds the handshake with a timeout; the paused
        // clock runs it out at once.
        let got = against(Tamper::NoSignature).await;
        assert_eq!(
            got.err(),
            Some(SecretError::Io(std::io::ErrorKind::TimedOut))
        );
        let (a, _b) = tokio::io::duplex(1024);
        let (ar, aw) = tokio::io::split(a);
        let silent = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            handshake(ar, aw, &NodeKey::from_seed([1; 32])),
        )
        .await;
        assert!(silent.is_err(), "no key from the peer: still waiting");
    }

    #[test]
    fn nonce_counts_little_endian_after_four_zero_bytes_and_stops_at_overflow() {
        let mut n = FrameNonce::default();
        assert_eq!(n.next().unwrap().as_slice(), [0; 12]);
        assert_eq!(
            n.next().unwrap().as_slice(),
            [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        );
        let mut n = FrameNonce {
            counter: u64::MAX,
            exhausted: false,
        };
        assert_eq!(n.next().unwrap().as_slice()[4..], [0xff; 8]);
        assert_eq!(n.next(), Err(SecretError::NonceOverflow));
    }
}
