//! The transport comparison: QUIC, MConnection (CometBFT defaults and
//! tuned) and the memory transport through the full router, plus raw
//! quinn and raw TLS-over-TCP without it, on the same machine in one run.
//!
//! ```text
//! cargo bench --bench transports -- [--quick] [--only <scenario>]... [--transport <name>]...
//!                                    [--workers <n>] [--json <path>] [--out <dir>]
//! ```
//!
//! Scenarios: bulk, small, rtt, hol, hol_loss, handshake, reconnect,
//! idle_memory, fanout, consensus, consensus_loss, wan. Both router nodes of a pair live in
//! this process (one tokio runtime, all cores); `idle_memory` and `fanout`
//! put their peers in a second process (this binary with `--peers`).
//! `consensus` runs 4 validators (tasks in this process, each with its own
//! router and transport) on 1 MiB blocks: heights per second and commit
//! latency. `hol_loss` and `consensus_loss` run `hol` and `consensus`
//! again in a private network namespace that drops 1 % of packets (root,
//! `ip`, `nft`; otherwise they are reported as skipped).
//!
//! Every figure is the median of three repetitions, with min and max.

// A binary's items are reachable only from itself.
#![allow(unreachable_pub)]

mod consensus;
mod nodes;
mod peers;
mod raw;
mod report;
mod scenarios;
mod wan;

use std::path::PathBuf;
use std::time::Duration;

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
    /// Running on the WAN link: side B's namespace and the stream window.
    wan_peer: Option<(String, u32)>,
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
                "--json" => o.json = Some(it.next().ok_or("--json needs a path")?.into()),
                "--out" => o.out = Some(it.next().ok_or("--out needs a directory")?.into()),
                "--netns-child" => o.netns_child = true,
                "--wan-peer" => {
                    let ns = it.next().ok_or("--wan-peer needs a namespace")?;
                    let w = it.next().ok_or("--wan-peer needs a window")?;
                    let w = w.parse().map_err(|_| format!("bad window {w}"))?;
                    o.wan_peer = Some((ns.clone(), w));
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
    if let Some((ns, window)) = &options.wan_peer {
        wan::join(ns, *window);
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

/// Runs `scenario` again inside a network namespace whose loopback drops
/// 1 % of incoming packets; its figures are named `<scenario>_loss…`.
async fn under_loss(o: &Options, r: &mut Results, scenario: &str) {
    let lossy = format!("{scenario}_loss");
    let skip = |r: &mut Results, why: String| {
        eprintln!("{lossy} skipped: {why}");
        r.skipped.push(format!("{lossy}: {why}"));
    };
    if !is_root() {
        return skip(r, "needs root to create a network namespace".into());
    }
    for tool in ["ip", "nft"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|out| out.status.success());
        if !found {
            return skip(
                r,
                format!("`{tool}` not installed (Debian: apt-get install iproute2 nftables)"),
            );
        }
    }
    let ns = format!("p2pbench{}", std::process::id());
    let sh = |cmd: String| {
        std::process::Command::new("sh")
            .args(["-c", &cmd])
            .status()
            .is_ok_and(|s| s.success())
    };
    let setup = [
        format!("ip netns add {ns}"),
        format!("ip -n {ns} link set lo mtu 1500 up"),
        format!("ip netns exec {ns} nft add table inet loss"),
        format!("ip netns exec {ns} nft add chain inet loss input '{{ type filter hook input priority 0; }}'"),
        format!("ip netns exec {ns} nft add rule inet loss input numgen random mod 100 '<' 1 drop"),
    ];
    for cmd in &setup {
        if !sh(cmd.clone()) {
            sh(format!("ip netns del {ns} 2>/dev/null"));
            return skip(r, format!("`{cmd}` failed"));
        }
    }
    // Single packets must be what drops: turn segmentation offloads off
    // where ethtool exists (without it, large loopback segments drop whole).
    let offloads = sh(format!(
        "ip netns exec {ns} ethtool -K lo tso off gso off gro off >/dev/null 2>&1"
    ));
    r.settings.insert(
        lossy.clone(),
        format!(
            "namespace loopback, MTU 1500, nft input drop 1 %, offloads {}",
            if offloads {
                "off"
            } else {
                "on (ethtool missing)"
            }
        ),
    );
    let ran = child_figures(
        o,
        r,
        &format!("ip netns exec {ns}"),
        &["--only", scenario],
        |key| key.replacen(scenario, &lossy, 1),
    )
    .await;
    sh(format!("ip netns del {ns}"));
    if let Err(why) = ran {
        skip(r, why);
    }
}

/// Runs this benchmark again as a child (`--netns-child`) under `exec`
/// (e.g. `ip netns exec <ns>`) with `args`, and takes in its figures and
/// latency series under the names `rename` gives them.
async fn child_figures(
    o: &Options,
    r: &mut Results,
    exec: &str,
    args: &[&str],
    rename: impl Fn(&str) -> String,
) -> Result<(), String> {
    let tmp = std::env::temp_dir().join(format!("p2pbench-child{}.json", std::process::id()));
    let exe = std::env::current_exe().expect("own path");
    let mut cmd = format!(
        "{exec} {} --netns-child {} --json {}",
        exe.display(),
        args.join(" "),
        tmp.display()
    );
    if o.quick {
        cmd.push_str(" --quick");
    }
    let ran = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .args(["-c", &cmd])
            .status()
            .is_ok_and(|s| s.success())
    })
    .await
    .unwrap_or(false);
    let parsed = std::fs::read_to_string(&tmp)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
    let _ = std::fs::remove_file(&tmp);
    let Some(json) = parsed.filter(|_| ran) else {
        return Err("the run in the child process failed".into());
    };
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    for (key, f) in json["results"].as_object().into_iter().flatten() {
        let key = rename(key);
        let unit = report::unit(f["unit"].as_str().unwrap_or(""));
        let figure = Figure {
            value: num(&f["value"]),
            min: num(&f["min"]),
            max: num(&f["max"]),
            unit,
        };
        eprintln!("{key}: {:.1} {unit}", figure.value);
        r.figures.insert(key, figure);
    }
    for (scenario, series) in json["latencies"].as_object().into_iter().flatten() {
        let entry = r.latencies.entry(rename(scenario)).or_default();
        for (t, v) in series.as_object().into_iter().flatten() {
            let values = v
                .as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
                .unwrap_or_default();
            entry.insert(t.clone(), values);
        }
    }
    Ok(())
}

