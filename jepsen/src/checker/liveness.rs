//! Checker 5: liveness.
//!
//! * Takeover: a `crash` event (the holder's process was killed; value
//!   `{"owner", "process_ttl_ms"}`, key = the lock) must be followed by a
//!   grant of that key to another owner within process ttl + election
//!   timeout + slack. A late takeover while a fault was active is excused
//!   (reported, not counted): the bound is promised for a healthy cluster.
//! * Progress after heal: after the last fault window ends, every worker that
//!   keeps issuing operations must get a definite answer from the cluster
//!   (`ok`, or `fail` carrying a server status) within `progress_bound_ms`.

use super::{describe, CheckOptions, Validity, Verdict};
use crate::history::{worker_of, FaultWindow, OpType, Pair, Process};
use serde_json::json;
use std::collections::BTreeMap;

fn overlaps(windows: &[FaultWindow], a: u64, b: u64) -> Vec<String> {
    windows
        .iter()
        .filter(|w| w.start_ns < b && w.end_ns > a)
        .map(|w| w.fault.clone())
        .collect()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The larger of `w` and `v`, `v` if there is no `w` yet.
fn worse(w: Option<f64>, v: f64) -> Option<f64> {
    Some(w.map_or(v, |w| w.max(v)))
}

fn ms_or_dash(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |w| format!("{w:.0}"))
}

/// The last instant the history knows of.
fn history_end(pairs: &[Pair]) -> u64 {
    pairs
        .iter()
        .map(|p| {
            if p.seen_ns == u64::MAX {
                p.invoke_ns
            } else {
                p.seen_ns
            }
        })
        .max()
        .unwrap_or(0)
}

/// Takeovers after crashes, as judged so far.
#[derive(Default)]
struct Takeovers {
    violations: Vec<serde_json::Value>,
    excused: Vec<serde_json::Value>,
    in_bound: Vec<serde_json::Value>,
    worst: Option<f64>,
    /// Worst takeover per key (one key per takeover driver).
    worst_by_key: BTreeMap<String, f64>,
    /// Worst among the takeovers judged against the bound (no fault overlapping).
    worst_in_bound: Option<f64>,
    /// Worst takeover with no fault window overlapping it at all.
    worst_fault_free: Option<f64>,
}

impl Takeovers {
    /// Judges the takeover after crash `c`.
    fn judge(
        &mut self,
        c: &Pair,
        pairs: &[Pair],
        windows: &[FaultWindow],
        opts: &CheckOptions,
        end: u64,
    ) {
        let Some(key) = &c.key else { return };
        let crashed_owner = c.req.owner.clone().or(c.res.owner.clone());
        let pttl = c
            .req
            .process_ttl_ms
            .or(c.res.process_ttl_ms)
            .unwrap_or(opts.default_process_ttl_ms);
        let bound_ns = (pttl + opts.election_timeout_ms + opts.slack_ms) * 1_000_000;
        let t0 = c.invoke_ns;
        let next = pairs
            .iter()
            .filter(|p| p.f == "acquire" && p.is_ok() && p.key.as_ref() == Some(key))
            .filter(|p| p.complete_ns >= t0 && p.owner() != crashed_owner.as_deref())
            .min_by_key(|p| p.complete_ns);
        let Some(g) = next else {
            let waited = end.saturating_sub(t0);
            let rec = json!({"key": key, "crash_ms": ms(t0), "waited_ms": ms(waited),
                "bound_ms": ms(bound_ns)});
            if waited > bound_ns && overlaps(windows, t0, end).is_empty() {
                self.violations
                    .push(json!({"kind": "no-takeover", "detail": rec}));
            } else {
                self.excused
                    .push(json!({"faults": overlaps(windows, t0, end),
                    "unfinished": true, "detail": rec}));
            }
            return;
        };
        let lat = g.complete_ns - t0;
        self.worst = worse(self.worst, ms(lat));
        let e = self.worst_by_key.entry(key.clone()).or_insert(0.0);
        *e = e.max(ms(lat));
        let faults = overlaps(windows, t0, g.complete_ns);
        if faults.is_empty() {
            self.worst_fault_free = worse(self.worst_fault_free, ms(lat));
        }
        let rec = json!({"key": key, "crash_ms": ms(t0), "latency_ms": ms(lat),
            "bound_ms": ms(bound_ns), "faults": faults, "taken_by": describe(g)});
        if lat <= bound_ns {
            self.worst_in_bound = worse(self.worst_in_bound, ms(lat));
            self.in_bound.push(rec);
        } else if faults.is_empty() {
            self.violations
                .push(json!({"kind": "slow-takeover", "detail": rec}));
        } else {
            self.excused.push(json!({"faults": faults, "detail": rec}));
        }
    }
}

