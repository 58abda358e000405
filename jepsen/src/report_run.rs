//! The run workload's picture: jobs per key (one lane per key, a bar per
//! job from its first to its last heartbeat), kills marked, fault windows
//! shaded. Overlapping jobs of one key are stacked on sub-lanes and drawn
//! red, so a violation is visible at a glance.

use crate::history::{fault_windows, Op};
use crate::report::esc;
use std::collections::BTreeMap;
use std::fmt::Write as _;

struct Bar {
    job: String,
    a: u64,
    b: u64,
    unlocked: bool,
}

/// The jobs of the history, per key.
fn bars_by_key(ops: &[Op]) -> BTreeMap<&str, Vec<Bar>> {
    let mut keys: BTreeMap<&str, Vec<Bar>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.f == "job") {
        let (Some(k), Some(a), Some(b)) = (
            o.key.as_deref(),
            o.value["first_ns"].as_u64(),
            o.value["last_ns"].as_u64(),
        ) else {
            continue;
        };
        keys.entry(k).or_default().push(Bar {
            job: o.value["job"].as_str().unwrap_or("?").to_string(),
            a,
            b,
            unlocked: o.value["unlocked"].as_bool().unwrap_or(false),
        });
    }
    keys
}

const LANE: f64 = 30.0;

/// `None` when the history has no jobs.
pub fn jobs_svg(ops: &[Op]) -> Option<String> {
    let keys = bars_by_key(ops);
    if keys.is_empty() {
        return None;
    }
    let t1 = ops.iter().map(|o| o.time_ns).max().unwrap_or(1).max(1);
    let (width, left, right) = (1100.0, 150.0, 10.0);
    let x = |t: u64| left + (t.min(t1) as f64 / t1 as f64) * (width - left - right);
    let top = 20.0;
    let height = top + LANE * keys.len() as f64 + 24.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">"##
    );
    for w in fault_windows(ops) {
        let (x0, x1) = (x(w.start_ns), x(w.end_ns));
        let _ = write!(
            s,
            r##"<rect x="{x0:.1}" y="0" width="{:.1}" height="{:.1}" fill="#f4a3a3" fill-opacity="0.35"><title>{}</title></rect>"##,
            (x1 - x0).max(1.0),
            height - 24.0,
            esc(&w.fault)
        );
    }
    for (i, (k, bars)) in keys.into_iter().enumerate() {
        key_lane(&mut s, ops, k, bars, top + i as f64 * LANE, &x);
    }
    time_ticks(&mut s, t1, height, &x);
    s.push_str("</svg>");
    Some(s)
}

/// One key's lane at height `y`: its name, its jobs, its kills.
fn key_lane(
    s: &mut String,
    ops: &[Op],
    k: &str,
    mut bars: Vec<Bar>,
    y: f64,
    x: &dyn Fn(u64) -> f64,
) {
    let _ = write!(
        s,
        r##"<text x="4" y="{:.1}" font-size="11">{}</text>"##,
        y + LANE / 2.0 + 4.0,
        esc(k)
    );
    bars.sort_by_key(|b| b.a);
    // Sub-lane 0 unless the bar overlaps the one before (then 1, red).
    let mut covered = 0u64;
    for (n, b) in bars.iter().enumerate() {
        let overlap = n > 0 && b.a <= covered;
        covered = covered.max(b.b);
        let (yy, fill) = if overlap {
            (y + LANE / 2.0, "#d22")
        } else if b.unlocked {
            (y + 3.0, "#999")
        } else {
            (y + 3.0, "#4a7")
        };
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{fill}" stroke="#333" stroke-width="0.3"><title>{} {:.3}s-{:.3}s</title></rect>"##,
            x(b.a),
            (x(b.b) - x(b.a)).max(1.0),
            LANE / 2.0 - 4.0,
            esc(&b.job),
            b.a as f64 / 1e9,
            b.b as f64 / 1e9
        );
    }
    for o in ops
        .iter()
        .filter(|o| o.f == "kill-run" && o.key.as_deref() == Some(k))
    {
        let kx = x(o.time_ns);
        let _ = write!(
            s,
            r##"<text x="{kx:.1}" y="{:.1}" font-size="11" fill="#000" text-anchor="middle">&#x2715;<title>kill -9 ({})</title></text>"##,
            y + LANE - 2.0,
            esc(o.value["mode"].as_str().unwrap_or("?"))
        );
    }
}

/// Second marks along the bottom, about a dozen.
fn time_ticks(s: &mut String, t1: u64, height: f64, x: &dyn Fn(u64) -> f64) {
    let secs = t1 as f64 / 1e9;
    let step = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]
        .into_iter()
        .find(|st| secs / st <= 12.0)
        .unwrap_or(600.0);
    let mut t = 0.0;
    while t <= secs {
        let tx = x((t * 1e9) as u64);
        let _ = write!(
            s,
            r##"<text x="{tx:.1}" y="{:.1}" font-size="10" text-anchor="middle">{t}s</text>"##,
            height - 8.0
        );
        t += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::run::JobSpan;

    #[test]
    fn overlapping_jobs_are_drawn_red_and_names_escaped() {
        let span = |job: &str, a: u64, b: u64| JobSpan {
            key: "k<1>".into(),
            job: job.into(),
            first_ns: a,
            last_ns: b,
            beats: 2,
            term_ns: None,
            finished: true,
            pgid: None,
            unlocked: false,
        };
        assert!(jobs_svg(&[]).is_none());
        let ops = vec![
            span("a", 0, 1_000_000_000).to_op(1),
            span("b", 500_000_000, 2_000_000_000).to_op(1),
        ];
        let svg = jobs_svg(&ops).expect("svg");
        assert!(svg.contains("k&lt;1&gt;"));
        assert_eq!(svg.matches("#d22").count(), 1, "one overlapping bar");
    }
}
