//! Node identity: the ed25519 [`NodeKey`] and the [`NodeId`] derived from it.
//!
//! The id derivation is Tendermint's (first 20 bytes of SHA-256 of the raw
//! 32-byte public key), so a key shared with a CometBFT node yields the same id
//! on both stacks. The key file uses CometBFT's `node_key.json` layout for the
//! same reason: an operator can move a key between the two.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Length of a [`NodeId`] in bytes.
pub const NODE_ID_LEN: usize = 20;

/// A node's identity: the first 20 bytes of SHA-256 of its ed25519 public key.
///
/// Displayed as 40 lowercase hex characters; [`FromStr`] accepts either case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; NODE_ID_LEN]);

impl NodeId {
    /// Wraps raw id bytes.
    pub const fn from_bytes(bytes: [u8; NODE_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// Derives the id of an ed25519 public key.
    pub fn from_public_key(key: &VerifyingKey) -> Self {
        Self::from_public_key_bytes(key.as_bytes())
    }

    /// Derives the id from the raw 32 bytes of an ed25519 public key.
    pub fn from_public_key_bytes(key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(key);
        let mut id = [0u8; NODE_ID_LEN];
        id.copy_from_slice(&digest[..NODE_ID_LEN]);
        Self(id)
    }

    /// The raw id bytes.
    pub const fn as_bytes(&self) -> &[u8; NODE_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a string is not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeIdError {
    /// The string is not 40 characters long.
    #[error("node id must be 40 hex characters, got {0}")]
    Length(usize),
    /// A character is not a hex digit.
    #[error("node id has a non-hex character at position {position}")]
    NotHex {
        /// Zero-based character position of the first offending character.
        position: usize,
    },
    /// An upper-case hex digit where the wire form is lower case (a
    /// node's own `NodeInfo`); user input may be either case.
    #[error(
        "node id has an upper-case hex digit at position {position}; the wire form is lower case"
    )]
    NotLowerCase {
        /// Zero-based position of the first upper-case digit.
        position: usize,
    },
}

impl NodeId {
    /// Parses the wire form: exactly 40 lower-case hex digits, as the
    /// node's own id is written in `NodeInfo` (`FromStr` also takes upper
    /// case, for ids an operator types).
    pub fn parse_wire(s: &str) -> Result<Self, NodeIdError> {
        let id = s.parse()?;
        match s.chars().position(|c| c.is_ascii_uppercase()) {
            Some(position) => Err(NodeIdError::NotLowerCase { position }),
            None => Ok(id),
        }
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Count characters, not bytes, so a multi-byte character reports a
        // length the user recognises.
        let chars = s.chars().count();
        if let Some(position) = s.chars().position(|c| !c.is_ascii_hexdigit()) {
            if chars == NODE_ID_LEN * 2 {
                return Err(NodeIdError::NotHex { position });
            }
        }
        if chars != NODE_ID_LEN * 2 {
            return Err(NodeIdError::Length(chars));
        }
        let mut id = [0u8; NODE_ID_LEN];
        hex::decode_to_slice(s, &mut id).map_err(|_| NodeIdError::NotHex { position: 0 })?;
        Ok(Self(id))
    }
}

/// A node's long-term ed25519 signing key.
///
/// The [`NodeId`] is derived from its public half. `Debug` never prints the
/// secret.
#[derive(Clone)]
pub struct NodeKey {
    signing: SigningKey,
}

/// Key type tag of CometBFT's `node_key.json`.
const KEY_TYPE: &str = "tendermint/PrivKeyEd25519";

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyFile {
    priv_key: KeyFileKey,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyFileKey {
    #[serde(rename = "type")]
    kind: String,
    /// base64 of the 32-byte seed followed by the 32-byte public key.
    value: String,
}

/// Why a key file could not be read or written: the file, and what was
/// wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("key file {}: {kind}", path.display())]
#[non_exhaustive]
pub struct KeyFileError {
    /// The key file.
    pub path: std::path::PathBuf,
    /// What went wrong.
    pub kind: KeyFileErrorKind,
}

/// What was wrong with a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileErrorKind {
    /// Reading or writing the file failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not the expected JSON document.
    #[error("not a valid key document: {0}")]
    Format(#[from] serde_json::Error),
    /// The key type is not ed25519.
    #[error("holds a key of type {0:?}, expected {KEY_TYPE:?}")]
    KeyType(String),
    /// The key value is not base64.
    #[error("key value is not valid base64")]
    Base64,
    /// The decoded key has the wrong length.
    #[error("key value must decode to 64 bytes, got {0}")]
    Length(usize),
    /// The stored public half does not belong to the stored seed.
    #[error("stored public key does not match the private key")]
    PublicKeyMismatch,
}

impl NodeKey {
    /// Generates a fresh key from the operating system's randomness.
    ///
    /// # Panics
    /// If the operating system has no randomness to give; a node cannot run
    /// without it.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        #[allow(clippy::expect_used)]
        // Straight from the operating system: a key deserves no less.
        getrandom::fill(&mut seed).expect("the operating system must provide randomness");
        Self::from_seed(seed)
    }

    /// Builds a key from its 32-byte ed25519 seed (deterministic; for tests
    /// and for keys kept elsewhere).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte seed (the secret). Handle with care.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The ed25519 signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The public half.
    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The node id of this key.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.public_key())
    }

