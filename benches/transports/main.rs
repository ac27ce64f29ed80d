//! The transport comparison: QUIC, MConnection (CometBFT defaults and
//! tuned) and the memory transport through the full router, plus raw
//! quinn and raw TLS-over-TCP without it, on the same machine in one run.
//!
//! ```text
//! cargo bench --bench transports -- [--quick] [--only <scenario>]... [--transport <name>]...
//!                                    [--workers <n>] [--json <path>] [--out <dir>]
//! (relative `--json` and `--out` paths are taken from the workspace root)
//! ```
//!
//! Scenarios: bulk, small, rtt, hol, hol_loss, handshake, reconnect,
//! idle_memory, fanout, consensus, consensus_loss, wan. Both router nodes
//! of a pair live in this process (one tokio runtime, all cores);
//! `reconnect` brings one dialer back with its key (and its QUIC session
//! tickets) again and again; `idle_memory` and `fanout`
//! put their peers in a second process (this binary with `--peers`);
//! `fanout` also reports the CPU time both processes spent per delivered
//! message (`fanout_cpu/<transport>`, from `/proc`, 10 ms ticks).
//! `consensus` runs 4 validators (tasks in this process, each with its own
//! router and transport) on 1 MiB blocks: heights per second and commit
//! latency. `hol_loss` and `consensus_loss` run `hol` and `consensus`
//! again in a private network namespace that drops 1 % of packets (root,
//! `ip`, `nft`; otherwise they are reported as skipped). `wan` runs bulk,
//! hol and rtt across a 50 ms-RTT link between two namespaces (see
//! `wan.rs`; root and `/dev/net/tun`, else skipped).
//!
//! Every figure is the median of three repetitions, with min and max.

// A binary's items are reachable only from itself.
#![allow(unreachable_pub)]

mod consensus;
mod namespaces;
mod nodes;
mod peers;
mod raw;
mod report;
mod scenarios;
mod wan;

use std::path::PathBuf;
use std::time::Duration;

use namespaces::{over_wan, under_loss};
use nodes::Kind;
use raw::Raw;
use report::{Figure, Results};
use scenarios::{Latencies, Sample};

const SCENARIOS: [&str; 12] = [
    "bulk",
    "small",
    "rtt",
    "hol",
    "hol_loss",
    "handshake",
    "reconnect",
    "idle_memory",
    "fanout",
    "consensus",
    "consensus_loss",
    "wan",
];
const REPETITIONS: usize = 3;

#[derive(Debug, Clone)]
struct Options {
    quick: bool,
    only: Vec<String>,
    json: Option<PathBuf>,
    out: Option<PathBuf>,
    /// Only these transports (all when empty).
    transports: Vec<String>,
    /// Tokio worker threads (default: one per core).
    workers: Option<usize>,
    /// Running inside the loss namespace for the parent's `hol_loss`.
    netns_child: bool,
    /// Running on the WAN link: side B's namespace and the QUIC windows.
    wan_peer: Option<(String, wan::Windows)>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            quick: false,
            only: Vec::new(),
            json: None,
            out: None,
            transports: Vec::new(),
            workers: None,
            netns_child: false,
            wan_peer: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--only" => o
                    .only
                    .push(it.next().ok_or("--only needs a scenario")?.clone()),
                "--json" => o.json = Some(from_root(it.next().ok_or("--json needs a path")?)),
                "--out" => o.out = Some(from_root(it.next().ok_or("--out needs a directory")?)),
                "--netns-child" => o.netns_child = true,
                "--wan-peer" => {
                    let ns = it.next().ok_or("--wan-peer needs a namespace")?;
                    let stream = parse_window(it.next())?;
                    let congestion = parse_window(it.next())?;
                    o.wan_peer = Some((ns.clone(), wan::Windows { stream, congestion }));
                }
                "--workers" => {
                    let n = it.next().ok_or("--workers needs a number")?;
                    o.workers = Some(n.parse().map_err(|_| format!("bad --workers {n}"))?);
                }
                "--transport" => o
                    .transports
                    .push(it.next().ok_or("--transport needs a name")?.clone()),
                // cargo bench passes this to every bench binary.
                "--bench" => {}
                other => return Err(format!("unknown argument {other}")),
            }
        }
        for s in &o.only {
            if !SCENARIOS.contains(&s.as_str()) {
                return Err(format!(
                    "unknown scenario {s}; known: {}",
                    SCENARIOS.join(", ")
                ));
            }
        }
        Ok(o)
    }

    fn runs(&self, transport: &str) -> bool {
        self.transports.is_empty() || self.transports.iter().any(|t| t == transport)
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }

    fn duration(&self) -> Duration {
        if self.wan_peer.is_some() {
            // Long enough for slow start to end at 50 ms per round trip.
            return Duration::from_secs(if self.quick { 2 } else { 5 });
        }
        if self.quick {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(3)
        }
    }

    /// How long each consensus run lasts after its first height.
    fn consensus_duration(&self) -> Duration {
        if self.quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        }
    }

    fn rounds(&self) -> usize {
        if self.wan_peer.is_some() {
            return if self.quick { 20 } else { 100 };
        }
        if self.quick {
            200
        } else {
            2000
        }
    }

    fn handshakes(&self) -> usize {
        if self.quick {
            20
        } else {
            200
        }
    }

    fn idle_peers(&self) -> usize {
        if self.quick {
            20
        } else {
            200
        }
    }

    fn fanout_peers(&self) -> usize {
        if self.quick {
            100
        } else {
            1000
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--peers") => return peers::peer_process(&args[1..]),
        Some("--idle-hub") => return peers::idle_hub_process(&args[1..]),
        _ => {}
    }
    let options = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    if let Some((ns, windows)) = &options.wan_peer {
        wan::join(ns, *windows);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = options.workers {
        builder.worker_threads(n);
    }
    let runtime = builder.enable_all().build().expect("runtime");
    // Scenario code runs on the worker threads like the nodes it drives;
    // run on `block_on`'s thread, every delivery would cost a thread wake-up.
    let results = {
        let o = options.clone();
        let task = runtime.spawn(async move { run(&o).await });
        runtime.block_on(task).expect("benchmark task")
    };
    let shown: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    let command = format!("cargo bench --bench transports -- {}", shown.join(" "));
    if options.netns_child {
        // The parent reads the figures and the latency samples.
        let mut json = results.json();
        json["latencies"] = serde_json::to_value(&results.latencies).unwrap_or_default();
        if let Some(path) = &options.json {
            std::fs::write(path, json.to_string()).expect("write json");
        }
        return;
    }
    let markdown = results.markdown(command.trim());
    println!("{markdown}");
    if let Some(path) = &options.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).expect("json directory");
        }
        std::fs::write(
            path,
            serde_json::to_string_pretty(&results.json()).unwrap_or_default(),
        )
        .expect("write json");
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &options.out {
        std::fs::create_dir_all(dir).expect("out dir");
        std::fs::write(dir.join("report.md"), &markdown).expect("write report");
        if let Err(e) = results.plots(dir) {
            eprintln!("plots failed: {e}");
        }
        eprintln!("wrote {}", dir.display());
    }
}

