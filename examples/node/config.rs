//! The node's configuration: a TOML file and/or flags (flags win).
//!
//! ```toml
//! data_dir = "node0"               # key file and peer store live here
//! network = "my-chain"
//! moniker = "node0"
//! listen = ["quic://0.0.0.0:26656", "mconn://0.0.0.0:26657"]
//! external = ["quic://203.0.113.7:26656"]  # advertised; default: the bound addresses
//! seeds = ["quic://<id>@seed.example.org:26656"]
//! persistent_peers = []
//! unconditional_peers = []         # node ids
//! private_peers = []               # node ids, never advertised
//! max_connected = 64
//! max_outgoing = 0
//! max_peers = 1000
//! metrics = "127.0.0.1:26660"      # Prometheus /metrics over HTTP
//! echo = false
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use p2p_router::{NodeId, PeerAddress, Protocol};
use serde::Deserialize;

/// Flags; each overrides the config file's field of the same name.
#[derive(Debug, clap::Parser)]
#[command(about = "A p2p-router node: PEX, a chat channel, Prometheus metrics")]
pub struct Flags {
    /// A TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory for the key file and the peer store (created if absent).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Network (chain) id; peers on another network are refused.
    #[arg(long)]
    pub network: Option<String>,
    /// A human-readable name announced to peers.
    #[arg(long)]
    pub moniker: Option<String>,
    /// Listen address as `quic://ip:port` or `mconn://ip:port`; repeatable.
    #[arg(long = "listen")]
    pub listen: Vec<String>,
    /// Address to advertise instead of the bound ones; repeatable.
    #[arg(long = "external")]
    pub external: Vec<String>,
    /// Peers to learn the network from; repeatable.
    #[arg(long = "seed")]
    pub seeds: Vec<String>,
    /// Peers to stay connected to; repeatable.
    #[arg(long = "persistent-peer")]
    pub persistent_peers: Vec<String>,
    /// Most connected peers.
    #[arg(long)]
    pub max_connected: Option<usize>,
    /// Most peers kept in the store.
    #[arg(long)]
    pub max_peers: Option<usize>,
    /// Serve Prometheus metrics at http://<addr>/metrics.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Send every chat message received back to its sender.
    #[arg(long)]
    pub echo: bool,
}

/// The file's form; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    data_dir: Option<PathBuf>,
    network: Option<String>,
    moniker: Option<String>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    external: Vec<String>,
    #[serde(default)]
    seeds: Vec<String>,
    #[serde(default)]
    persistent_peers: Vec<String>,
    #[serde(default)]
    unconditional_peers: Vec<String>,
    #[serde(default)]
    private_peers: Vec<String>,
    max_connected: Option<usize>,
    max_outgoing: Option<usize>,
    max_peers: Option<usize>,
    metrics: Option<SocketAddr>,
    #[serde(default)]
    echo: bool,
}

/// A listen address: which transport, where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub protocol: Protocol,
    pub address: SocketAddr,
}

/// The configuration in force.
#[derive(Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub network: String,
    pub moniker: String,
    pub listen: Vec<Listen>,
    pub external: Vec<PeerAddressTemplate>,
    pub seeds: Vec<PeerAddress>,
    pub persistent_peers: Vec<PeerAddress>,
    pub unconditional_peers: Vec<NodeId>,
    pub private_peers: Vec<NodeId>,
    pub max_connected: Option<usize>,
    pub max_outgoing: Option<usize>,
    pub max_peers: Option<usize>,
    pub metrics: Option<SocketAddr>,
    pub echo: bool,
}

/// An advertised address before our id is known: scheme, host, port.
#[derive(Debug, Clone)]
pub struct PeerAddressTemplate(String);

impl PeerAddressTemplate {
    pub fn with_id(&self, id: NodeId) -> Result<PeerAddress, String> {
        let (scheme, rest) = self
            .0
            .split_once("://")
            .ok_or_else(|| format!("external address {} needs a scheme", self.0))?;
        format!("{scheme}://{id}@{rest}")
            .parse()
            .map_err(|e| format!("external address {}: {e}", self.0))
    }
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

fn parse_listen(s: &str) -> Result<Listen, ConfigError> {
    let bad = |why: &str| ConfigError::Invalid(format!("listen address {s}: {why}"));
    let (scheme, addr) = s
        .split_once("://")
        .ok_or_else(|| bad("needs quic:// or mconn://"))?;
    let protocol = match scheme.to_ascii_lowercase().as_str() {
        "quic" => Protocol::Quic,
        "mconn" => Protocol::Mconn,
        _ => return Err(bad("the scheme must be quic or mconn")),
    };
    let address = addr.parse().map_err(|_| bad("expected ip:port"))?;
    Ok(Listen { protocol, address })
}

fn parse_peers(list: &[String], what: &str) -> Result<Vec<PeerAddress>, ConfigError> {
    list.iter()
        .map(|s| {
            s.parse()
                .map_err(|e| ConfigError::Invalid(format!("{what} {s}: {e}")))
        })
        .collect()
}

fn parse_ids(list: &[String], what: &str) -> Result<Vec<NodeId>, ConfigError> {
    list.iter()
        .map(|s| {
            s.parse()
                .map_err(|e| ConfigError::Invalid(format!("{what} {s}: {e}")))
        })
        .collect()
}

/// Non-empty flag lists replace the file's.
fn pick(flag: Vec<String>, file: Vec<String>) -> Vec<String> {
    if flag.is_empty() {
        file
    } else {
        flag
    }
}

impl Config {
    pub fn load(flags: Flags) -> Result<Self, ConfigError> {
        let file = match &flags.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source: Box::new(source),
                })?
            }
        };
        let listen = pick(flags.listen, file.listen);
        let listen = if listen.is_empty() {
            vec!["quic://0.0.0.0:26656".to_owned()]
        } else {
            listen
        };
        Ok(Self {
            data_dir: flags
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("p2p-node")),
            network: flags
                .network
                .or(file.network)
                .unwrap_or_else(|| "p2p-router-demo".to_owned()),
            moniker: flags
                .moniker
                .or(file.moniker)
                .unwrap_or_else(|| "node".to_owned()),
            listen: listen
                .iter()
                .map(|s| parse_listen(s))
                .collect::<Result<_, _>>()?,
            external: pick(flags.external, file.external)
                .into_iter()
                .map(PeerAddressTemplate)
                .collect(),
            seeds: parse_peers(&pick(flags.seeds, file.seeds), "seed")?,
            persistent_peers: parse_peers(
                &pick(flags.persistent_peers, file.persistent_peers),
                "persistent peer",
            )?,
            unconditional_peers: parse_ids(&file.unconditional_peers, "unconditional peer")?,
            private_peers: parse_ids(&file.private_peers, "private peer")?,
            max_connected: flags.max_connected.or(file.max_connected),
            max_outgoing: file.max_outgoing,
            max_peers: flags.max_peers.or(file.max_peers),
            metrics: flags.metrics.or(file.metrics),
            echo: flags.echo || file.echo,
        })
    }
}