/// Progress after the last heal: workers judged and the slowest first answer.
struct Progress {
    heal: u64,
    judged: usize,
    slowest: Option<f64>,
}

fn progress_after_heal(
    pairs: &[Pair],
    windows: &[FaultWindow],
    opts: &CheckOptions,
    end: u64,
    violations: &mut Vec<serde_json::Value>,
) -> Progress {
    let heal = windows.iter().map(|w| w.end_ns).max().unwrap_or(0);
    let bound = opts.progress_bound_ms * 1_000_000;
    let mut per_worker: BTreeMap<u64, Vec<&Pair>> = BTreeMap::new();
    for p in pairs {
        if let Process::Client(n) = p.process {
            // Only operations answered by the cluster count; appends and
            // final reads touch harness-side resources.
            let cluster_op = matches!(
                p.f.as_str(),
                "acquire" | "extend" | "release" | "read" | "keepalive"
            );
            if p.invoke_ns >= heal && cluster_op {
                per_worker.entry(worker_of(n)).or_default().push(p);
            }
        }
    }
    let mut pr = Progress {
        heal,
        judged: 0,
        slowest: None,
    };
    for (w, ops) in &per_worker {
        let answered = ops
            .iter()
            .filter(|p| p.kind == OpType::Ok || (p.kind == OpType::Fail && p.res.status.is_some()))
            .map(|p| p.complete_ns)
            .min();
        match answered {
            Some(t) if t <= heal + bound => {
                pr.judged += 1;
                pr.slowest = worse(pr.slowest, ms(t - heal));
            }
            _ if end < heal + bound => {} // ran out of history: no verdict
            _ => {
                pr.judged += 1;
                violations.push(json!({"kind": "no-progress-after-heal", "worker": w,
                    "heal_ms": ms(heal), "bound_ms": ms(bound),
                    "first_answer_ms": answered.map(ms)}));
            }
        }
    }
    pr
}

