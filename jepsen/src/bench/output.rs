//! bench.json's ratios, the markdown table and the SVG plots.

use super::run::Workload;
use crate::report::esc;
use anyhow::{Context, Result};
use clap::ValueEnum;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;

const SYSTEMS: [(&str, &str, &str); 3] = [
    ("locker", "Locker", "#2f6fb3"),
    ("etcd", "etcd", "#3a9a4a"),
    ("redis", "Redis", "#c8452f"),
];

/// Writes bench.json, bench.md and one SVG per workload into `dir`.
pub fn write_all(dir: &Path, r: &Value) -> Result<()> {
    let put = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).with_context(|| format!("write {name}"))
    };
    put(
        "bench.json",
        serde_json::to_string_pretty(r).context("bench.json")?,
    )?;
    put("bench.md", markdown(r))?;
    for &w in Workload::value_variants() {
        if let Some(s) = svg(r, w) {
            put(&format!("{}.svg", w.name()), s)?;
        }
    }
    Ok(())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Locker's figures divided by a peer's: throughput (above 1: Locker does
/// more) and latency percentiles (above 1: Locker is slower).
pub fn ratios(systems: &Value) -> Value {
    let l = &systems["locker"];
    let mut out = json!({});
    for peer in ["etcd", "redis"] {
        let p = &systems[peer];
        if !l.is_object() || !p.is_object() {
            continue;
        }
        let div = |a: f64, b: f64| if b > 0.0 { json!(a / b) } else { Value::Null };
        let mut r = json!({"throughput": div(f(&l["ops_per_s"]), f(&p["ops_per_s"]))});
        for q in ["p50", "p99", "p999"] {
            r[q] = div(f(&l["latency_ms"][q]), f(&p["latency_ms"][q]));
        }
        out[format!("locker_vs_{peer}")] = r;
    }
    out
}

/// Compact number: 1234 -> "1.2k", 0.0123 -> "0.012".
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 10_000.0 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1_000.0 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.3}")
    }
}

fn cell(v: &Value) -> String {
    if v.is_null() {
        "–".into()
    } else {
        num(f(v))
    }
}

/// The markdown report: one table per workload, Locker's ratios, memory.
pub fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Locker vs etcd vs Redis\n");
    let _ = writeln!(s, "{}\n", r["setup"].as_str().unwrap_or(""));
    for &w in Workload::value_variants() {
        let rows: Vec<&Value> = results_of(r, w.name());
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(s, "## {}\n\nOne operation: {}.\n", w.name(), w.op());
        s.push_str("| clients | system | ops/s | p50 ms | p99 ms | p999 ms | server CPU (cores) | CPU µs/op | peak RSS/node MB | errors |\n");
        s.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for row in &rows {
            for (key, label, _) in SYSTEMS {
                let x = &row["systems"][key];
                if !x.is_object() {
                    continue;
                }
                let l = &x["latency_ms"];
                let _ = writeln!(
                    s,
                    "| {} | {label} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    row["clients"],
                    cell(&x["ops_per_s"]),
                    cell(&l["p50"]),
                    cell(&l["p99"]),
                    cell(&l["p999"]),
                    cell(&x["server_cpu_cores"]),
                    cell(&x["server_cpu_us_per_op"]),
                    cell(&x["peak_rss_mb"]),
                    x["errors"]
                );
            }
        }
        ratio_table(&mut s, &rows);
        let _ = writeln!(s, "\n![{0}]({0}.svg)\n", w.name());
    }
    memory_md(&mut s, &r["memory"]);
    s
}

fn results_of<'a>(r: &'a Value, w: &str) -> Vec<&'a Value> {
    r["results"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["workload"] == w).collect())
        .unwrap_or_default()
}

fn ratio_table(s: &mut String, rows: &[&Value]) {
    if !rows.iter().any(|r| {
        r["ratios"]["locker_vs_etcd"].is_object() || r["ratios"]["locker_vs_redis"].is_object()
    }) {
        return;
    }
    s.push_str(
        "\nLocker ÷ peer (ops/s above 1: Locker does more; latency above 1: Locker is slower):\n\n",
    );
    s.push_str("| clients | ops/s ÷ etcd | p50 ÷ etcd | p99 ÷ etcd | ops/s ÷ Redis | p50 ÷ Redis | p99 ÷ Redis |\n");
    s.push_str("|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let e = &row["ratios"]["locker_vs_etcd"];
        let r = &row["ratios"]["locker_vs_redis"];
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row["clients"],
            cell(&e["throughput"]),
            cell(&e["p50"]),
            cell(&e["p99"]),
            cell(&r["throughput"]),
            cell(&r["p50"]),
            cell(&r["p99"])
        );
    }
}

