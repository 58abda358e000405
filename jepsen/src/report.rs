//! Run output: `results.json` and a self-contained `report.html` (inline SVG,
//! no scripts, no external assets, so it opens offline and in CI artifacts).

use crate::checker::{Results, Validity};
use crate::history::{fault_windows, pair, FaultWindow, Op, OpType, Pair};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

pub fn write_results(dir: &Path, results: &Results, meta: &Value) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(results)?;
    v["run"] = meta.clone();
    let text = serde_json::to_string_pretty(&v)?;
    std::fs::write(dir.join("results.json"), text)
        .map_err(|e| anyhow::anyhow!("write results.json: {e}"))
}

pub fn write_report(dir: &Path, ops: &[Op], results: &Results, meta: &Value) -> anyhow::Result<()> {
    let html = render(ops, results, meta);
    std::fs::write(dir.join("report.html"), html)
        .map_err(|e| anyhow::anyhow!("write report.html: {e}"))
}

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A stable, readable color per owner.
fn color(s: &str) -> String {
    let mut h: u32 = 2166136261;
    for b in s.bytes() {
        h = (h ^ b as u32).wrapping_mul(16777619);
    }
    format!("hsl({},65%,55%)", h % 360)
}

/// One holder's interval on the timeline.
#[derive(Debug, Clone)]
pub struct Hold {
    pub key: String,
    pub owner: String,
    pub token: Option<u64>,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// Who held which key when, as the clients saw it: from a grant's answer to
/// the owner's release, the next grant on the key, or the lease running out
/// (last renewal sent + ttl), whichever is first.
pub fn holds(pairs: &[Pair], default_ttl_ms: u64, end_ns: u64) -> Vec<Hold> {
    let mut per_key: BTreeMap<&str, Vec<&Pair>> = BTreeMap::new();
    for p in pairs {
        if let Some(k) = &p.key {
            if matches!(p.f.as_str(), "acquire" | "extend" | "release") {
                per_key.entry(k).or_default().push(p);
            }
        }
    }
    let mut out = Vec::new();
    for (key, mut ps) in per_key {
        ps.sort_by_key(|p| p.invoke_ns);
        let mut cur: Option<Hold> = None;
        for p in ps {
            let owner = p.owner().unwrap_or("?").to_string();
            match (p.f.as_str(), p.kind) {
                ("acquire", OpType::Ok) => {
                    let lease_end = p.invoke_ns + p.ttl_ms().unwrap_or(default_ttl_ms) * 1_000_000;
                    match cur.as_mut() {
                        Some(h) if h.owner == owner && h.token == p.res.token => {
                            h.end_ns = h.end_ns.max(lease_end.min(end_ns));
                        }
                        _ => {
                            if let Some(mut h) = cur.take() {
                                h.end_ns = h.end_ns.min(p.complete_ns);
                                out.push(h);
                            }
                            cur = Some(Hold {
                                key: key.to_string(),
                                owner,
                                token: p.res.token,
                                start_ns: p.complete_ns,
                                end_ns: lease_end.min(end_ns),
                            });
                        }
                    }
                }
                ("extend", OpType::Ok) => {
                    if let Some(h) = cur.as_mut().filter(|h| h.owner == owner) {
                        let lease_end =
                            p.invoke_ns + p.ttl_ms().unwrap_or(default_ttl_ms) * 1_000_000;
                        h.end_ns = h.end_ns.max(lease_end.min(end_ns));
                    }
                }
                ("release", OpType::Ok) if cur.as_ref().is_some_and(|h| h.owner == owner) => {
                    if let Some(mut h) = cur.take() {
                        h.end_ns = h.end_ns.min(p.invoke_ns.max(h.start_ns));
                        out.push(h);
                    }
                }
                _ => {}
            }
        }
        if let Some(h) = cur {
            out.push(h);
        }
    }
    out
}

struct Frame {
    width: f64,
    left: f64,
    right: f64,
    t0: u64,
    t1: u64,
}

impl Frame {
    fn x(&self, t: u64) -> f64 {
        let span = (self.t1.saturating_sub(self.t0)).max(1) as f64;
        self.left
            + (t.saturating_sub(self.t0) as f64 / span) * (self.width - self.left - self.right)
    }
}

fn time_axis(s: &mut String, f: &Frame, y: f64) {
    let secs = (f.t1.saturating_sub(f.t0)) as f64 / 1e9;
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|st| secs / st <= 12.0)
        .unwrap_or(1200.0);
    let mut t = 0.0;
    while t <= secs {
        let x = f.x(f.t0 + (t * 1e9) as u64);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{y:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle">{t}s</text>"##,
            y + 4.0,
            y + 15.0
        );
        t += step;
    }
}