/// Runs bulk, hol and rtt again across the WAN link (see [`wan`]) for
/// quic, mconn-fast and raw quinn; figures are named `wan_<figure>`.
async fn over_wan(o: &Options, r: &mut Results) {
    let skip = |r: &mut Results, why: String| {
        eprintln!("wan skipped: {why}");
        r.skipped.push(format!("wan: {why}"));
    };
    if !is_root() {
        return skip(r, "needs root to create network namespaces".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return skip(r, "no /dev/net/tun".into());
    }
    let config = wan::LinkConfig::wan();
    let link = match wan::WanLink::create(config) {
        Ok(link) => link,
        Err(why) => return skip(r, why),
    };
    let window = wan::window_for(&config);
    r.settings.insert(
        "wan".into(),
        format!(
            "{}; QUIC stream window {} KiB (1 BDP) for quic and raw-quinn; TCP autotuned",
            config.describe(),
            window / 1024
        ),
    );
    let wan_peer = format!("{} {window}", link.ns_b);
    let mut args = vec!["--wan-peer", &wan_peer];
    for scenario in ["bulk", "hol", "rtt"] {
        args.extend(["--only", scenario]);
    }
    for transport in ["quic", "mconn-fast", "raw-quinn"] {
        if o.runs(transport) {
            args.extend(["--transport", transport]);
        }
    }
    let exec = format!("ip netns exec {}", link.ns_a);
    let ran = child_figures(o, r, &exec, &args, |key| format!("wan_{key}")).await;
    let stats = &link.stats;
    let seen = stats.packets.load(std::sync::atomic::Ordering::Relaxed);
    let queue = stats
        .dropped_queue
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("wan link: {seen} packets forwarded, {queue} dropped at the full queue");
    drop(link);
    if let Err(why) = ran {
        skip(r, why);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .as_deref()
        == Some("0")
}
