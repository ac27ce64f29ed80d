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

    /// The ratios the targets are set in, as (label, value, target): a
    /// figure divided by another, or a figure alone.
    pub fn ratios(&self) -> Vec<(String, Option<f64>, &'static str)> {
        const RATIOS: [(&str, &str, Option<&str>, &str); 23] = [
            (
                "rtt p50: quic ÷ mconn-fast",
                "rtt_p50/quic",
                Some("rtt_p50/mconn-fast"),
                "≤ 1",
            ),
            (
                "rtt p50: quic ÷ raw-quinn",
                "rtt_p50/quic",
                Some("rtt_p50/raw-quinn"),
                "≤ 1.5",
            ),
            (
                "handshake p50: quic ÷ raw-quinn",
                "handshake_p50/quic",
                Some("handshake_p50/raw-quinn"),
                "≤ 1.25",
            ),
            (
                "reconnect p50: quic ÷ mconn-fast",
                "reconnect_p50/quic",
                Some("reconnect_p50/mconn-fast"),
                "≤ 1",
            ),
            (
                "reconnect p50: quic ÷ raw-quinn",
                "reconnect_p50/quic",
                Some("reconnect_p50/raw-quinn"),
                "",
            ),
            (
                "reconnect p50: raw-quinn ÷ mconn-fast",
                "reconnect_p50/raw-quinn",
                Some("reconnect_p50/mconn-fast"),
                "",
            ),
            (
                "handshake p50: quic ÷ mconn-fast",
                "handshake_p50/quic",
                Some("handshake_p50/mconn-fast"),
                "",
            ),
            (
                "fanout p99: quic ÷ mconn-fast",
                "fanout_p99/quic",
                Some("fanout_p99/mconn-fast"),
                "≤ 1",
            ),
            (
                "fanout CPU per delivered message: quic ÷ mconn-fast",
                "fanout_cpu/quic",
                Some("fanout_cpu/mconn-fast"),
                "",
            ),
            (
                "small: quic ÷ raw-quinn",
                "small/quic",
                Some("small/raw-quinn"),
                "≥ 0.35",
            ),
            (
                "small: quic ÷ mconn-fast",
                "small/quic",
                Some("small/mconn-fast"),
                "",
            ),
            (
                "bulk: quic ÷ raw-quinn",
                "bulk/quic",
                Some("bulk/raw-quinn"),
                "≥ 0.9",
            ),
            (
                "bulk: quic ÷ mconn-fast",
                "bulk/quic",
                Some("bulk/mconn-fast"),
                "",
            ),
            (
                "wan bulk: quic ÷ raw-quinn",
                "wan_bulk/quic",
                Some("wan_bulk/raw-quinn"),
                "≥ 0.8",
            ),
            (
                "wan bulk: quic ÷ mconn-fast",
                "wan_bulk/quic",
                Some("wan_bulk/mconn-fast"),
                "",
            ),
            (
                "wan hol p99: quic µs",
                "wan_hol_p99/quic",
                None,
                "≤ 30,000 (one way + 5 ms)",
            ),
            (
                "wan hol p99: mconn-fast ÷ quic",
                "wan_hol_p99/mconn-fast",
                Some("wan_hol_p99/quic"),
                "",
            ),
            (
                "hol p99: quic ÷ quic's idle rtt p99",
                "hol_p99/quic",
                Some("rtt_p99/quic"),
                "≤ 5",
            ),
            (
                "hol p99: mconn-fast ÷ quic",
                "hol_p99/mconn-fast",
                Some("hol_p99/quic"),
                "",
            ),
            (
                "hol_loss p99: mconn-fast ÷ quic",
                "hol_loss_p99/mconn-fast",
                Some("hol_loss_p99/quic"),
                "≥ 8",
            ),
            (
                "consensus commit p50: quic ÷ mconn-fast",
                "consensus_p50/quic",
                Some("consensus_p50/mconn-fast"),
                "",
            ),
            (
                "consensus_loss commit p50: quic ÷ mconn-fast",
                "consensus_loss_p50/quic",
                Some("consensus_loss_p50/mconn-fast"),
                "",
            ),
            (
                "idle_memory: quic bytes/peer",
                "idle_memory/quic",
                None,
                "≤ 64,000",
            ),
        ];
        RATIOS
            .iter()
            .map(|&(label, a, b, target)| {
                let value = match b {
                    Some(b) => self.get(a).zip(self.get(b)).map(|(a, b)| a / b),
                    None => self.get(a),
                };
                (label.to_string(), value, target)
            })
            .collect()
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
        // What a reader compares: memory's in-process copy (tens of GB/s)
        // would flatten every other bar, so its value goes in the title.
        let mut memory = None;
        let bars: Vec<(String, f64)> = self
            .figures
            .iter()
            .filter_map(|(k, f)| {
                let t = k.strip_prefix("bulk/")?;
                if t == "memory" {
                    memory = Some(f.value);
                    return None;
                }
                f.value.is_finite().then(|| (t.to_string(), f.value))
            })
            .collect();
        if !bars.is_empty() {
            let title = match memory {
                Some(m) => {
                    format!("bulk throughput, MB/s (64 KiB messages; memory, not drawn: {m:.0})")
                }
                None => "bulk throughput, MB/s (64 KiB messages)".to_string(),
            };
            let chart = Bars {
                title: &title,
                axis: "MB/s (log scale)",
                mark: None,
            };
            chart.draw(&dir.join("bulk.svg"), &bars)?;
        }
        let advantages = self.advantages();
        if !advantages.is_empty() {
            let chart = Bars {
                title: "QUIC's advantage per scenario (> 1: QUIC better; log scale)",
                axis: "× (throughput: quic ÷ other; latency, memory: other ÷ quic)",
                mark: Some(1.0),
            };
            chart.draw(&dir.join("ratios.svg"), &advantages)?;
        }
        Ok(())
    }

    /// For every scenario, how many times better quic did than mconn-fast
    /// and than raw quinn (where both ran): above 1 QUIC wins.
    fn advantages(&self) -> Vec<(String, f64)> {
        // (figure, whether more is better)
        const SCENARIOS: [(&str, bool); 14] = [
            ("bulk", true),
            ("small", true),
            ("rtt_p50", false),
            ("hol_p99", false),
            ("hol_loss_p99", false),
            ("handshake_p50", false),
            ("reconnect_p50", false),
            ("fanout_p99", false),
            ("idle_memory", false),
            ("consensus_p50", false),
            ("consensus_loss_p50", false),
            ("wan_bulk", true),
            ("wan_hol_p99", false),
            ("wan_rtt_p50", false),
        ];
        let mut out = Vec::new();
        for (scenario, more_is_better) in SCENARIOS {
            let Some(quic) = self.get(&format!("{scenario}/quic")) else {
                continue;
            };
            for other in ["mconn-fast", "raw-quinn"] {
                if let Some(v) = self.get(&format!("{scenario}/{other}")) {
                    let ratio = if more_is_better { quic / v } else { v / quic };
                    if ratio.is_finite() && ratio > 0.0 {
                        out.push((format!("{scenario} vs {other}"), ratio));
                    }
                }
            }
        }
        out
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

/// A bar with a gap above and below it.
fn inset<C>(mut bar: Rectangle<C>) -> Rectangle<C> {
    bar.set_margin(4, 4, 0, 0);
    bar
}

/// A horizontal bar chart on a log scale: one labelled bar per row, its
/// value printed at its end, optionally around a reference line.
struct Bars<'a> {
    title: &'a str,
    axis: &'a str,
    /// A vertical line at this value (e.g. 1 for ratios).
    mark: Option<f64>,
}

