//! Results: JSON for machines, a Markdown report with ratios, SVG plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde_json::json;

/// min / median / max of one figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub value: f64,
    pub min: f64,
    pub max: f64,
    pub unit: &'static str,
}

impl Figure {
    pub fn of(mut values: Vec<f64>, unit: &'static str) -> Figure {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        if values.is_empty() {
            return Figure {
                value: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                unit,
            };
        }
        Figure {
            value: values[values.len() / 2],
            min: values[0],
            max: values[values.len() - 1],
            unit,
        }
    }
}

#[derive(Debug, Default)]
pub struct Results {
    /// `"<scenario>/<transport>"` → figure.
    pub figures: BTreeMap<String, Figure>,
    /// Latency samples for the CDF plots: scenario → transport → µs.
    pub latencies: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    pub skipped: Vec<String>,
    pub settings: BTreeMap<String, String>,
}

impl Results {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.figures
            .get(key)
            .map(|f| f.value)
            .filter(|v| v.is_finite())
    }

    pub fn json(&self) -> serde_json::Value {
        let results: serde_json::Map<String, serde_json::Value> = self
            .figures
            .iter()
            .map(|(k, f)| {
                let num = |v: f64| if v.is_finite() { json!(v) } else { json!(null) };
                (
                    k.clone(),
                    json!({"value": num(f.value), "min": num(f.min), "max": num(f.max), "unit": f.unit}),
                )
            })
            .collect();
        json!({
            "machine": machine(),
            "settings": self.settings,
            "skipped": self.skipped,
            "results": results,
        })
    }

    /// The ratios the issue asks for, as (label, value, target).
    pub fn ratios(&self) -> Vec<(String, Option<f64>, &'static str)> {
        let r = |a: &str, b: &str| Some(self.get(a)? / self.get(b)?);
        vec![
            (
                "bulk: quic ÷ raw-quinn".into(),
                r("bulk/quic", "bulk/raw-quinn"),
                "≥ 0.9",
            ),
            (
                "bulk: quic ÷ mconn-fast".into(),
                r("bulk/quic", "bulk/mconn-fast"),
                "≥ 4",
            ),
            (
                "small: quic ÷ raw-quinn".into(),
                r("small/quic", "small/raw-quinn"),
                "≥ 0.5",
            ),
            (
                "small: quic msg/s".into(),
                self.get("small/quic"),
                "≥ 1,500,000",
            ),
            (
                "small: quic ÷ mconn-fast".into(),
                r("small/quic", "small/mconn-fast"),
                "",
            ),
            (
                "rtt p50: quic ÷ raw-quinn".into(),
                r("rtt_p50/quic", "rtt_p50/raw-quinn"),
                "≤ 1.25",
            ),
            (
                "rtt p50: mconn-fast ÷ quic".into(),
                r("rtt_p50/mconn-fast", "rtt_p50/quic"),
                "",
            ),
            (
                "hol p99: quic µs".into(),
                self.get("hol_p99/quic"),
                "≤ 1,000",
            ),
            (
                "hol p99: mconn-fast ÷ quic".into(),
                r("hol_p99/mconn-fast", "hol_p99/quic"),
                "",
            ),
            (
                "hol_loss p99: mconn-fast ÷ quic".into(),
                r("hol_loss_p99/mconn-fast", "hol_loss_p99/quic"),
                "≥ 8",
            ),
            (
                "consensus commit p50: quic ÷ mconn-fast".into(),
                r("consensus_p50/quic", "consensus_p50/mconn-fast"),
                "",
            ),
            (
                "consensus_loss commit p50: quic ÷ mconn-fast".into(),
                r("consensus_loss_p50/quic", "consensus_loss_p50/mconn-fast"),
                "",
            ),
            (
                "handshake p50: quic ÷ raw-quinn".into(),
                r("handshake_p50/quic", "handshake_p50/raw-quinn"),
                "≤ 1.5",
            ),
            (
                "handshake p50: mconn-fast ÷ quic".into(),
                r("handshake_p50/mconn-fast", "handshake_p50/quic"),
                "",
            ),
            (
                "idle_memory: quic bytes/peer".into(),
                self.get("idle_memory/quic"),
                "≤ 64,000",
            ),
            (
                "fanout p99: quic µs".into(),
                self.get("fanout_p99/quic"),
                "≤ 50,000",
            ),
        ]
    }

    pub fn markdown(&self, command: &str) -> String {
        let mut out = String::new();
        let m = machine();
        let _ = writeln!(out, "# Transport benchmark\n");
        let _ = writeln!(
            out,
            "Machine: {} cores, {}; {}. Command: `{command}`.\n",
            m["cores"],
            m["cpu"].as_str().unwrap_or("?"),
            m["kernel"].as_str().unwrap_or("?")
        );
        let _ = writeln!(
            out,
            "Settings: {}\n",
            serde_json::to_string(&self.settings).unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "## Ratios\n\n| ratio | measured | target |\n|---|---|---|"
        );
        for (label, value, target) in self.ratios() {
            let v = value.map_or("n/a".to_string(), |v| {
                if v >= 1000.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            });
            let _ = writeln!(out, "| {label} | {v} | {target} |");
        }
        let _ = writeln!(
            out,
            "\n## All figures (median, min–max of the repetitions)\n"
        );
        let _ = writeln!(
            out,
            "| figure | median | min | max | unit |\n|---|---|---|---|---|"
        );
        for (k, f) in &self.figures {
            let _ = writeln!(
                out,
                "| {k} | {:.1} | {:.1} | {:.1} | {} |",
                f.value, f.min, f.max, f.unit
            );
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(out, "\nSkipped:\n");
            for s in &self.skipped {
                let _ = writeln!(out, "- {s}");
            }
        }
        let _ = writeln!(
            out,
            "\nPlots: `hol_cdf.svg`, `hol_loss_cdf.svg` (one-way latency CDFs), `bulk.svg` (throughput)."
        );
        out
    }

    pub fn plots(&self, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
        for scenario in ["hol", "hol_loss"] {
            if let Some(series) = self.latencies.get(scenario) {
                cdf(&dir.join(format!("{scenario}_cdf.svg")), scenario, series)?;
            }
        }
        let bars: Vec<(String, f64)> = self
            .figures
            .iter()
            .filter_map(|(k, f)| {
                let t = k.strip_prefix("bulk/")?;
                f.value.is_finite().then(|| (t.to_string(), f.value))
            })
            .collect();
        if !bars.is_empty() {
            bar_chart(&dir.join("bulk.svg"), &bars)?;
        }
        Ok(())
    }
}

