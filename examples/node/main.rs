//! A p2p-router node as a real process: configuration from TOML and flags,
//! QUIC and MConnection listeners side by side, PEX, a chat channel
//! (stdin → broadcast; received → stdout), Prometheus metrics over HTTP,
//! and a graceful stop on Ctrl-C or SIGTERM.
//!
//! ```sh
//! cargo run --release --example node -- --data-dir n0 --listen quic://127.0.0.1:26656 \
//!     --metrics 127.0.0.1:26660
//! cargo run --release --example node -- --data-dir n1 --listen quic://127.0.0.1:26666 \
//!     --seed quic://<n0 id>@127.0.0.1:26656
//! ```
//!
//! Standard output is line-oriented, for people and scripts alike:
//! `node <id>`, `listening <address>`, `metrics <url>`, `known <id>` (the
//! peer store at start), `ready` (start-up is over), `peer up <id>` / `peer down <id>`,
//! `chat <id>: <text>`, `echo <id>: <text>`, `stopped`; with `--probe`
//! also `stats …` and `violation …` (see `probe.rs`). Logs go to stderr
//! (`RUST_LOG` filters them).

// An example binary: its modules are private however they are marked.
#![allow(unreachable_pub)]

mod chat;
mod config;
mod http;
mod probe;

use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use p2p_router::pex::{Pex, PexOptions};
use p2p_router::{
    AddPeerError, LocalNode, NodeId, NodeKey, PeerAddress, PeerUpdate, Protocol, RedbPeerStore,
    Router, Transport,
};
use p2p_transport_mconn::MconnTransport;
use p2p_transport_quic::QuicTransport;
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use config::{Config, Flags};

/// Bound on a graceful stop; past it the process exits anyway.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Standard output, one whole line at a time, flushed (scripts read it
/// through a pipe).
#[derive(Debug, Default)]
pub struct Output(Mutex<()>);

impl Output {
    /// Writes `line` and a newline, then flushes.
    pub fn line(&self, line: &str) {
        let _guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    p2p_examples::init_logging("info");
    let config = match Config::load(Flags::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("node: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn transports(
    config: &Config,
    node: &LocalNode,
) -> Result<Vec<Arc<dyn Transport>>, Box<dyn std::error::Error>> {
    let on = |p: Protocol| config.listen.iter().filter(move |l| l.protocol == p);
    let mut quic = config.quic.clone();
    for l in on(Protocol::Quic) {
        quic = quic.listen_on(l.address);
    }
    let mut mconn = config.mconn.clone();
    for l in on(Protocol::Mconn) {
        mconn = mconn.listen_on(l.address);
    }
    // Both always run, so either kind of peer can be dialed.
    Ok(vec![
        Arc::new(QuicTransport::bind(node, quic)?),
        Arc::new(MconnTransport::bind(node.key(), mconn).await?),
    ])
}

/// Where peers can reach us: the configured external addresses, else the
/// bound ones (an unspecified IP is not dialable and is not advertised).
fn dialable(
    config: &Config,
    id: NodeId,
    transports: &[Arc<dyn Transport>],
) -> Result<Vec<PeerAddress>, Box<dyn std::error::Error>> {
    if !config.external.is_empty() {
        return Ok(config
            .external
            .iter()
            .map(|t| t.with_id(id))
            .collect::<Result<_, _>>()?);
    }
    Ok(transports
        .iter()
        .flat_map(|t| t.listen_endpoints())
        .filter(|e| e.socket_addr().is_some_and(|a| !is_unspecified(a.ip())))
        .map(|e| e.peer_address(id))
        .collect())
}

fn is_unspecified(ip: IpAddr) -> bool {
    ip.is_unspecified()
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let out = Arc::new(Output::default());
    std::fs::create_dir_all(&config.data_dir)?;
    let key = NodeKey::load_or_generate(config.data_dir.join("node_key.json"))?;
    let node = LocalNode::new(key, config.network.clone());
    let id = node.node_id();
    let transports = transports(&config, &node).await?;
    let addresses = dialable(&config, id, &transports)?;

    let mut options = config.peer_manager.clone();
    options.self_address = addresses.first().cloned();
    let store = RedbPeerStore::open(config.data_dir.join("peers.redb"))?;
    let mut builder = Router::builder(node);
    builder
        .options(config.router.clone())
        .peer_manager(options)
        .peer_store(store)
        .moniker(config.moniker.clone());
    for t in &transports {
        builder.transport(t.clone());
    }
    let chat = builder.channel::<chat::ChatMessage>(chat::descriptor())?;
    let probes = if config.probe {
        Some(probe::declare(&mut builder)?)
    } else {
        None
    };
    Pex::register(&mut builder, PexOptions::default())?;
    let router = builder.spawn()?;
    let mut updates = router.subscribe_peer_updates();

    out.line(&format!("node {id}"));
    for a in &addresses {
        out.line(&format!("listening {a}"));
    }
    for t in &transports {
        for e in t.listen_endpoints() {
            if e.socket_addr().is_some_and(|a| is_unspecified(a.ip())) {
                out.line(&format!(
                    "bound {e} (advertise a reachable address with --external)"
                ));
            }
        }
    }
    for peer in router.known_peers().await? {
        out.line(&format!("known {peer}"));
    }
    for seed in &config.seeds {
        match router.add_peer(seed.clone()).await {
            Ok(_) => {}
            Err(AddPeerError::RouterStopped) => return Err("router stopped".into()),
            Err(e) => out.line(&format!("seed {seed} not added: {e}")),
        }
    }

    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    if let Some(address) = config.metrics {
        let mut registry = Registry::default();
        router.register_metrics(&mut registry);
        let (listener, bound) = http::bind(address).await?;
        out.line(&format!("metrics http://{bound}/metrics"));
        tasks.spawn(http::serve(listener, Arc::new(registry), stop.clone()));
    }
    let o = out.clone();
    tasks.spawn(async move {
        loop {
            match updates.recv().await {
                Ok(PeerUpdate::Up { peer, .. }) => o.line(&format!("peer up {peer}")),
                Ok(PeerUpdate::Down { peer }) => o.line(&format!("peer down {peer}")),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    o.line(&format!("missed {n} peer updates"));
                }
                Err(_) => return,
            }
        }
    });
    if let Some(channels) = probes {
        tasks.spawn(probe::run(router.handle(), channels, out.clone()));
    }
    tasks.spawn(chat::receive(chat.clone(), config.echo, out.clone()));
    tasks.spawn(chat::send_stdin(chat));
    // Listening for SIGTERM before saying "ready": a supervisor may stop us
    // the moment it reads that line.
    let signal = stop_signal()?;
    out.line("ready");

    signal.await?;
    tracing::info!("stopping");
    stop.cancel();
    let graceful = async {
        tasks.shutdown().await;
        // Stops PEX, closes connections and persists the peer store.
        router.shutdown().await;
    };
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, graceful)
        .await
        .is_err()
    {
        return Err(format!("shutdown took longer than {SHUTDOWN_TIMEOUT:?}").into());
    }
    out.line("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM; both handlers are installed when this
/// returns, before the future is first polled.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => Ok(()),
                _ = term.recv() => Ok(()),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(tokio::signal::ctrl_c())
    }
}
