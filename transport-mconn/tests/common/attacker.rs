//! A SecretConnection dialer built by hand for attacks: the handshake
//! step by step (so any step can be skipped or falsified), then sealed
//! frames of our choosing. Written from the protocol's description, not
//! from the transport's own code, so that a bug shared by both cannot hide.

use std::net::SocketAddr;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use ed25519_dalek::Signer;
use hkdf::Hkdf;
use prost::Message;
use sha2::Sha256;
use tendermint_proto::v0_34::crypto::{public_key, PublicKey};
use tendermint_proto::v0_34::p2p::AuthSigMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Data bytes per frame; a frame is their 4-byte length, the data padded
/// to this size, then a 16-byte tag.
pub const FRAME_DATA: usize = 1024;
const FRAME: usize = FRAME_DATA + 4;
const SEALED: usize = FRAME + 16;

/// What the attacker sends as its ephemeral key message.
pub enum KeyMessage {
    /// A fresh X25519 key, as an honest peer would.
    Fresh,
    /// These 32 bytes as the key.
    Point([u8; 32]),
    /// These raw bytes instead of the whole message.
    Raw(Vec<u8>),
}

/// What the attacker signs and shows in its auth message.
pub enum AuthMessage {
    /// Its ed25519 key and a signature of the challenge.
    Honest,
    /// A signature of something other than the challenge.
    WrongChallenge,
    /// A secp256k1 key.
    Secp256k1,
}

