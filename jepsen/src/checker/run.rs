//! Checker 5 of JEPSEN.md, "one job at a time", for the `run` workload.
//!
//! Every job run under `locker run` appends timestamped heartbeats to a
//! shared record (see `job_beat`); at the end of the run each job becomes one
//! `job` event in the history (`{"job", "first_ns", "last_ns", "beats"}`,
//! times on the history's clock). A job was certainly alive from its first
//! beat to its last, so:
//!
//! * **exclusion** (zero tolerance): the intervals `[first, last]` of two
//!   different jobs of one key must not share a single instant, the stop
//!   sequence (SIGTERM, grace, SIGKILL) included, since a job keeps beating
//!   while it lingers or ignores SIGTERM;
//! * **takeover**: after the harness killed a holder (`kill-run`: kill -9 of
//!   `locker run`, or of it and the job's whole process group), the next job
//!   of that key starts within process ttl + election timeout + slack, unless
//!   a cluster-side fault overlapped (faults on clients never excuse: the
//!   cluster itself is healthy and other clients reach it);
//! * **no stall**: between two jobs of a key (or after the last job while
//!   runners kept trying) no gap is longer than the same bound, with the
//!   same excuse. This is what flags clients stuck on a hung endpoint.
//!
//! Keys run without a lock (`unlocked: true`, the `run-unlocked` twin) are
//! judged for exclusion only and reported as a negative control: they must
//! fail, which proves the checker can.

use super::{CheckOptions, Validity, Verdict};
use crate::history::{FaultWindow, Op, OpType, Process};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Faults on the clients' side: the cluster stays healthy, so they excuse
/// neither a slow takeover nor a stall.
pub const CLIENT_FAULTS: [&str; 4] = ["client-cut", "client-loss", "hung-endpoint", "run-pause"];

/// One job's life as its heartbeats saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpan {
    pub key: String,
    pub job: String,
    pub first_ns: u64,
    pub last_ns: u64,
    pub beats: u64,
    /// When it wrote that it got SIGTERM.
    pub term_ns: Option<u64>,
    /// It wrote that it finished by itself (run over, or linger done).
    pub finished: bool,
    pub pgid: Option<i64>,
    pub unlocked: bool,
}

impl JobSpan {
    pub fn to_op(&self, process: u64) -> Op {
        let mut v = json!({
            "job": self.job, "first_ns": self.first_ns, "last_ns": self.last_ns,
            "beats": self.beats, "finished": self.finished,
        });
        if let Some(t) = self.term_ns {
            v["term_ns"] = json!(t);
        }
        if self.unlocked {
            v["unlocked"] = json!(true);
        }
        Op::new(
            Process::Client(process),
            OpType::Ok,
            "job",
            Some(&self.key),
            v,
        )
        .at(self.first_ns)
    }

    fn from_op(op: &Op) -> Option<JobSpan> {
        let v = &op.value;
        Some(JobSpan {
            key: op.key.clone()?,
            job: v["job"].as_str()?.to_string(),
            first_ns: v["first_ns"].as_u64()?,
            last_ns: v["last_ns"].as_u64()?,
            beats: v["beats"].as_u64().unwrap_or(0),
            term_ns: v["term_ns"].as_u64(),
            finished: v["finished"].as_bool().unwrap_or(false),
            pgid: None,
            unlocked: v["unlocked"].as_bool().unwrap_or(false),
        })
    }
}