    /// Loads the key file at `path` (CometBFT `node_key.json` layout).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        let path = path.as_ref();
        Self::read(path).map_err(|kind| KeyFileError {
            path: path.to_owned(),
            kind,
        })
    }

    fn read(path: &Path) -> Result<Self, KeyFileErrorKind> {
        let text = fs::read(path)?;
        let file: KeyFile = serde_json::from_slice(&text)?;
        if file.priv_key.kind != KEY_TYPE {
            return Err(KeyFileErrorKind::KeyType(file.priv_key.kind));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(file.priv_key.value.as_bytes())
            .map_err(|_| KeyFileErrorKind::Base64)?;
        if bytes.len() != 64 {
            return Err(KeyFileErrorKind::Length(bytes.len()));
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[..32]);
        let key = Self::from_seed(seed);
        if key.public_key().as_bytes()[..] != bytes[32..] {
            return Err(KeyFileErrorKind::PublicKeyMismatch);
        }
        Ok(key)
    }

    /// Writes the key to `path` with mode 0600 on Unix, atomically: the file
    /// is written beside its destination and renamed over it, so a crash never
    /// leaves a truncated key behind.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), KeyFileError> {
        let path = path.as_ref();
        self.write(path).map_err(|kind| KeyFileError {
            path: path.to_owned(),
            kind,
        })
    }

    fn write(&self, path: &Path) -> Result<(), KeyFileErrorKind> {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&self.seed());
        bytes.extend_from_slice(self.public_key().as_bytes());
        let file = KeyFile {
            priv_key: KeyFileKey {
                kind: KEY_TYPE.to_owned(),
                value: base64::engine::general_purpose::STANDARD.encode(&bytes),
            },
        };
        let json = serde_json::to_vec_pretty(&file)?;
        let tmp = path.with_extension("tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut out = options.open(&tmp)?;
        out.write_all(&json)?;
        out.sync_all()?;
        drop(out);
        fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Loads the key at `path`, or generates and saves a new one when no file
    /// exists there yet.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        let path = path.as_ref();
        match fs::metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                key.save(path)?;
                Ok(key)
            }
            Err(e) => Err(KeyFileError {
                path: path.to_owned(),
                kind: e.into(),
            }),
        }
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", self.node_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_from_digest_of(bytes: &[u8]) -> NodeKey {
        NodeKey::from_seed(Sha256::digest(bytes).into())
    }

    // Vectors from the issue, computed independently with another ed25519
    // implementation.
    #[test]
    fn node_id_matches_independent_vectors() {
        let cases = [
            (
                [0xf9, 0x1b, 0x08, 0xaa, 0x38, 0xee, 0x34, 0xdd],
                "2442bae7c5685f6b3ab9ac7c892473c4125dc58eefc3571111acb30d85263188",
                "89006b58739b9db9d25e4295cdb96ab10ac1ef9f",
            ),
            (
                [0x84, 0xd7, 0x01, 0xbf, 0x83, 0x20, 0x1c, 0xfe],
                "a93453fb3c6bf71395cb3383aa80eab787964c11e10e03d265ce9489125e44c1",
                "5cc711ffafd9f59e1751062b2ebd23f4edacedbe",
            ),
        ];
        for (input, public, id) in cases {
            let key = key_from_digest_of(&input);
            assert_eq!(hex::encode(key.public_key().as_bytes()), public);
            assert_eq!(key.node_id().to_string(), id);
        }
    }

    #[test]
    fn node_id_parse_accepts_either_case_and_normalizes() {
        let id: NodeId = "89006B58739B9DB9D25E4295CDB96AB10AC1EF9F".parse().unwrap();
        assert_eq!(id.to_string(), "89006b58739b9db9d25e4295cdb96ab10ac1ef9f");
    }

    #[test]
    fn node_id_parse_errors_are_precise() {
        assert_eq!("abc".parse::<NodeId>(), Err(NodeIdError::Length(3)));
        assert_eq!("".parse::<NodeId>(), Err(NodeIdError::Length(0)));
        let long = "0".repeat(41);
        assert_eq!(long.parse::<NodeId>(), Err(NodeIdError::Length(41)));
        let bad = format!("{}g", "0".repeat(39));
        assert_eq!(
            bad.parse::<NodeId>(),
            Err(NodeIdError::NotHex { position: 39 })
        );
        // 40 bytes but fewer characters: a length error, not a panic.
        let multibyte = format!("{}é", "0".repeat(38));
        assert_eq!(multibyte.parse::<NodeId>(), Err(NodeIdError::Length(39)));
    }

    /// A key file path in a fresh temporary directory (kept alive by the
    /// returned guard).
    fn key_path() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node_key.json");
        (dir, path)
    }

    /// A new key saved at a fresh [`key_path`].
    fn saved_key() -> (tempfile::TempDir, std::path::PathBuf, NodeKey) {
        let (dir, path) = key_path();
        let key = NodeKey::generate();
        key.save(&path).unwrap();
        (dir, path, key)
    }

    #[test]
    fn key_file_round_trip_with_private_mode() {
        let (_dir, path, key) = saved_key();
        let loaded = NodeKey::load(&path).unwrap();
        assert_eq!(loaded.node_id(), key.node_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn load_or_generate_creates_once_then_reuses() {
        let (_dir, path) = key_path();
        let first = NodeKey::load_or_generate(&path).unwrap();
        let second = NodeKey::load_or_generate(&path).unwrap();
        assert_eq!(first.node_id(), second.node_id());
    }

    #[test]
    fn corrupt_key_files_are_clear_errors() {
        let (dir, path, key) = saved_key();
        let good = fs::read_to_string(&path).unwrap();

        let write = |s: &str| fs::write(&path, s).unwrap();

        write(&good[..good.len() / 2]);
        assert!(matches!(
            NodeKey::load(&path).map_err(|e| e.kind),
            Err(KeyFileErrorKind::Format(_))
        ));

        write("");
        assert!(matches!(
            NodeKey::load(&path).map_err(|e| e.kind),
            Err(KeyFileErrorKind::Format(_))
        ));

        write(r#"{"priv_key":{"type":"tendermint/PrivKeySecp256k1","value":"AAAA"}}"#);
        assert!(matches!(
            NodeKey::load(&path).map_err(|e| e.kind),
            Err(KeyFileErrorKind::KeyType(_))
        ));

        write(r#"{"priv_key":{"type":"tendermint/PrivKeyEd25519","value":"not base64!"}}"#);
        assert!(matches!(
            NodeKey::load(&path).map_err(|e| e.kind),
            Err(KeyFileErrorKind::Base64)
        ));

        write(r#"{"priv_key":{"type":"tendermint/PrivKeyEd25519","value":"AAAA"}}"#);
        assert!(matches!(
            NodeKey::load(&path).map_err(|e| e.kind),
            Err(KeyFileErrorKind::Length(3))
        ));

        let mut bytes = key.seed().to_vec();
        bytes.extend_from_slice(&[7u8; 32]);
        let value = base64::engine::general_purpose::STANDARD.encode(bytes);
        write(&format!(
            r#"{{"priv_key":{{"type":"tendermint/PrivKeyEd25519","value":"{value}"}}}}"#
        ));
        assert!(matches!(
            NodeKey::load(&path).map_err(|e| e.kind),
            Err(KeyFileErrorKind::PublicKeyMismatch)
        ));

        let missing = dir.path().join("missing.json");
        let e = NodeKey::load(&missing).unwrap_err();
        assert!(matches!(e.kind, KeyFileErrorKind::Io(_)));
        // Every error about a file names the file.
        assert_eq!(e.path, missing);
        assert!(e.to_string().contains("missing.json"), "{e}");
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let key = NodeKey::from_seed([9u8; 32]);
        let text = format!("{key:?}");
        assert!(!text.contains(&hex::encode([9u8; 32])));
        assert!(text.contains(&key.node_id().to_string()));
    }
}
