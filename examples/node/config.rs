//! The node's configuration: a TOML file and/or flags (flags win).
//!
//! ```toml
//! data_dir = "node0"               # key file and peer store live here
//! network = "my-chain"
//! moniker = "node0"
//! listen = ["quic://0.0.0.0:26656", "mconn://0.0.0.0:26657"]
//! external = ["quic://203.0.113.7:26656"]  # advertised; default: the bound addresses
//! seeds = ["quic://<id>@seed.example.org:26656"]
//! metrics = "127.0.0.1:26660"      # Prometheus /metrics over HTTP
//! echo = false
//!
//! # The library's own option types, read as they are (every field
//! # optional; durations as "250ms", "20s", "1m 30s").
//! [peer_manager]
//! persistent_peers = []
//! unconditional_peers = []         # node ids
//! private_peers = []               # node ids, never advertised
//! max_connected = 64
//! min_retry_time = "250ms"
//!
//! [router]
//! handshake_timeout = "10s"
//!
//! [quic]
//! stream_receive_window = 131072
//!
//! [quic.listener]                 # the same table exists under [mconn]
//! max_connections = 1024
//!
//! [mconn]
//! flush_throttle = "100ms"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use p2p_router::{NodeId, PeerAddress, PeerManagerOptions, Protocol, RouterOptions};
use p2p_transport_mconn::MconnConfig;
use p2p_transport_quic::QuicConfig;
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
    /// Run the probe workload (the chaos test's): sequence-numbered
    /// messages to every peer, checked on arrival, and latency probes;
    /// `stats` lines every 2 s.
    #[arg(long)]
    pub probe: bool,
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
    seeds: Vec<PeerAddress>,
    metrics: Option<SocketAddr>,
    #[serde(default)]
    echo: bool,
    #[serde(default)]
    probe: bool,
    #[serde(default)]
    router: RouterOptions,
    #[serde(default)]
    peer_manager: PeerManagerOptions,
    #[serde(default)]
    quic: QuicConfig,
    #[serde(default)]
    mconn: MconnConfig,
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
    pub metrics: Option<SocketAddr>,
    pub echo: bool,
    pub probe: bool,
    pub router: RouterOptions,
    pub peer_manager: PeerManagerOptions,
    pub quic: QuicConfig,
    pub mconn: MconnConfig,
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

/// Non-empty flag lists replace the file's.
fn pick<T>(flag: Vec<T>, file: Vec<T>) -> Vec<T> {
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
        let mut peer_manager = file.peer_manager;
        let persistent = parse_peers(&flags.persistent_peers, "persistent peer")?;
        peer_manager.persistent_peers = pick(persistent, peer_manager.persistent_peers);
        if let Some(n) = flags.max_connected {
            peer_manager.max_connected = n;
        }
        if let Some(n) = flags.max_peers {
            peer_manager.max_peers = n;
        }
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
            seeds: pick(parse_peers(&flags.seeds, "seed")?, file.seeds),
            metrics: flags.metrics.or(file.metrics),
            echo: flags.echo || file.echo,
            probe: flags.probe || file.probe,
            router: file.router,
            peer_manager,
            quic: file.quic,
            mconn: file.mconn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_option_types_are_read_from_their_sections() {
        let file: FileConfig = toml::from_str(
            r#"
            network = "test-chain"
            [peer_manager]
            max_connected = 12
            min_retry_time = "100ms"
            [router]
            handshake_timeout = "20s"
            [quic]
            stream_receive_window = 65536
            [quic.listener]
            max_connections = 100
            [mconn]
            flush_throttle = "10ms"
            [mconn.listener]
            handshake_timeout = "20s"
            "#,
        )
        .expect("config");
        assert_eq!(file.peer_manager.max_connected, 12);
        assert_eq!(
            file.peer_manager.min_retry_time,
            std::time::Duration::from_millis(100)
        );
        assert_eq!(
            file.router.handshake_timeout,
            std::time::Duration::from_secs(20)
        );
        assert_eq!(file.quic.stream_receive_window, 65536);
        assert_eq!(file.quic.listener.max_connections, 100);
        assert_eq!(
            file.mconn.listener.handshake_timeout,
            std::time::Duration::from_secs(20)
        );
        assert_eq!(
            file.mconn.flush_throttle,
            std::time::Duration::from_millis(10)
        );
    }
}