/// Parses the shared heartbeat record into one span per job; `rebase` maps
/// an absolute CLOCK_MONOTONIC time to the history's. Lines that do not parse
/// (none are expected) are counted, not fatal.
pub fn spans_from_record(
    text: &str,
    unlocked: impl Fn(&str) -> bool,
    rebase: impl Fn(u64) -> u64,
) -> (Vec<JobSpan>, usize) {
    let mut by_job: BTreeMap<(String, String), JobSpan> = BTreeMap::new();
    let mut bad = 0;
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            bad += 1;
            continue;
        };
        let (Some(k), Some(j), Some(t), Some(e)) = (
            v["k"].as_str(),
            v["j"].as_str(),
            v["t"].as_u64(),
            v["e"].as_str(),
        ) else {
            bad += 1;
            continue;
        };
        let t = rebase(t);
        let s = by_job
            .entry((k.to_string(), j.to_string()))
            .or_insert_with(|| JobSpan {
                key: k.to_string(),
                job: j.to_string(),
                first_ns: t,
                last_ns: t,
                beats: 0,
                term_ns: None,
                finished: false,
                pgid: None,
                unlocked: unlocked(k),
            });
        s.first_ns = s.first_ns.min(t);
        s.last_ns = s.last_ns.max(t);
        s.beats += 1;
        match e {
            "s" => s.pgid = v["pgid"].as_i64(),
            "t" => s.term_ns = Some(s.term_ns.map_or(t, |x| x.min(t))),
            "x" => s.finished = true,
            _ => {}
        }
    }
    let mut v: Vec<JobSpan> = by_job.into_values().collect();
    v.sort_by_key(|s| (s.first_ns, s.last_ns));
    (v, bad)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn span_json(s: &JobSpan) -> Value {
    json!({"job": s.job, "first_ms": ms(s.first_ns), "last_ms": ms(s.last_ns),
        "beats": s.beats, "term_ms": s.term_ns.map(ms), "finished": s.finished})
}

/// Pairs of jobs of one key alive at the same instant (`spans` of one key).
fn overlaps(spans: &[&JobSpan]) -> Vec<Value> {
    let mut sorted: Vec<&JobSpan> = spans.to_vec();
    sorted.sort_by_key(|s| (s.first_ns, s.last_ns));
    let mut out = Vec::new();
    let mut cur: Option<&JobSpan> = None;
    for s in sorted {
        if let Some(c) = cur {
            if s.first_ns <= c.last_ns && s.job != c.job {
                out.push(
                    json!({"key": s.key, "overlap_ms": ms(c.last_ns.min(s.last_ns) - s.first_ns),
                    "earlier": span_json(c), "later": span_json(s)}),
                );
            }
            if s.last_ns > c.last_ns {
                cur = Some(s);
            }
        } else {
            cur = Some(s);
        }
    }
    out
}

/// Cluster-side fault windows overlapping `[a, b]`.
fn cluster_faults(windows: &[FaultWindow], a: u64, b: u64) -> Vec<String> {
    windows
        .iter()
        .filter(|w| w.start_ns <= b && w.end_ns >= a)
        .filter(|w| !CLIENT_FAULTS.contains(&w.fault.as_str()))
        .map(|w| w.fault.clone())
        .collect()
}

fn client_faults(windows: &[FaultWindow], a: u64, b: u64) -> Vec<String> {
    windows
        .iter()
        .filter(|w| w.start_ns <= b && w.end_ns >= a)
        .filter(|w| CLIENT_FAULTS.contains(&w.fault.as_str()))
        .map(|w| w.fault.clone())
        .collect()
}

/// Takeovers after `kill-run` events.
struct Takeovers {
    judged: Vec<Value>,
    violations: Vec<Value>,
    excused: Vec<Value>,
    worst_ms: Option<f64>,
    worst_judged_ms: Option<f64>,
}