impl Bars<'_> {
    fn draw(&self, path: &Path, bars: &[(String, f64)]) -> Result<(), Box<dyn std::error::Error>> {
        let height = 90 + 28 * bars.len() as u32;
        let root = SVGBackend::new(path, (900, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let max = bars
            .iter()
            .map(|b| b.1)
            .fold(self.mark.unwrap_or(1.0), f64::max);
        let min = bars
            .iter()
            .map(|b| b.1)
            .fold(self.mark.unwrap_or(1.0), f64::min);
        // A segmented range over 0..=n-1 has a row per bar, labels centred.
        let rows = (0..bars.len().saturating_sub(1)).into_segmented();
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(self.title, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(210);
        let label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                bars.get(*i).map(|b| b.0.clone()).unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        };
        let value_at = |v: f64| {
            if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        let range = (min / 2.0).max(1e-3)..max * 4.0;
        // Bars grow from the mark (a ratio of 1) or from the axis.
        let base = self.mark.unwrap_or(range.start);
        let mut chart = builder.build_cartesian_2d(range.log_scale(), rows)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .x_labels(8)
            .y_labels(bars.len())
            .y_label_formatter(&label)
            .x_desc(self.axis)
            .draw()?;
        chart.draw_series(bars.iter().enumerate().map(|(i, &(_, v))| {
            let color = if v >= base {
                BLUE.mix(0.6)
            } else {
                RED.mix(0.6)
            };
            let (from, to) = (v.min(base), v.max(base));
            let rows = (SegmentValue::Exact(i), SegmentValue::Exact(i + 1));
            inset(Rectangle::new(
                [(from, rows.0), (to, rows.1)],
                color.filled(),
            ))
        }))?;
        chart.draw_series(bars.iter().enumerate().map(|(i, &(_, v))| {
            let at = (v.max(base) * 1.1, SegmentValue::CenterOf(i));
            Text::new(value_at(v), at, ("sans-serif", 13))
        }))?;
        if let Some(m) = self.mark {
            let line = vec![(m, SegmentValue::Exact(0)), (m, SegmentValue::Last)];
            chart.draw_series(std::iter::once(PathElement::new(line, BLACK)))?;
        }
        root.present()?;
        Ok(())
    }
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

/// The unit a child process named, as this process spells it.
pub fn unit(name: &str) -> &'static str {
    ["MB/s", "msg/s", "us", "heights/s", "bytes"]
        .into_iter()
        .find(|u| *u == name)
        .unwrap_or("")
}
