//! Checkers: pure functions from a history to a verdict. None of them looks
//! at the cluster; they judge only what clients saw, as Jepsen does.

pub mod digest;
pub mod fencing;
pub mod lease;
pub mod linearizable;
pub mod liveness;
pub mod restarts;
pub mod run;
pub mod set;

use crate::history::{Op, Pair};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Value};

/// Outcome of one checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Invalid,
    /// The checker could not decide (search too large, no final read...).
    Unknown,
}

impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Valid => s.serialize_bool(true),
            Validity::Invalid => s.serialize_bool(false),
            Validity::Unknown => s.serialize_str("unknown"),
        }
    }
}

impl Validity {
    /// Combining: any invalid is invalid, else any unknown is unknown.
    pub fn and(self, o: Validity) -> Validity {
        match (self, o) {
            (Validity::Invalid, _) | (_, Validity::Invalid) => Validity::Invalid,
            (Validity::Unknown, _) | (_, Validity::Unknown) => Validity::Unknown,
            _ => Validity::Valid,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub checker: String,
    pub valid: Validity,
    pub summary: String,
    pub details: Value,
}

/// Knobs the checkers need from the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckOptions {
    /// Largest relative clock-rate error allowed between the harness and the
    /// cluster's log time; a lease is provably valid for ttl * (1 - drift).
    pub drift: f64,
    /// Lock ttl assumed when a request named none (the server default).
    pub default_ttl_ms: u64,
    /// Process ttl assumed when a keepalive named none.
    pub default_process_ttl_ms: u64,
    /// Leader election timeout upper bound, for liveness bounds.
    pub election_timeout_ms: u64,
    /// Extra allowance for liveness (request timeouts, polling interval).
    pub slack_ms: u64,
    /// After the last fault heals, every worker must get an answer in this time.
    pub progress_bound_ms: u64,
    /// Upper bound on search configurations per key for the linearizability
    /// checker; beyond it the verdict is `unknown`.
    pub max_search_states: usize,
    /// Keys (resources) of the protected set run without fencing: the
    /// negative control, expected to lose writes under client pauses.
    pub unfenced_keys: Vec<String>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            drift: 0.1,
            default_ttl_ms: 300_000,
            default_process_ttl_ms: 10_000,
            election_timeout_ms: 3_000,
            slack_ms: 3_000,
            progress_bound_ms: 20_000,
            max_search_states: 2_000_000,
            unfenced_keys: Vec::new(),
        }
    }
}

/// All checker verdicts of a run plus the overall verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    pub valid: Validity,
    pub verdict: String,
    pub checkers: Vec<Verdict>,
    /// The negative control (unfenced set): `Some(true)` if it failed as
    /// expected, i.e. the faults bit; it does not count towards `valid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative_control_failed: Option<bool>,
    pub options: CheckOptions,
}

/// Runs every checker. The unfenced set is judged separately: its failure is
/// the expected outcome and is reported, not counted.
pub fn check_all(ops: &[Op], opts: &CheckOptions) -> Results {
    let pairs = crate::history::pair(ops);
    let windows = crate::history::fault_windows(ops);
    let mut checkers = vec![
        linearizable::check(&pairs, opts),
        lease::check(&pairs, opts),
        fencing::check(&pairs, ops, opts),
    ];
    let (fenced, unfenced) = set::check_split(&pairs, opts);
    checkers.push(fenced);
    checkers.push(liveness::check(&pairs, &windows, opts));
    let (run_verdict, run_control) = run::check(ops, &windows, opts).unzip();
    checkers.extend(run_verdict);
    checkers.push(digest::check(ops));
    checkers.extend(restarts::check(ops));
    let mut valid = Validity::Valid;
    for c in &checkers {
        valid = valid.and(c.valid);
    }
    // Every negative control present (unfenced set, unlocked runs) must fail.
    let controls: Vec<Verdict> = unfenced.into_iter().chain(run_control.flatten()).collect();
    let negative_control_failed =
        (!controls.is_empty()).then(|| controls.iter().all(|v| v.valid == Validity::Invalid));
    checkers.extend(controls);
    let bad: Vec<String> = checkers
        .iter()
        .filter(|c| c.valid != Validity::Valid && !c.checker.ends_with("(negative control)"))
        .map(|c| format!("{}: {}", c.checker, c.summary))
        .collect();
    let mut verdict = match valid {
        Validity::Valid => "VALID: all checkers passed".to_string(),
        Validity::Invalid => format!("INVALID: {}", bad.join("; ")),
        Validity::Unknown => format!("UNKNOWN: {}", bad.join("; ")),
    };
    match negative_control_failed {
        Some(true) => verdict.push_str(" (negative control failed as expected)"),
        Some(false) => {
            verdict.push_str(" (WARNING: negative control did not fail; faults may not bite)")
        }
        None => {}
    }
    Results {
        valid,
        verdict,
        checkers,
        negative_control_failed,
        options: opts.clone(),
    }
}

/// A compact description of an operation for verdict details.
pub(crate) fn describe(p: &Pair) -> Value {
    let mut v = json!({
        "line": p.index + 1,
        "process": p.process,
        "f": p.f,
        "key": p.key,
        "type": p.kind,
        "invoke_ms": p.invoke_ns as f64 / 1e6,
    });
    if p.complete_ns != u64::MAX {
        v["complete_ms"] = json!(p.complete_ns as f64 / 1e6);
    }
    if let Some(o) = p.owner() {
        v["owner"] = json!(o);
    }
    let res = p.res.to_value();
    if res.as_object().is_some_and(|m| !m.is_empty()) {
        v["result"] = res;
    }
    v
}

#[cfg(test)]
pub(crate) mod testkit {
    //! Builders for synthetic histories.
    use crate::history::{Op, OpType, Process};
    use serde_json::Value;

    pub struct H {
        pub ops: Vec<Op>,
    }

    impl H {
        pub fn new() -> H {
            H { ops: Vec::new() }
        }
        /// Adds an invocation at `t` ms.
        pub fn inv(&mut self, p: u64, f: &str, key: &str, v: Value, t: u64) -> &mut H {
            self.ops.push(
                Op::new(Process::Client(p), OpType::Invoke, f, Some(key), v).at(t * 1_000_000),
            );
            self
        }
        pub fn done(
            &mut self,
            p: u64,
            kind: OpType,
            f: &str,
            key: &str,
            v: Value,
            t: u64,
        ) -> &mut H {
            self.ops
                .push(Op::new(Process::Client(p), kind, f, Some(key), v).at(t * 1_000_000));
            self
        }
        pub fn ok(&mut self, p: u64, f: &str, key: &str, v: Value, t: u64) -> &mut H {
            self.done(p, OpType::Ok, f, key, v, t)
        }
        pub fn fail(&mut self, p: u64, f: &str, key: &str, v: Value, t: u64) -> &mut H {
            self.done(p, OpType::Fail, f, key, v, t)
        }
        pub fn info(&mut self, p: u64, f: &str, key: &str, v: Value, t: u64) -> &mut H {
            self.done(p, OpType::Info, f, key, v, t)
        }
        pub fn nemesis(&mut self, kind: OpType, f: &str, fault: &str, t: u64) -> &mut H {
            self.ops.push(
                Op::new(
                    Process::Nemesis,
                    kind,
                    f,
                    None,
                    serde_json::json!({"fault": fault}),
                )
                .at(t * 1_000_000),
            );
            self
        }
        /// Ops sorted by time, as the recorder writes them.
        pub fn build(&self) -> Vec<Op> {
            let mut v = self.ops.clone();
            v.sort_by_key(|o| o.time_ns);
            v
        }
    }
}