async fn run(o: &Options) -> Results {
    let mut r = Results::default();
    r.settings
        .insert("mode".into(), if o.quick { "quick" } else { "full" }.into());
    r.settings.insert(
        "duration_s".into(),
        format!("{}", o.duration().as_secs_f64()),
    );
    r.settings
        .insert("repetitions".into(), REPETITIONS.to_string());
    r.settings.insert(
        "quic".into(),
        "128 KiB stream window, BBR, 1 ms ACK delay, AES-128-GCM, 4 MiB socket buffers".into(),
    );
    r.settings.insert(
        "mconn-default".into(),
        "CometBFT: 100 ms flush throttle, 5,120,000 B/s rate limits, 1024-byte packets".into(),
    );
    r.settings.insert(
        "mconn-fast".into(),
        "no rate limits, flush after every batch".into(),
    );
    let d = o.duration();
    // Throughput: 64 KiB messages (bulk) and 64-byte ones (small).
    for (scenario, small, unit) in [("bulk", false, "MB/s"), ("small", true, "msg/s")] {
        if !o.wants(scenario) {
            continue;
        }
        for kind in Kind::ALL.into_iter().filter(|k| o.runs(k.name())) {
            let v = reps(|| async move {
                if small {
                    scenarios::small(kind, d).await
                } else {
                    scenarios::bulk(kind, d).await
                }
            })
            .await;
            put(&mut r, scenario, kind.name(), v, unit);
        }
        for raw in Raw::ALL.into_iter().filter(|r| o.runs(r.name())) {
            let v = reps(|| raw::throughput(raw, small, d)).await;
            put(&mut r, scenario, raw.name(), v, unit);
        }
    }
    if o.wants("rtt") {
        latency_rows(o, &mut r, "rtt", kinds(), |kind| {
            // A 100 ms flush throttle makes each round ~200 ms.
            let rounds = if kind == Kind::MconnDefault {
                20
            } else {
                o.rounds()
            };
            scenarios::rtt(kind, rounds)
        })
        .await;
        latency_rows(o, &mut r, "rtt", raws(), |raw| raw::rtt(raw, o.rounds())).await;
    }
    if o.wants("hol") {
        for kind in Kind::ALL.into_iter().filter(|k| o.runs(k.name())) {
            let s = samples(|| scenarios::hol(kind, d)).await;
            put_latency(&mut r, "hol", kind.name(), &s, true);
            let bulk: Vec<f64> = s.iter().filter_map(|s| s.side).collect();
            r.figures.insert(
                format!("hol_bulk/{}", kind.name()),
                Figure::of(bulk, "MB/s"),
            );
        }
    }
    if o.wants("hol_loss") && !o.netns_child {
        under_loss(o, &mut r, "hol").await;
    }
    if o.wants("consensus") {
        for kind in Kind::ALL.into_iter().filter(|k| o.runs(k.name())) {
            let s = samples(|| consensus::consensus(kind, o.consensus_duration())).await;
            let rates = s.iter().map(|s| s.value).collect();
            put(&mut r, "consensus", kind.name(), rates, "heights/s");
            put_latency(&mut r, "consensus", kind.name(), &s, false);
        }
        r.settings.insert(
            "consensus".into(),
            "4 validators in this process, 1 MiB blocks in 64 KiB parts, Malachite's core".into(),
        );
    }
    if o.wants("consensus_loss") && !o.netns_child {
        under_loss(o, &mut r, "consensus").await;
    }
    if o.wants("wan") && !o.netns_child {
        over_wan(o, &mut r).await;
    }
    if o.wants("handshake") {
        let n = o.handshakes();
        latency_rows(o, &mut r, "handshake", kinds(), |kind| {
            scenarios::handshake(kind, n)
        })
        .await;
        latency_rows(o, &mut r, "handshake", raws(), |raw| raw::handshake(raw, n)).await;
    }
    if o.wants("reconnect") {
        let n = o.handshakes();
        latency_rows(o, &mut r, "reconnect", kinds(), |kind| {
            scenarios::reconnect(kind, n)
        })
        .await;
        latency_rows(o, &mut r, "reconnect", raws(), |raw| raw::reconnect(raw, n)).await;
    }
    if o.wants("idle_memory") {
        for kind in Kind::ALL
            .into_iter()
            .filter(|k| k.crosses_processes() && o.runs(k.name()))
        {
            let v = reps(|| peers::idle_memory(kind, o.idle_peers())).await;
            put(&mut r, "idle_memory", kind.name(), v, "bytes");
        }
        r.skipped.push(
            "idle_memory/memory, fanout/memory: the memory transport cannot span processes".into(),
        );
    }
    if o.wants("fanout") {
        for kind in Kind::ALL
            .into_iter()
            .filter(|k| k.crosses_processes() && o.runs(k.name()))
        {
            let s = samples(|| peers::fanout(kind, o.fanout_peers())).await;
            put_latency(&mut r, "fanout", kind.name(), &s, false);
            let cpu = s.iter().map(|s| s.value).collect();
            put(&mut r, "fanout_cpu", kind.name(), cpu, "us/msg");
        }
        r.settings
            .insert("fanout_peers".into(), o.fanout_peers().to_string());
    }
    r
}