fn takeovers(
    ops: &[Op],
    spans: &[&JobSpan],
    windows: &[FaultWindow],
    opts: &CheckOptions,
    end_ns: u64,
) -> Takeovers {
    let mut t = Takeovers {
        judged: Vec::new(),
        violations: Vec::new(),
        excused: Vec::new(),
        worst_ms: None,
        worst_judged_ms: None,
    };
    for k in ops.iter().filter(|o| o.f == "kill-run") {
        let Some(key) = &k.key else { continue };
        let killed = k.value["job"].as_str().unwrap_or("");
        let pttl = k.value["process_ttl_ms"]
            .as_u64()
            .unwrap_or(opts.default_process_ttl_ms);
        let bound = (pttl + opts.election_timeout_ms + opts.slack_ms) * 1_000_000;
        let t0 = k.time_ns;
        let next = spans
            .iter()
            .filter(|s| &s.key == key && s.job != killed && s.first_ns >= t0)
            .min_by_key(|s| s.first_ns);
        let until = next.map_or(end_ns, |s| s.first_ns);
        let lat = until.saturating_sub(t0);
        let faults = cluster_faults(windows, t0, until);
        let rec = json!({"key": key, "killed_job": killed, "mode": k.value["mode"],
            "kill_ms": ms(t0), "latency_ms": ms(lat), "bound_ms": ms(bound),
            "next_job": next.map(|s| s.job.clone()), "cluster_faults": faults,
            "client_faults": client_faults(windows, t0, until)});
        if next.is_some() {
            t.worst_ms = Some(t.worst_ms.map_or(ms(lat), |w: f64| w.max(ms(lat))));
        }
        if lat <= bound && next.is_some() {
            t.worst_judged_ms = Some(t.worst_judged_ms.map_or(ms(lat), |w: f64| w.max(ms(lat))));
            t.judged.push(rec);
        } else if lat <= bound {
            t.excused.push(json!({"unfinished": true, "detail": rec})); // history ended first
        } else if faults.is_empty() {
            let kind = if next.is_some() {
                "slow-takeover"
            } else {
                "no-takeover"
            };
            t.violations.push(json!({"kind": kind, "detail": rec}));
        } else {
            t.excused.push(rec);
        }
    }
    t
}

/// Gaps with no job alive on a key, longer than the bound.
fn stalls(
    ops: &[Op],
    spans: &[&JobSpan],
    windows: &[FaultWindow],
    bound_ns: u64,
) -> (Vec<Value>, BTreeMap<String, f64>) {
    let mut per_key: BTreeMap<&str, Vec<&JobSpan>> = BTreeMap::new();
    for s in spans {
        per_key.entry(s.key.as_str()).or_default().push(s);
    }
    let mut out = Vec::new();
    let mut longest = BTreeMap::new();
    for (key, mut v) in per_key {
        v.sort_by_key(|s| s.first_ns);
        // The last moment a runner of this key was still trying.
        let tried_until = ops
            .iter()
            .filter(|o| o.f == "run" && o.key.as_deref() == Some(key))
            .map(|o| o.time_ns)
            .max()
            .unwrap_or(0);
        let mut covered = v[0].last_ns;
        let mut gaps: Vec<(u64, u64)> = Vec::new();
        for s in &v[1..] {
            if s.first_ns > covered {
                gaps.push((covered, s.first_ns));
            }
            covered = covered.max(s.last_ns);
        }
        if tried_until > covered {
            gaps.push((covered, tried_until));
        }
        let worst = gaps.iter().map(|(a, b)| b - a).max().unwrap_or(0);
        longest.insert(key.to_string(), ms(worst));
        for (a, b) in gaps.into_iter().filter(|(a, b)| b - a > bound_ns) {
            if cluster_faults(windows, a, b).is_empty() {
                out.push(
                    json!({"kind": "stall", "key": key, "from_ms": ms(a), "to_ms": ms(b),
                    "gap_ms": ms(b - a), "bound_ms": ms(bound_ns),
                    "client_faults": client_faults(windows, a, b)}),
                );
            }
        }
    }
    (out, longest)
}