fn memory_md(s: &mut String, m: &Value) {
    if !m.is_object() {
        return;
    }
    let _ = writeln!(
        s,
        "## memory: one Locker node holding {} live locks\n",
        m["locks"]
    );
    if let Some(e) = m["error"].as_str() {
        let _ = writeln!(s, "Failed: {e}\n");
    }
    s.push_str("| figure | value |\n|---|---:|\n");
    for (k, label) in [
        ("rss_empty_mb", "resident, empty (MB)"),
        ("rss_loaded_mb", "resident with the locks (MB)"),
        ("peak_rss_mb", "peak resident while loading (MB)"),
        ("bytes_per_lock", "resident bytes per lock beyond empty"),
        ("rss_restarted_mb", "resident after a restart (MB)"),
        (
            "bytes_per_lock_restarted",
            "resident bytes per lock after a restart",
        ),
        ("data_dir_mb", "data directory (MB)"),
        ("load_per_s", "acquires/s while loading (64 clients)"),
        ("restart_ready_s", "restart until ready (s)"),
    ] {
        let _ = writeln!(s, "| {label} | {} |", cell(&m[k]));
    }
    let _ = writeln!(
        s,
        "| serves after the restart | {} |\n",
        m["serves_after_restart"]
    );
}

/// A round grid step (1, 2 or 5 times a power of ten) near `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// Per row, per system (None where it did not run), the figure `path` picks.
fn series(rows: &[&Value], path: impl Fn(&Value) -> f64) -> Vec<Vec<Option<f64>>> {
    let one = |row: &Value, k: &str| {
        Some(&row["systems"][k])
            .filter(|x| x.is_object())
            .map(&path)
    };
    rows.iter()
        .map(|row| SYSTEMS.iter().map(|(k, _, _)| one(row, k)).collect())
        .collect()
}

/// One SVG per workload: throughput (linear) and p99 latency (log scale),
/// grouped bars per client count, one colour per system.
pub fn svg(r: &Value, w: Workload) -> Option<String> {
    let rows = results_of(r, w.name());
    if rows.is_empty() {
        return None;
    }
    let groups: Vec<String> = rows
        .iter()
        .map(|x| format!("{} clients", x["clients"]))
        .collect();
    let thr = series(&rows, |x| f(&x["ops_per_s"]));
    let p99 = series(&rows, |x| f(&x["latency_ms"]["p99"]));
    let (pw, ph) = (470.0, 330.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="Helvetica, Arial, sans-serif" font-size="12"><rect width="100%" height="100%" fill="#fff"/>"##,
        2.0 * pw + 30.0,
        ph + 80.0
    );
    let _ = write!(
        s,
        r##"<text x="15" y="24" font-size="16" font-weight="bold">{}: {}</text>"##,
        esc(w.name()),
        esc(w.op())
    );
    panel(
        &mut s,
        10.0,
        40.0,
        pw,
        ph,
        "operations per second (higher is better)",
        &groups,
        &thr,
        false,
    );
    panel(
        &mut s,
        pw + 20.0,
        40.0,
        pw,
        ph,
        "p99 latency, ms, log scale (lower is better)",
        &groups,
        &p99,
        true,
    );
    let mut lx = 15.0;
    for (_, label, color) in SYSTEMS {
        let _ = write!(
            s,
            r##"<rect x="{lx}" y="{}" width="14" height="14" fill="{color}"/><text x="{}" y="{}">{label}</text>"##,
            ph + 55.0,
            lx + 20.0,
            ph + 66.0
        );
        lx += 90.0;
    }
    s.push_str("</svg>\n");
    Some(s)
}

/// A panel's value axis: linear from 0, or log10 between decades.
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
    height: f64,
}

impl Axis {
    fn new(vals: &[Vec<Option<f64>>], log: bool, height: f64) -> Axis {
        let all = || vals.iter().flatten().flatten().copied();
        let max = all().fold(0.0, f64::max);
        let (lo, hi) = if log {
            let min = all().filter(|v| *v > 0.0).fold(f64::MAX, f64::min);
            let lo = if min == f64::MAX {
                0.0
            } else {
                min.log10().floor()
            };
            (lo, max.max(1e-9).log10().ceil().max(lo + 1.0))
        } else {
            (0.0, if max > 0.0 { max * 1.15 } else { 1.0 })
        };
        Axis {
            log,
            lo,
            hi,
            height,
        }
    }