/// Every router transport, with its name.
fn kinds() -> impl Iterator<Item = (Kind, &'static str)> {
    Kind::ALL.into_iter().map(|k| (k, k.name()))
}

/// Every raw baseline, with its name.
fn raws() -> impl Iterator<Item = (Raw, &'static str)> {
    Raw::ALL.into_iter().map(|r| (r, r.name()))
}

/// `scenario`'s latency figures for each of `subjects` (a router
/// transport or a raw baseline, with its name) the options ask for.
async fn latency_rows<T, F, Fut>(
    o: &Options,
    r: &mut Results,
    scenario: &str,
    subjects: impl IntoIterator<Item = (T, &'static str)>,
    run: F,
) where
    T: Copy,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Sample>,
{
    for (subject, name) in subjects.into_iter().filter(|(_, n)| o.runs(n)) {
        let s = samples(|| run(subject)).await;
        put_latency(r, scenario, name, &s, false);
    }
}

async fn reps<F, Fut>(f: F) -> Vec<f64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Sample>,
{
    samples(f).await.into_iter().map(|s| s.value).collect()
}

async fn samples<F, Fut>(f: F) -> Vec<Sample>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Sample>,
{
    let mut out = Vec::with_capacity(REPETITIONS);
    for _ in 0..REPETITIONS {
        out.push(f().await);
    }
    out
}

fn put(r: &mut Results, scenario: &str, transport: &str, values: Vec<f64>, unit: &'static str) {
    let f = Figure::of(values, unit);
    eprintln!(
        "{scenario}/{transport}: {:.1} {unit} ({:.1}–{:.1})",
        f.value, f.min, f.max
    );
    r.figures.insert(format!("{scenario}/{transport}"), f);
}

fn put_latency(r: &mut Results, scenario: &str, transport: &str, samples: &[Sample], cdf: bool) {
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        let per_rep: Vec<f64> = samples.iter().map(|s| s.latencies.quantile_us(q)).collect();
        put(r, &format!("{scenario}_{label}"), transport, per_rep, "us");
    }
    if cdf {
        let mut merged = Latencies::default();
        for s in samples {
            merged.merge(&s.latencies);
        }
        let all = merged.cdf_us();
        r.latencies
            .entry(scenario.to_string())
            .or_default()
            .insert(transport.to_string(), all);
    }
}

/// A relative output path names a place in the workspace: `cargo bench`
/// runs this binary in the bench package's directory, not where the
/// command was typed.
fn from_root(path: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(path);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let package = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    package.parent().unwrap_or(package).join(path)
}

/// One of `--wan-peer`'s windows, in bytes.
fn parse_window<T: std::str::FromStr>(arg: Option<&String>) -> Result<T, String> {
    let w = arg.ok_or("--wan-peer needs a namespace and two windows")?;
    w.parse().map_err(|_| format!("bad window {w}"))
}