fn fault_shading(
    s: &mut String,
    f: &Frame,
    windows: &[FaultWindow],
    top: f64,
    bottom: f64,
    labels: bool,
) {
    for (i, w) in windows.iter().enumerate() {
        let x0 = f.x(w.start_ns);
        let x1 = f.x(w.end_ns).max(x0 + 1.0);
        let _ = write!(
            s,
            r##"<rect x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="#f4a3a3" fill-opacity="0.35"><title>{} {:.1}s-{:.1}s</title></rect>"##,
            x1 - x0,
            bottom - top,
            esc(&w.fault),
            w.start_ns as f64 / 1e9,
            w.end_ns as f64 / 1e9
        );
        if labels {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#a33">{}</text>"##,
                x0 + 2.0,
                top + 10.0 + (i % 3) as f64 * 10.0,
                esc(&w.fault)
            );
        }
    }
}

/// Timeline of holders per key with fault windows shaded.
pub fn timeline_svg(ops: &[Op], default_ttl_ms: u64) -> String {
    let pairs = pair(ops);
    let windows = fault_windows(ops);
    let t1 = ops.iter().map(|o| o.time_ns).max().unwrap_or(1);
    let hs = holds(&pairs, default_ttl_ms, t1);
    let mut keys: Vec<&str> = hs.iter().map(|h| h.key.as_str()).collect();
    keys.sort();
    keys.dedup();
    keys.truncate(24);
    let lane = 26.0;
    let top = 36.0;
    let height = top + lane * keys.len().max(1) as f64 + 24.0;
    let f = Frame {
        width: 1100.0,
        left: 150.0,
        right: 10.0,
        t0: 0,
        t1,
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif">"##,
        f.width
    );
    fault_shading(&mut s, &f, &windows, top - 30.0, height - 24.0, true);
    for (i, k) in keys.iter().enumerate() {
        let y = top + i as f64 * lane;
        let _ = write!(
            s,
            r##"<text x="4" y="{:.1}" font-size="11">{}</text><line x1="{}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#eee"/>"##,
            y + lane / 2.0 + 4.0,
            esc(k),
            f.left,
            y + lane,
            f.width - f.right,
            y + lane
        );
        for h in hs.iter().filter(|h| h.key == *k) {
            let x0 = f.x(h.start_ns);
            let x1 = f.x(h.end_ns).max(x0 + 1.5);
            let tok = h.token.map_or("?".to_string(), |t| t.to_string());
            let _ = write!(
                s,
                r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}" stroke="#333" stroke-width="0.3"><title>{} token {} {:.3}s-{:.3}s</title></rect>"##,
                y + 4.0,
                x1 - x0,
                lane - 8.0,
                color(&h.owner),
                esc(&h.owner),
                tok,
                h.start_ns as f64 / 1e9,
                h.end_ns as f64 / 1e9
            );
            if x1 - x0 > 24.0 {
                let _ = write!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" font-size="9">{tok}</text>"##,
                    x0 + 2.0,
                    y + lane / 2.0 + 3.0
                );
            }
        }
    }
    time_axis(&mut s, &f, height - 22.0);
    s.push_str("</svg>");
    s
}

/// (invoke time, latency in ms, outcome) of every completed client
/// operation on the cluster.
fn latencies(ops: &[Op]) -> Vec<(u64, f64, OpType)> {
    pair(ops)
        .iter()
        .filter(|p| {
            matches!(p.process, crate::history::Process::Client(_)) && p.seen_ns != u64::MAX
        })
        .filter(|p| {
            matches!(
                p.f.as_str(),
                "acquire" | "extend" | "release" | "read" | "keepalive"
            )
        })
        .map(|p| {
            (
                p.invoke_ns,
                (p.seen_ns.saturating_sub(p.invoke_ns)) as f64 / 1e6,
                p.kind,
            )
        })
        .collect()
}

/// Latency of every completed client operation (log scale), colored by type.
pub fn latency_svg(ops: &[Op]) -> String {
    let windows = fault_windows(ops);
    let t1 = ops.iter().map(|o| o.time_ns).max().unwrap_or(1);
    let pts = latencies(ops);
    let stride = (pts.len() / 6000).max(1);
    let (h, top, bottom) = (260.0, 10.0, 230.0);
    let f = Frame {
        width: 1100.0,
        left: 50.0,
        right: 10.0,
        t0: 0,
        t1,
    };
    let (lo, hi) = (0.1f64, 100_000f64);
    let y = |ms: f64| {
        bottom
            - ((ms.clamp(lo, hi).log10() - lo.log10()) / (hi.log10() - lo.log10())) * (bottom - top)
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{h}" font-family="sans-serif">"##,
        f.width
    );
    fault_shading(&mut s, &f, &windows, top, bottom, false);
    for ms in [1.0, 10.0, 100.0, 1000.0, 10000.0] {
        let _ = write!(
            s,
            r##"<line x1="{}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="4" y="{:.1}" font-size="10">{ms} ms</text>"##,
            f.left,
            f.width - f.right,
            y(ms),
            y(ms),
            y(ms) + 3.0
        );
    }
    for (t, ms, k) in pts.iter().step_by(stride) {
        let c = match k {
            OpType::Ok => "#2a7",
            OpType::Fail => "#e90",
            _ => "#d22",
        };
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{c}" fill-opacity="0.6"/>"##,
            f.x(*t),
            y(*ms)
        );
    }
    time_axis(&mut s, &f, bottom + 2.0);
    let _ = write!(
        s,
        r##"<text x="{}" y="22" font-size="10" fill="#2a7">ok</text><text x="{}" y="22" font-size="10" fill="#e90">fail</text><text x="{}" y="22" font-size="10" fill="#d22">info/timeout</text></svg>"##,
        f.width - 150.0,
        f.width - 125.0,
        f.width - 95.0
    );
    s
}