/// The checker; the second verdict is the unlocked twin's (negative control),
/// present only when the history has unlocked jobs. `None` for both when the
/// history has no jobs at all.
pub fn check(
    ops: &[Op],
    windows: &[FaultWindow],
    opts: &CheckOptions,
) -> Option<(Verdict, Option<Verdict>)> {
    let spans: Vec<JobSpan> = ops
        .iter()
        .filter(|o| o.f == "job")
        .filter_map(JobSpan::from_op)
        .collect();
    // Runners of locked keys that tried but never got a job to run (every
    // `locker run` refused its flags, say) must not pass as "no overlap".
    let locked_tries = ops
        .iter()
        .filter(|o| o.f == "run" && o.kind == OpType::Invoke)
        .filter(|o| o.value["unlocked"].as_bool() != Some(true))
        .count();
    let locked_jobs = spans.iter().filter(|s| !s.unlocked).count();
    if locked_tries > 0 && locked_jobs == 0 {
        let v = Verdict {
            checker: "one-job-at-a-time".into(),
            valid: Validity::Invalid,
            summary: format!(
                "runners invoked `locker run` {locked_tries} times but no job ever ran (see jobs/runner*.log)"
            ),
            details: json!({"run_invocations": locked_tries}),
        };
        return Some((v, None));
    }
    if spans.is_empty() {
        return None;
    }
    let end_ns = ops.iter().map(|o| o.time_ns).max().unwrap_or(0);
    let (unlocked, locked): (Vec<&JobSpan>, Vec<&JobSpan>) = spans.iter().partition(|s| s.unlocked);
    let control = (!unlocked.is_empty()).then(|| {
        let ov = by_key(&unlocked).iter().flat_map(|v| overlaps(v)).count();
        Verdict {
            checker: "one-job-at-a-time (negative control)".into(),
            valid: if ov > 0 {
                Validity::Invalid
            } else {
                Validity::Valid
            },
            summary: format!(
                "{} jobs started without a lock: {ov} overlapping pairs (expected: some)",
                unlocked.len()
            ),
            details: json!({"overlaps": ov}),
        }
    });
    if locked.is_empty() {
        return control.map(|c| {
            let v = Verdict {
                checker: "one-job-at-a-time".into(),
                valid: Validity::Valid,
                summary: "no locked jobs".into(),
                details: json!({}),
            };
            (v, Some(c))
        });
    }
    Some((judge_locked(ops, &locked, windows, opts, end_ns), control))
}

fn by_key<'a>(spans: &[&'a JobSpan]) -> Vec<Vec<&'a JobSpan>> {
    let mut m: BTreeMap<&str, Vec<&JobSpan>> = BTreeMap::new();
    for s in spans {
        m.entry(s.key.as_str()).or_default().push(s);
    }
    m.into_values().collect()
}