pub fn check(pairs: &[Pair], windows: &[FaultWindow], opts: &CheckOptions) -> Verdict {
    let end = history_end(pairs);
    let mut t = Takeovers::default();
    for c in pairs.iter().filter(|p| p.f == "crash") {
        t.judge(c, pairs, windows, opts, end);
    }
    let pr = progress_after_heal(pairs, windows, opts, end, &mut t.violations);
    let valid = if t.violations.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let summary = if t.violations.is_empty() {
        format!(
            "{} takeovers in bound (worst {} ms, without faults {} ms), {} excused (worst overall {} ms); {} workers progressed after heal (slowest {} ms)",
            t.in_bound.len(),
            ms_or_dash(t.worst_in_bound),
            ms_or_dash(t.worst_fault_free),
            t.excused.len(),
            ms_or_dash(t.worst),
            pr.judged,
            ms_or_dash(pr.slowest),
        )
    } else {
        format!("{} liveness violations", t.violations.len())
    };
    Verdict {
        checker: "liveness".into(),
        valid,
        summary,
        details: json!({
            "worst_takeover_ms": t.worst,
            "worst_takeover_in_bound_ms": t.worst_in_bound,
            "worst_takeover_fault_free_ms": t.worst_fault_free,
            "worst_takeover_by_key_ms": t.worst_by_key,
            "takeovers": t.in_bound,
            "excused": t.excused,
            "violations": t.violations,
            "last_heal_ms": ms(pr.heal),
            "slowest_recovery_ms": pr.slowest,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::H;
    use crate::history::{fault_windows, pair};
    use serde_json::{json, Value};

    fn opts() -> CheckOptions {
        CheckOptions {
            election_timeout_ms: 1000,
            slack_ms: 1000,
            progress_bound_ms: 5000,
            ..CheckOptions::default()
        }
    }

    fn run(h: &H) -> Verdict {
        let ops = h.build();
        check(&pair(&ops), &fault_windows(&ops), &opts())
    }

    fn crash_then_grant(grant_at: u64) -> H {
        let mut h = H::new();
        h.inv(
            1,
            "acquire",
            "k",
            json!({"owner":"a","process_hash":"h/1.1"}),
            0,
        )
        .ok(1, "acquire", "k", json!({"token":1}), 5);
        h.ok(
            1,
            "crash",
            "k",
            json!({"owner":"a","process_ttl_ms":2000}),
            100,
        );
        h.inv(2, "acquire", "k", json!({"owner":"b"}), 200).fail(
            2,
            "acquire",
            "k",
            json!({"status":"SOMEONE_ELSE_HOLDS_LOCK","holder":"a"}),
            210,
        );
        h.inv(2, "acquire", "k", json!({"owner":"b"}), grant_at - 10)
            .ok(2, "acquire", "k", json!({"token":9}), grant_at);
        h
    }

    #[test]
    fn quick_takeover_passes() {
        // bound = 2000 + 1000 + 1000 = 4000 ms after the crash at 100.
        let v = run(&crash_then_grant(2500));
        assert_eq!(v.valid, Validity::Valid, "{}", v.details);
        assert_eq!(v.details["worst_takeover_ms"], 2400.0);
        assert_eq!(v.details["worst_takeover_in_bound_ms"], 2400.0);
        assert_eq!(v.details["worst_takeover_fault_free_ms"], 2400.0);
        assert_eq!(v.details["worst_takeover_by_key_ms"]["k"], 2400.0);
    }

    #[test]
    fn slow_takeover_is_caught() {
        let v = run(&crash_then_grant(6000));
        assert_eq!(v.valid, Validity::Invalid, "{}", v.details);
        assert_eq!(v.details["violations"][0]["kind"], "slow-takeover");
    }

    #[test]
    fn slow_takeover_during_fault_is_excused() {
        let mut h = crash_then_grant(6000);
        h.nemesis(OpType::Invoke, "start", "partition-majority", 150)
            .nemesis(OpType::Ok, "stop", "partition-majority", 5000);
        let v = run(&h);
        assert_eq!(v.valid, Validity::Valid, "{}", v.details);
        assert_eq!(v.details["excused"].as_array().map(Vec::len), Some(1));
        assert_eq!(v.details["worst_takeover_ms"], 5900.0);
        assert_eq!(v.details["worst_takeover_fault_free_ms"], Value::Null);
    }

    #[test]
    fn missing_takeover_is_caught() {
        let mut h = H::new();
        h.ok(
            1,
            "crash",
            "k",
            json!({"owner":"a","process_ttl_ms":1000}),
            0,
        );
        for i in 0..10 {
            h.inv(2, "acquire", "k", json!({"owner":"b"}), i * 1000)
                .fail(
                    2,
                    "acquire",
                    "k",
                    json!({"status":"SOMEONE_ELSE_HOLDS_LOCK","holder":"a"}),
                    i * 1000 + 5,
                );
        }
        let v = run(&h);
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.details["violations"][0]["kind"], "no-takeover");
    }

    #[test]
    fn no_progress_after_heal_is_caught() {
        let mut h = H::new();
        h.nemesis(OpType::Invoke, "start", "kill-all", 0).nemesis(
            OpType::Ok,
            "stop",
            "kill-all",
            1000,
        );
        // Worker 3 answers quickly; worker 4 (process 10004 after a timeout)
        // only sees 503s without status for 9 s.
        h.inv(3, "read", "k", json!({}), 1100)
            .ok(3, "read", "k", json!({"locked":false}), 1200);
        for i in 0..9 {
            h.inv(10_004, "read", "k", json!({}), 1100 + i * 1000).fail(
                10_004,
                "read",
                "k",
                json!({}),
                1150 + i * 1000,
            );
        }
        let v = run(&h);
        assert_eq!(v.valid, Validity::Invalid, "{}", v.details);
        assert_eq!(v.details["violations"][0]["worker"], 4);
        // The same history cut short (before the bound) gives no verdict.
        let mut h2 = H::new();
        h2.nemesis(OpType::Invoke, "start", "kill-all", 0).nemesis(
            OpType::Ok,
            "stop",
            "kill-all",
            1000,
        );
        h2.inv(10_004, "read", "k", json!({}), 1100)
            .fail(10_004, "read", "k", json!({}), 1150);
        assert_eq!(run(&h2).valid, Validity::Valid);
    }
}