/// Completions per second, by outcome.
pub fn throughput_svg(ops: &[Op]) -> String {
    let windows = fault_windows(ops);
    let t1 = ops.iter().map(|o| o.time_ns).max().unwrap_or(1);
    let buckets = (t1 / 1_000_000_000 + 1) as usize;
    let mut counts: HashMap<&'static str, Vec<u64>> = HashMap::new();
    for o in ops
        .iter()
        .filter(|o| matches!(o.process, crate::history::Process::Client(_)))
    {
        let k = match o.kind {
            OpType::Invoke => continue,
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        };
        let b = (o.time_ns / 1_000_000_000) as usize;
        let v = counts.entry(k).or_insert_with(|| vec![0; buckets]);
        if let Some(c) = v.get_mut(b) {
            *c += 1;
        }
    }
    let max = counts
        .values()
        .flat_map(|v| v.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (h, top, bottom) = (220.0, 10.0, 190.0);
    let f = Frame {
        width: 1100.0,
        left: 50.0,
        right: 10.0,
        t0: 0,
        t1,
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{h}" font-family="sans-serif">"##,
        f.width
    );
    fault_shading(&mut s, &f, &windows, top, bottom, false);
    let _ = write!(
        s,
        r##"<text x="4" y="{:.1}" font-size="10">{max:.0}/s</text><text x="4" y="{bottom}" font-size="10">0</text>"##,
        top + 8.0
    );
    for (k, c) in [("ok", "#2a7"), ("fail", "#e90"), ("info", "#d22")] {
        let Some(v) = counts.get(k) else { continue };
        let pts: Vec<String> = v
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "{:.1},{:.1}",
                    f.x(i as u64 * 1_000_000_000 + 500_000_000),
                    bottom - (*n as f64 / max) * (bottom - top)
                )
            })
            .collect();
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{}"/>"##,
            pts.join(" ")
        );
    }
    time_axis(&mut s, &f, bottom + 2.0);
    s.push_str("</svg>");
    s
}