fn judge_locked(
    ops: &[Op],
    locked: &[&JobSpan],
    windows: &[FaultWindow],
    opts: &CheckOptions,
    end_ns: u64,
) -> Verdict {
    let ov: Vec<Value> = by_key(locked).iter().flat_map(|v| overlaps(v)).collect();
    let t = takeovers(ops, locked, windows, opts, end_ns);
    let pttl = ops
        .iter()
        .find(|o| o.f == "kill-run" || o.f == "run")
        .and_then(|o| o.value["process_ttl_ms"].as_u64())
        .unwrap_or(opts.default_process_ttl_ms);
    let bound = (pttl + opts.election_timeout_ms + opts.slack_ms) * 1_000_000;
    let (st, longest) = stalls(ops, locked, windows, bound);
    let mut problems = Vec::new();
    if !ov.is_empty() {
        let worst = ov
            .iter()
            .filter_map(|o| o["overlap_ms"].as_f64())
            .fold(0.0, f64::max);
        problems.push(format!(
            "{} pairs of jobs of one key alive at once (longest overlap {worst:.0} ms)",
            ov.len()
        ));
    }
    if !t.violations.is_empty() {
        problems.push(format!("{} slow or missing takeovers", t.violations.len()));
    }
    if !st.is_empty() {
        problems.push(format!(
            "{} stalls (no job for > {:.0} ms)",
            st.len(),
            ms(bound)
        ));
    }
    let keys = by_key(locked).len();
    let summary = if problems.is_empty() {
        format!(
            "{} jobs on {keys} keys, never two at once; {} kills taken over in bound (worst {} ms, bound {:.0} ms), {} excused; longest idle gap {:.0} ms",
            locked.len(),
            t.judged.len(),
            t.worst_judged_ms.map_or("-".into(), |w| format!("{w:.0}")),
            ms(bound),
            t.excused.len(),
            longest.values().fold(0.0, |a: f64, b| a.max(*b)),
        )
    } else {
        problems.join("; ")
    };
    let mut overlaps_shown = ov.clone();
    overlaps_shown.truncate(20);
    Verdict {
        checker: "one-job-at-a-time".into(),
        valid: if problems.is_empty() {
            Validity::Valid
        } else {
            Validity::Invalid
        },
        summary,
        details: json!({
            "jobs": locked.len(), "keys": keys, "overlaps": ov.len(),
            "overlap_examples": overlaps_shown, "takeover_violations": t.violations,
            "stalls": st, "takeovers_in_bound": t.judged.len(),
            "worst_takeover_ms": t.worst_ms, "worst_takeover_in_bound_ms": t.worst_judged_ms,
            "excused_takeovers": t.excused, "bound_ms": ms(bound),
            "longest_gap_ms_per_key": longest,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(key: &str, job: &str, a: u64, b: u64) -> Op {
        JobSpan {
            key: key.into(),
            job: job.into(),
            first_ns: a * 1_000_000,
            last_ns: b * 1_000_000,
            beats: (b - a) / 30 + 1,
            term_ns: None,
            finished: true,
            pgid: None,
            unlocked: false,
        }
        .to_op(700)
    }

    fn kill(key: &str, job: &str, t: u64) -> Op {
        Op::new(
            Process::Client(7700),
            OpType::Info,
            "kill-run",
            Some(key),
            json!({"job": job, "mode": "locker", "process_ttl_ms": 2000}),
        )
        .at(t * 1_000_000)
    }

    fn opts() -> CheckOptions {
        CheckOptions {
            election_timeout_ms: 4_000,
            slack_ms: 3_000,
            ..CheckOptions::default()
        }
    }

    fn run(ops: &mut [Op]) -> Verdict {
        ops.sort_by_key(|o| o.time_ns);
        let w = crate::history::fault_windows(ops);
        check(ops, &w, &opts()).expect("jobs").0
    }

    #[test]
    fn sequential_jobs_and_a_prompt_takeover_pass() {
        let mut ops = vec![
            job("k", "a", 0, 1_000),
            job("k", "b", 1_001, 2_000),
            kill("k", "b", 1_500),
            job("k", "c", 4_000, 5_000),
            job("k2", "d", 500, 4_500),
        ];
        let v = run(&mut ops);
        assert_eq!(v.valid, Validity::Valid, "{}", v.summary);
        assert_eq!(v.details["worst_takeover_ms"], json!(2_500.0));
    }

    #[test]
    fn two_jobs_alive_at_one_instant_fail() {
        // The later job's first beat is the very instant of the earlier
        // job's last beat: zero tolerance.
        let mut ops = vec![job("k", "a", 0, 1_000), job("k", "b", 1_000, 2_000)];
        let v = run(&mut ops);
        assert_eq!(v.valid, Validity::Invalid, "{}", v.summary);
        assert_eq!(v.details["overlaps"], json!(1));
        // A job nested inside a long one is caught too.
        let mut ops = vec![
            job("k", "a", 0, 5_000),
            job("k", "b", 1_000, 1_200),
            job("k", "c", 6_000, 6_100),
        ];
        assert_eq!(run(&mut ops).details["overlaps"], json!(1));
    }

    #[test]
    fn slow_or_missing_takeover_fails_unless_the_cluster_was_faulted() {
        let mut ops = vec![
            job("k", "a", 0, 1_000),
            kill("k", "a", 900),
            job("k", "b", 11_000, 12_000),
        ];
        let v = run(&mut ops);
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(
            v.details["takeover_violations"][0]["kind"],
            json!("slow-takeover")
        );
        // A cluster-side fault in between excuses it; a client-side one not.
        let mut h = crate::checker::testkit::H::new();
        h.nemesis(OpType::Invoke, "start", "kill-all", 2_000)
            .nemesis(OpType::Ok, "stop", "kill-all", 5_000);
        let mut excused = ops.clone();
        excused.extend(h.build());
        assert_eq!(run(&mut excused).valid, Validity::Valid);
        let mut h = crate::checker::testkit::H::new();
        h.nemesis(OpType::Invoke, "start", "client-cut", 2_000)
            .nemesis(OpType::Ok, "stop", "client-cut", 5_000);
        let mut not_excused = ops.clone();
        not_excused.extend(h.build());
        assert_eq!(run(&mut not_excused).valid, Validity::Invalid);
    }

    #[test]
    fn a_stall_while_runners_keep_trying_fails() {
        let mut ops = vec![job("k", "a", 0, 1_000), job("k", "b", 1_500, 2_000)];
        // Runners kept invoking `locker run` for 20 s without a job starting.
        for t in [2_100, 8_000, 22_000] {
            ops.push(
                Op::new(
                    Process::Client(701),
                    OpType::Invoke,
                    "run",
                    Some("k"),
                    json!({"job": format!("x{t}")}),
                )
                .at(t * 1_000_000),
            );
        }
        let v = run(&mut ops);
        assert_eq!(v.valid, Validity::Invalid, "{}", v.summary);
        assert_eq!(v.details["stalls"][0]["kind"], json!("stall"));
    }

    #[test]
    fn unlocked_twin_is_the_negative_control() {
        let mut spans = vec![job("u", "a", 0, 1_000), job("u", "b", 500, 800)];
        for o in &mut spans {
            o.value["unlocked"] = json!(true);
        }
        spans.push(job("k", "c", 0, 100));
        spans.sort_by_key(|o| o.time_ns);
        let (v, c) = check(&spans, &[], &opts()).expect("jobs");
        assert_eq!(v.valid, Validity::Valid);
        let c = c.expect("control");
        assert_eq!(c.valid, Validity::Invalid, "{}", c.summary);
        assert!(check(&[], &[], &opts()).is_none());
        // Runners that never got a job to run are not a pass.
        let tries = vec![Op::new(
            Process::Client(701),
            OpType::Invoke,
            "run",
            Some("k"),
            json!({"job": "c1-1"}),
        )];
        let (v, _) = check(&tries, &[], &opts()).expect("verdict");
        assert_eq!(v.valid, Validity::Invalid, "{}", v.summary);
    }

    #[test]
    fn record_lines_become_spans() {
        let text = concat!(
            "{\"k\":\"k\",\"j\":\"a\",\"t\":1000,\"e\":\"s\",\"pid\":5,\"pgid\":5}\n",
            "{\"k\":\"k\",\"j\":\"a\",\"t\":2000,\"e\":\"b\"}\n",
            "{\"k\":\"u\",\"j\":\"b\",\"t\":1500,\"e\":\"s\"}\n",
            "{\"k\":\"k\",\"j\":\"a\",\"t\":2500,\"e\":\"t\"}\n",
            "{\"k\":\"k\",\"j\":\"a\",\"t\":3000,\"e\":\"x\"}\n",
            "{\"k\":\"k\",\"j\n"
        );
        let (v, bad) = spans_from_record(text, |k| k == "u", |t| t - 1000);
        assert_eq!(bad, 1);
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].first_ns, v[0].last_ns, v[0].beats), (0, 2000, 4));
        assert_eq!(
            (v[0].term_ns, v[0].finished, v[0].pgid),
            (Some(1500), true, Some(5))
        );
        assert!(v[1].unlocked && !v[0].unlocked);
        let back = JobSpan::from_op(&v[0].to_op(1)).expect("op");
        assert_eq!(
            (back.first_ns, back.last_ns, back.term_ns),
            (0, 2000, Some(1500))
        );
    }
}