    /// Bar height of `v`.
    fn px(&self, v: f64) -> f64 {
        let t = if self.log {
            (v.max(1e-9).log10() - self.lo) / (self.hi - self.lo)
        } else {
            v / self.hi
        };
        self.height * t.clamp(0.0, 1.0)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            (self.lo as i32..=self.hi as i32)
                .map(|e| 10f64.powi(e))
                .collect()
        } else {
            let step = nice_step(self.hi / 4.0);
            (0..)
                .map(|i| i as f64 * step)
                .take_while(|t| *t <= self.hi)
                .collect()
        }
    }
}

/// Where a panel's plot area is: left edge, width, and the baseline's y.
struct Frame {
    x: f64,
    w: f64,
    base: f64,
}

#[allow(clippy::too_many_arguments)]
fn panel(
    s: &mut String,
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
    title: &str,
    groups: &[String],
    vals: &[Vec<Option<f64>>],
    log: bool,
) {
    let (left, top, bottom) = (50.0, 28.0, 26.0);
    let axis = Axis::new(vals, log, h - top - bottom);
    let fr = Frame {
        x: x0 + left,
        w: w - left - 10.0,
        base: y0 + top + axis.height,
    };
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" font-weight="bold">{}</text>"##,
        fr.x,
        y0 + 16.0,
        esc(title)
    );
    for t in axis.ticks() {
        let y = fr.base - axis.px(t);
        let _ = write!(
            s,
            r##"<line x1="{}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" font-size="10" fill="#555">{}</text>"##,
            fr.x,
            fr.x + fr.w,
            fr.x - 4.0,
            y + 3.0,
            num(t)
        );
    }
    bars(s, &fr, &axis, groups, vals);
    let _ = write!(
        s,
        r##"<line x1="{0}" x2="{1}" y1="{2}" y2="{2}" stroke="#333"/>"##,
        fr.x,
        fr.x + fr.w,
        fr.base
    );
}

/// Grouped bars, each labelled with its value, and the group names below.
fn bars(s: &mut String, fr: &Frame, axis: &Axis, groups: &[String], vals: &[Vec<Option<f64>>]) {
    let gw = fr.w / groups.len().max(1) as f64;
    let bw = (gw - 16.0) / SYSTEMS.len() as f64;
    for (gi, g) in groups.iter().enumerate() {
        let gx = fr.x + gi as f64 * gw + 8.0;
        for (si, (_, label, color)) in SYSTEMS.iter().enumerate() {
            let Some(Some(v)) = vals.get(gi).and_then(|r| r.get(si)) else {
                continue;
            };
            let bh = axis.px(*v).max(1.0);
            let x = gx + si as f64 * bw;
            let _ = write!(
                s,
                r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{color}"><title>{label}: {}</title></rect><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"##,
                fr.base - bh,
                bw - 2.0,
                num(*v),
                x + bw / 2.0 - 1.0,
                fr.base - bh - 3.0,
                num(*v)
            );
        }
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            gx + (gw - 16.0) / 2.0,
            fr.base + 16.0,
            esc(g)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_table_and_plot() {
        let sys = json!({
            "locker": {"ops_per_s": 200.0, "errors": 0, "latency_ms": {"p50": 2.0, "p99": 8.0, "p999": 9.0}},
            "etcd": {"ops_per_s": 100.0, "errors": 0, "latency_ms": {"p50": 4.0, "p99": 4.0, "p999": 0.0}},
        });
        let r = ratios(&sys);
        assert_eq!(r["locker_vs_etcd"]["throughput"], json!(2.0));
        assert_eq!(r["locker_vs_etcd"]["p99"], json!(2.0));
        assert!(r["locker_vs_etcd"]["p999"].is_null());
        assert!(r["locker_vs_redis"].is_null());
        let doc = json!({"setup": "x", "results": [
            {"workload": "read", "clients": 16, "systems": sys, "ratios": r}]});
        let md = markdown(&doc);
        assert!(md.contains("| 16 | Locker | 200 | 2.00 | 8.00 |"), "{md}");
        assert!(md.contains("| 16 | 2.00 | 0.500 | 2.00 | – |"), "{md}");
        assert!(md.contains("![read](read.svg)"));
        let plot = svg(&doc, Workload::Read).unwrap_or_default();
        assert!(plot.starts_with("<svg") && plot.contains("16 clients") && plot.contains(">200<"));
        assert!(svg(&doc, Workload::Extend).is_none());
        assert_eq!(
            (nice_step(870.0), nice_step(0.3), num(0.0)),
            (1000.0, 0.5, "0".into())
        );
        assert_eq!(
            (num(29_369.0), num(4_539.0), num(0.39)),
            ("29k".into(), "4.5k".into(), "0.390".into())
        );
    }
}