pub fn page(title: &str, body: &str) -> String {
    format!(
        r##"<!doctype html><html><head><meta charset="utf-8"><title>{}</title>
<style>body{{font-family:sans-serif;margin:20px;max-width:1140px}}td,th{{padding:3px 8px;text-align:left;vertical-align:top}}
.ok{{color:#180}}.bad{{color:#c00;font-weight:bold}}.unk{{color:#b70}}pre{{background:#f6f6f6;padding:8px;overflow:auto;max-height:400px}}</style>
</head><body>{body}</body></html>"##,
        esc(title)
    )
}

fn class(v: Validity) -> (&'static str, &'static str) {
    match v {
        Validity::Valid => ("ok", "valid"),
        Validity::Invalid => ("bad", "INVALID"),
        Validity::Unknown => ("unk", "unknown"),
    }
}

pub fn render(ops: &[Op], results: &Results, meta: &Value) -> String {
    let mut b = String::new();
    let (c, _) = class(results.valid);
    let _ = write!(
        b,
        r#"<h1>Locker Jepsen run</h1><p class="{c}">{}</p>"#,
        esc(&results.verdict)
    );
    let _ = write!(
        b,
        "<pre>{}</pre>",
        esc(&serde_json::to_string_pretty(meta).unwrap_or_default())
    );
    b.push_str("<h2>Checkers</h2><table><tr><th>checker</th><th>verdict</th><th>summary</th></tr>");
    for v in &results.checkers {
        let (c, word) = class(v.valid);
        let _ = write!(
            b,
            r#"<tr><td>{}</td><td class="{c}">{word}</td><td>{}<details><summary>details</summary><pre>{}</pre></details></td></tr>"#,
            esc(&v.checker),
            esc(&v.summary),
            esc(&serde_json::to_string_pretty(&v.details).unwrap_or_default())
        );
    }
    b.push_str("</table>");
    b.push_str("<h2>Holders per key</h2><p>Bars: from a grant's answer to the owner's release, the next grant, or the lease end; label = fencing token; hover for owner. Red: fault windows.</p>");
    b.push_str(&timeline_svg(ops, results.options.default_ttl_ms));
    if let Some(svg) = crate::report_run::jobs_svg(ops) {
        b.push_str("<h2>Jobs per key (run workload)</h2><p>Bars: a job from its first to its last heartbeat; red: alive while another job of the key was; grey: unlocked twin; &#x2715;: holder killed with SIGKILL.</p>");
        b.push_str(&svg);
    }
    b.push_str("<h2>Latency</h2>");
    b.push_str(&latency_svg(ops));
    b.push_str("<h2>Throughput (completions per second)</h2>");
    b.push_str(&throughput_svg(ops));
    let windows = fault_windows(ops);
    if !windows.is_empty() {
        b.push_str("<h2>Faults</h2><table><tr><th>fault</th><th>from</th><th>to</th></tr>");
        for w in windows {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{:.2}s</td><td>{:.2}s</td></tr>",
                esc(&w.fault),
                w.start_ns as f64 / 1e9,
                w.end_ns as f64 / 1e9
            );
        }
        b.push_str("</table>");
    }
    page("Locker Jepsen run", &b)
}

/// Writes history (if given), results.json and report.html for a checked run.
pub fn write_all(dir: &Path, ops: &[Op], results: &Results, meta: &Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
    write_results(dir, results, meta)?;
    write_report(dir, ops, results, meta)
}

/// A summary line with the per-checker verdicts, for the terminal.
pub fn terminal_summary(results: &Results) -> String {
    let mut s = String::new();
    for v in &results.checkers {
        let (_, word) = class(v.valid);
        let _ = writeln!(s, "  {:<45} {:<8} {}", v.checker, word, v.summary);
    }
    let _ = write!(s, "{}", results.verdict);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{check_all, CheckOptions};
    use crate::history::Process;
    use serde_json::json;

    fn sample() -> Vec<Op> {
        let c = Process::Client;
        let mut v = vec![
            Op::new(
                c(1),
                OpType::Invoke,
                "acquire",
                Some("k<1>"),
                json!({"owner":"a","ttl_ms":5000}),
            )
            .at(0),
            Op::new(
                c(1),
                OpType::Ok,
                "acquire",
                Some("k<1>"),
                json!({"token":3}),
            )
            .at(2_000_000),
            Op::new(
                Process::Nemesis,
                OpType::Invoke,
                "start",
                None,
                json!({"fault":"pause"}),
            )
            .at(100_000_000),
            Op::new(
                Process::Nemesis,
                OpType::Ok,
                "stop",
                None,
                json!({"fault":"pause"}),
            )
            .at(900_000_000),
            Op::new(
                c(1),
                OpType::Invoke,
                "release",
                Some("k<1>"),
                json!({"owner":"a"}),
            )
            .at(1_000_000_000),
            Op::new(c(1), OpType::Ok, "release", Some("k<1>"), json!({})).at(1_001_000_000),
            Op::new(
                c(2),
                OpType::Invoke,
                "acquire",
                Some("k<1>"),
                json!({"owner":"b"}),
            )
            .at(1_100_000_000),
            Op::new(
                c(2),
                OpType::Ok,
                "acquire",
                Some("k<1>"),
                json!({"token":7}),
            )
            .at(1_200_000_000),
        ];
        v.sort_by_key(|o| o.time_ns);
        v
    }

    #[test]
    fn holds_follow_grants_and_releases() {
        let ops = sample();
        let hs = holds(&pair(&ops), 300_000, 2_000_000_000);
        assert_eq!(hs.len(), 2);
        assert_eq!((hs[0].owner.as_str(), hs[0].token), ("a", Some(3)));
        assert_eq!(hs[0].end_ns, 1_000_000_000);
        assert_eq!(hs[1].start_ns, 1_200_000_000);
        // b never releases: its bar runs to the end of the history.
        assert_eq!(hs[1].end_ns, 2_000_000_000);
    }

    #[test]
    fn report_is_self_contained_and_escaped() {
        let ops = sample();
        let results = check_all(&ops, &CheckOptions::default());
        let html = render(&ops, &results, &json!({"nodes": 3}));
        assert!(html.contains("<svg"));
        assert!(html.contains("k&lt;1&gt;"), "keys must be escaped");
        assert!(!html.contains("k<1>"));
        assert!(!html.contains("<script"));
        assert!(
            !html.contains("src=") && !html.contains("href="),
            "no external assets"
        );
        assert!(html.contains("pause"));
        assert!(html.contains(&esc(&results.verdict)));
    }
}
