//! Scenarios run again inside private network namespaces that this
//! process creates and removes: the loss namespace (`hol_loss`,
//! `consensus_loss`) and the WAN link (`wan`), each by a child process
//! of this benchmark whose figures come back renamed; and the shell
//! helpers they share.

use crate::report::{self, Figure, Results};
use crate::wan;
use crate::Options;

/// Runs `cmd` with `sh -c`; says which command failed.
pub fn sh(cmd: &str) -> Result<(), String> {
    let status = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .map_err(|e| format!("`{cmd}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{cmd}` failed"))
    }
}

/// Whether `tool` is on the path.
fn has(tool: &str) -> bool {
    sh(&format!("command -v {tool} >/dev/null 2>&1")).is_ok()
}

/// Runs `scenario` again inside a network namespace whose loopback drops
/// 1 % of incoming packets; its figures are named `<scenario>_loss…`.
pub async fn under_loss(o: &Options, r: &mut Results, scenario: &str) {
    let lossy = format!("{scenario}_loss");
    let skip = |r: &mut Results, why: String| {
        eprintln!("{lossy} skipped: {why}");
        r.skipped.push(format!("{lossy}: {why}"));
    };
    if !is_root() {
        return skip(r, "needs root to create a network namespace".into());
    }
    for tool in ["ip", "nft"] {
        if !has(tool) {
            return skip(
                r,
                format!("`{tool}` not installed (scripts/setup-net-tools installs it)"),
            );
        }
    }
    let ns = format!("p2pbench{}", std::process::id());
    let setup = [
        format!("ip netns add {ns}"),
        format!("ip -n {ns} link set lo mtu 1500 up"),
        format!("ip netns exec {ns} nft add table inet loss"),
        format!("ip netns exec {ns} nft add chain inet loss input '{{ type filter hook input priority 0; }}'"),
        format!("ip netns exec {ns} nft add rule inet loss input numgen random mod 100 '<' 1 drop"),
    ];
    for cmd in &setup {
        if sh(cmd).is_err() {
            let _ = sh(&format!("ip netns del {ns} 2>/dev/null"));
            return skip(r, format!("`{cmd}` failed"));
        }
    }
    // Single packets must be what drops: turn segmentation offloads off
    // where ethtool exists (without it, large loopback segments drop whole).
    let offloads = sh(&format!(
        "ip netns exec {ns} ethtool -K lo tso off gso off gro off >/dev/null 2>&1"
    ))
    .is_ok();
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
    let mut args = vec!["--only", scenario];
    for transport in &o.transports {
        args.extend(["--transport", transport.as_str()]);
    }
    let ran = child_figures(o, r, &format!("ip netns exec {ns}"), &args, |key| {
        key.replacen(scenario, &lossy, 1)
    })
    .await;
    let _ = sh(&format!("ip netns del {ns}"));
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
    let ran = tokio::task::spawn_blocking(move || sh(&cmd).is_ok())
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
pub async fn over_wan(o: &Options, r: &mut Results) {
    let skip = |r: &mut Results, why: String| {
        eprintln!("wan skipped: {why}");
        r.skipped.push(format!("wan: {why}"));
    };
    if !is_root() {
        return skip(r, "needs root to create network namespaces".into());
    }
    if !has("ip") {
        return skip(
            r,
            "`ip` not installed (scripts/setup-net-tools installs it)".into(),
        );
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return skip(r, "no /dev/net/tun".into());
    }
    let config = wan::LinkConfig::wan();
    let link = match wan::WanLink::create(config) {
        Ok(link) => link,
        Err(why) => return skip(r, why),
    };
    let windows = wan::Windows::for_link(&config);
    r.settings.insert(
        "wan".into(),
        format!(
            "{}; QUIC congestion window capped at {} KiB (0.95 BDP), stream windows {} KiB (2 BDP), for quic and raw-quinn; TCP autotuned",
            config.describe(),
            windows.congestion / 1024,
            windows.stream / 1024
        ),
    );
    let wan_peer = format!("{} {} {}", link.ns_b, windows.stream, windows.congestion);
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