fn cdf(
    path: &Path,
    scenario: &str,
    series: &BTreeMap<String, Vec<f64>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = series
        .values()
        .flat_map(|v| v.iter().copied())
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{scenario}: one-way latency CDF"),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((1.0f64..max * 1.2).log_scale(), 0.0f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log scale)")
        .y_desc("fraction ≤ x")
        .draw()?;
    let colors = [&BLUE, &RED, &GREEN, &MAGENTA, &CYAN, &BLACK];
    for (i, (name, values)) in series.iter().enumerate() {
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1) as f64;
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                sorted
                    .iter()
                    .enumerate()
                    .map(|(j, v)| (v.max(1.0), (j + 1) as f64 / n)),
                color,
            ))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

fn bar_chart(path: &Path, bars: &[(String, f64)]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = bars.iter().map(|b| b.1).fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "bulk throughput, MB/s (64 KiB messages)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0usize..bars.len(), 0.0f64..max * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&|i| bars.get(*i).map(|b| b.0.clone()).unwrap_or_default())
        .y_desc("MB/s")
        .draw()?;
    chart.draw_series(
        bars.iter()
            .enumerate()
            .map(|(i, (_, v))| Rectangle::new([(i, 0.0), (i + 1, *v)], BLUE.mix(0.6).filled())),
    )?;
    root.present()?;
    Ok(())
}

/// What the report says about the machine.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| std::env::consts::OS.into());
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "kernel": kernel,
        "quinn": "0.11",
        "rustls": "0.23 (ring)",
    })
}