/// A TCP connection to `to` from `ip`.
pub async fn tcp_from(ip: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the peer closes the connection (EOF or an error).
pub async fn until_closed(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}

fn delimited(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// One direction's cipher and frame counter.
struct Direction {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl Direction {
    fn nonce(&mut self) -> Nonce {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.counter.to_le_bytes());
        self.counter += 1;
        Nonce::from(nonce)
    }
}

/// An established SecretConnection, attacker's end.
pub struct Sealed {
    pub stream: TcpStream,
    send: Direction,
    recv: Direction,
    /// Decrypted bytes not yet consumed.
    plain: Vec<u8>,
}

/// Why the handshake did not get through.
#[derive(Debug)]
pub enum HandshakeFailed {
    /// The peer closed the connection (or reset it): it refused us.
    Closed,
}

impl Sealed {
    /// Runs the handshake with `seed`'s ed25519 key, sending `key` and
    /// `auth` as told. Fails when the peer closes the connection.
    pub async fn handshake(
        mut stream: TcpStream,
        seed: [u8; 32],
        key: KeyMessage,
        auth: AuthMessage,
    ) -> Result<Self, (HandshakeFailed, TcpStream)> {
        let mut secret_bytes = [0u8; 32];
        secret_bytes[..8].copy_from_slice(b"attacker");
        secret_bytes[8..].copy_from_slice(&seed[..24]);
        let secret = x25519_dalek::StaticSecret::from(secret_bytes);
        let ours: [u8; 32] = match &key {
            KeyMessage::Point(p) => *p,
            _ => x25519_dalek::PublicKey::from(&secret).to_bytes(),
        };
        // BytesValue { value = 1: bytes }, length-delimited.
        let message = match key {
            KeyMessage::Raw(bytes) => bytes,
            _ => {
                let mut body = vec![0x0a, 32];
                body.extend_from_slice(&ours);
                delimited(&body)
            }
        };
        if stream.write_all(&message).await.is_err() {
            return Err((HandshakeFailed::Closed, stream));
        }
        let mut theirs = [0u8; 35];
        if stream.read_exact(&mut theirs[..1]).await.is_err()
            || theirs[0] != 34
            || stream.read_exact(&mut theirs[1..]).await.is_err()
        {
            return Err((HandshakeFailed::Closed, stream));
        }
        let remote: [u8; 32] = theirs[3..].try_into().unwrap();

        let (lo, hi) = if ours < remote {
            (ours, remote)
        } else {
            (remote, ours)
        };
        let dh = secret.diffie_hellman(&x25519_dalek::PublicKey::from(remote));
        let mut transcript =
            merlin::Transcript::new(b"TENDERMINT_SECRET_CONNECTION_TRANSCRIPT_HASH");
        transcript.append_message(b"EPHEMERAL_LOWER_PUBLIC_KEY", &lo);
        transcript.append_message(b"EPHEMERAL_UPPER_PUBLIC_KEY", &hi);
        transcript.append_message(b"DH_SECRET", dh.as_bytes());
        let mut okm = [0u8; 64];
        Hkdf::<Sha256>::new(None, dh.as_bytes())
            .expand(
                b"TENDERMINT_SECRET_CONNECTION_KEY_AND_CHALLENGE_GEN",
                &mut okm,
            )
            .unwrap();
        let (first, second) = okm.split_at(32);
        // The side whose ephemeral key sorts lower receives with the first
        // half.
        let (recv_key, send_key) = if ours == lo {
            (first, second)
        } else {
            (second, first)
        };
        let mut challenge = [0u8; 32];
        transcript.challenge_bytes(b"SECRET_CONNECTION_MAC", &mut challenge);

        let mut sealed = Sealed {
            stream,
            send: Direction {
                cipher: ChaCha20Poly1305::new(Key::from_slice(send_key)),
                counter: 0,
            },
            recv: Direction {
                cipher: ChaCha20Poly1305::new(Key::from_slice(recv_key)),
                counter: 0,
            },
            plain: Vec::new(),
        };
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let (key, signed): (public_key::Sum, &[u8]) = match auth {
            AuthMessage::Honest => (
                public_key::Sum::Ed25519(signing.verifying_key().to_bytes().to_vec()),
                &challenge,
            ),
            AuthMessage::WrongChallenge => (
                public_key::Sum::Ed25519(signing.verifying_key().to_bytes().to_vec()),
                b"something else",
            ),
            AuthMessage::Secp256k1 => (public_key::Sum::Secp256k1(vec![2; 33]), &challenge),
        };
        let auth = AuthSigMessage {
            pub_key: Some(PublicKey { sum: Some(key) }),
            sig: signing.sign(signed).to_bytes().to_vec(),
        };
        if sealed
            .write(&auth.encode_length_delimited_to_vec())
            .await
            .is_err()
        {
            return Err((HandshakeFailed::Closed, sealed.stream));
        }
        // Their auth message; its signature is not our concern here.
        match sealed.read_delimited().await {
            Some(_) => Ok(sealed),
            None => Err((HandshakeFailed::Closed, sealed.stream)),
        }
    }

    /// Seals `data` into frames and writes them.
    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::new();
        for chunk in data.chunks(FRAME_DATA) {
            out.extend(self.seal(chunk.len() as u32, chunk));
        }
        self.stream.write_all(&out).await
    }

    /// One sealed frame whose length field says `len` over `data`.
    pub fn seal(&mut self, len: u32, data: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; SEALED];
        frame[..4].copy_from_slice(&len.to_le_bytes());
        frame[4..4 + data.len()].copy_from_slice(data);
        let nonce = self.send.nonce();
        let tag = self
            .send
            .cipher
            .encrypt_in_place_detached(&nonce, b"", &mut frame[..FRAME])
            .unwrap();
        frame[FRAME..].copy_from_slice(&tag);
        frame
    }

    /// Reads and opens one frame; `None` when the connection ends.
    async fn read_frame(&mut self) -> Option<()> {
        let mut frame = vec![0u8; SEALED];
        self.stream.read_exact(&mut frame).await.ok()?;
        let nonce = self.recv.nonce();
        let tag = Tag::clone_from_slice(&frame[FRAME..]);
        self.recv
            .cipher
            .decrypt_in_place_detached(&nonce, b"", &mut frame[..FRAME], &tag)
            .ok()?;
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        self.plain.extend_from_slice(frame.get(4..4 + len)?);
        Some(())
    }

    /// One length-delimited message from the peer; `None` when the
    /// connection ends first.
    pub async fn read_delimited(&mut self) -> Option<Vec<u8>> {
        loop {
            let mut buf = &self.plain[..];
            if let Ok(len) = prost::encoding::decode_varint(&mut buf) {
                let header = self.plain.len() - buf.len();
                let end = header + usize::try_from(len).ok()?;
                if self.plain.len() >= end {
                    let body = self.plain[header..end].to_vec();
                    self.plain.drain(..end);
                    return Some(body);
                }
            }
            self.read_frame().await?;
        }
    }

    /// Reads (and discards) until the peer closes the connection.
    pub async fn until_closed(&mut self) {
        until_closed(&mut self.stream).await;
    }
}
