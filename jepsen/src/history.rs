//! The history: one JSON object per line, in the order the harness saw events.
//!
//! ```json
//! {"process":3,"type":"invoke","f":"acquire","key":"k0","value":{"owner":"k0@jw/1.2.3","ttl_ms":2000},"time_ns":1200}
//! {"process":3,"type":"ok","f":"acquire","key":"k0","value":{"owner":"k0@jw/1.2.3","token":17},"time_ns":5400}
//! ```
//!
//! `time_ns` is taken from one monotonic clock (CLOCK_MONOTONIC, shared by
//! every process on the machine, so helper processes can stamp their own
//! events) relative to the start of the run. `invoke` opens an operation,
//! `ok`/`fail`/`info` close it. `fail` means the operation certainly did not
//! change state; `info` means its outcome is unknown (a timeout), and the
//! worker then continues under a new process id (see [`worker_of`]), so a
//! process never has two operations open. The nemesis uses the process
//! `"nemesis"`.

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

/// Process ids of one logical worker are `worker + generation * WORKER_STRIDE`:
/// after an indeterminate (`info`) result the worker takes the next
/// generation, and checkers that reason per worker (liveness) fold the ids
/// back with [`worker_of`].
pub const WORKER_STRIDE: u64 = 10_000;

/// The logical worker a client process id belongs to.
pub fn worker_of(process: u64) -> u64 {
    process % WORKER_STRIDE
}

/// Who performed an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    Client(u64),
    Nemesis,
}

impl Serialize for Process {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(n) => s.serialize_u64(*n),
            Process::Nemesis => s.serialize_str("nemesis"),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Process;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative process number or \"nemesis\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Process, E> {
                Ok(Process::Client(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Process, E> {
                u64::try_from(v)
                    .map(Process::Client)
                    .map_err(|_| E::custom("negative process id"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Process, E> {
                if v == "nemesis" {
                    Ok(Process::Nemesis)
                } else {
                    Err(E::custom(format!("unknown process {v:?}")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Op {
    pub process: Process,
    #[serde(rename = "type")]
    pub kind: OpType,
    pub f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
    pub time_ns: u64,
}

impl Op {
    pub fn new(process: Process, kind: OpType, f: &str, key: Option<&str>, value: Value) -> Op {
        Op {
            process,
            kind,
            f: f.to_string(),
            key: key.map(str::to_string),
            value,
            time_ns: 0,
        }
    }

    pub fn at(mut self, time_ns: u64) -> Op {
        self.time_ns = time_ns;
        self
    }
}

/// The fields the checkers understand inside `value`. Every field is optional
/// so one shape serves every `f`; unknown fields are ignored so workloads can
/// record extra detail (HTTP status, node) for people reading the history.
///
/// * `owner`: the owner hash the client acted as (acquire/extend/release).
/// * `token`: the fencing token the server answered for our own grant.
/// * `ttl_ms`: the lock ttl requested; `process_hash`/`process_ttl_ms`: the
///   process the lock is bound to and its keep-alive ttl.
/// * `status`: the server's lock status (`SUCCESS`, `SOMEONE_ELSE_HOLDS_LOCK`,
///   `NO_KEY`, `NO_RUNNING_PROCESS`).
/// * `locked`/`holder`/`holder_token`: what a read or refusal said about the
///   current holder.
/// * `element`/`elements`: protected-set appends and the final read.
/// * `fault`: nemesis fault name.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Fields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_token: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elements: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

impl Fields {
    /// The recorded lock status as the proto type (`None` when there is
    /// none, or the word is not a lock-operation status).
    pub fn lock_status(&self) -> Option<locker_proto::LockOpStatus> {
        self.status.as_deref()?.parse().ok()
    }

    pub fn parse(v: &Value) -> Fields {
        // A value of the wrong shape carries nothing a checker can use; the
        // checkers then treat the operation as uninformative, never panic.
        serde_json::from_value(v.clone()).unwrap_or_default()
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Statuses as the server spells them: the proto's lock-operation statuses,
/// recorded as their wire words (the history format keeps the same strings).
pub mod status {
    use locker_proto::LockOpStatus;

    pub const SUCCESS: &str = LockOpStatus::Success.as_str();
    pub const HELD: &str = LockOpStatus::SomeoneElseHoldsLock.as_str();
    pub const NO_KEY: &str = LockOpStatus::NoKey.as_str();
    pub const NO_PROCESS: &str = LockOpStatus::NoRunningProcess.as_str();
}

/// An invocation joined with its completion.
#[derive(Clone, Debug)]
pub struct Pair {
    /// Index of the invocation line (or of the lone completion) in the history.
    pub index: usize,
    pub process: Process,
    pub f: String,
    pub key: Option<String>,
    /// `Ok`, `Fail` or `Info`; an invocation with no completion is `Info`.
    pub kind: OpType,
    pub invoke_ns: u64,
    /// `u64::MAX` when the operation never completed or completed as `info`:
    /// it may take effect at any time after its invocation.
    pub complete_ns: u64,
    /// When the harness saw the answer (also for `info`), for pictures.
    pub seen_ns: u64,
    pub req: Fields,
    pub res: Fields,
}

impl Pair {
    pub fn is_ok(&self) -> bool {
        self.kind == OpType::Ok
    }
    /// The owner the request acted as, from the request or else the response.
    pub fn owner(&self) -> Option<&str> {
        self.req.owner.as_deref().or(self.res.owner.as_deref())
    }
    pub fn ttl_ms(&self) -> Option<u64> {
        self.req.ttl_ms.or(self.res.ttl_ms)
    }
}

/// Joins invocations with completions by process. A completion without an
/// open invocation is an instantaneous event (used for the nemesis and for
/// "crash" markers); invocations never completed become `info`.
pub fn pair(ops: &[Op]) -> Vec<Pair> {
    let mut open: HashMap<Process, usize> = HashMap::new();
    let mut out: Vec<Pair> = Vec::new();
    let mut slot: HashMap<usize, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        match op.kind {
            OpType::Invoke => {
                let p = Pair {
                    index: i,
                    process: op.process,
                    f: op.f.clone(),
                    key: op.key.clone(),
                    kind: OpType::Info,
                    invoke_ns: op.time_ns,
                    complete_ns: u64::MAX,
                    seen_ns: u64::MAX,
                    req: Fields::parse(&op.value),
                    res: Fields::default(),
                };
                slot.insert(i, out.len());
                // A second invocation while one is open means the first never
                // finished as far as the history knows: it stays `info`.
                open.insert(op.process, i);
                out.push(p);
            }
            kind => {
                let res = Fields::parse(&op.value);
                match open.remove(&op.process) {
                    Some(inv) => {
                        let Some(&at) = slot.get(&inv) else { continue };
                        let p = &mut out[at];
                        p.kind = kind;
                        p.seen_ns = op.time_ns;
                        p.complete_ns = if kind == OpType::Info {
                            u64::MAX
                        } else {
                            op.time_ns
                        };
                        p.res = res;
                    }
                    None => out.push(Pair {
                        index: i,
                        process: op.process,
                        f: op.f.clone(),
                        key: op.key.clone(),
                        kind,
                        invoke_ns: op.time_ns,
                        complete_ns: if kind == OpType::Info {
                            u64::MAX
                        } else {
                            op.time_ns
                        },
                        seen_ns: op.time_ns,
                        req: res.clone(),
                        res,
                    }),
                }
            }
        }
    }
    out
}

/// A time window in which the nemesis had a fault active.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultWindow {
    pub fault: String,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// Fault windows from nemesis `start`/`stop` operations (matched by fault
/// name, in order). A fault never stopped lasts to the end of the history.
pub fn fault_windows(ops: &[Op]) -> Vec<FaultWindow> {
    let end = ops.iter().map(|o| o.time_ns).max().unwrap_or(0);
    let mut open: HashMap<String, Vec<u64>> = HashMap::new();
    let mut out = Vec::new();
    for op in ops.iter().filter(|o| o.process == Process::Nemesis) {
        let fault = Fields::parse(&op.value).fault.unwrap_or_default();
        match (op.f.as_str(), op.kind) {
            ("start", OpType::Invoke) => open.entry(fault).or_default().push(op.time_ns),
            ("stop", OpType::Ok | OpType::Info | OpType::Fail) => {
                if let Some(starts) = open.get_mut(&fault) {
                    if !starts.is_empty() {
                        let s = starts.remove(0);
                        out.push(FaultWindow {
                            fault,
                            start_ns: s,
                            end_ns: op.time_ns,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    for (fault, starts) in open {
        for s in starts {
            out.push(FaultWindow {
                fault: fault.clone(),
                start_ns: s,
                end_ns: end,
            });
        }
    }
    out.sort_by_key(|w| (w.start_ns, w.end_ns));
    out
}

pub fn read_history(path: &Path) -> anyhow::Result<Vec<Op>> {
    let f = File::open(path).map_err(|e| anyhow::anyhow!("open {}: {e}", path.display()))?;
    let mut ops = Vec::new();
    for (n, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let op: Op = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?;
        ops.push(op);
    }
    Ok(ops)
}

pub fn write_history(path: &Path, ops: &[Op]) -> anyhow::Result<()> {
    let f = File::create(path).map_err(|e| anyhow::anyhow!("create {}: {e}", path.display()))?;
    let mut w = BufWriter::new(f);
    for op in ops {
        let line = serde_json::to_string(op)?;
        writeln!(w, "{line}")?;
    }
    Ok(w.flush()?)
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for the harness and its helper
/// processes, immune to wall-clock steps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Appends operations to the history file as they happen (so a crashed run
/// still leaves its history) and keeps them in memory for the checkers.
pub struct Recorder {
    base_ns: u64,
    inner: Mutex<RecorderInner>,
}

struct RecorderInner {
    file: Option<BufWriter<File>>,
    ops: Vec<Op>,
}

impl Recorder {
    pub fn new(path: Option<&Path>) -> anyhow::Result<Recorder> {
        let file = match path {
            Some(p) => {
                Some(BufWriter::new(File::create(p).map_err(|e| {
                    anyhow::anyhow!("create {}: {e}", p.display())
                })?))
            }
            None => None,
        };
        Ok(Recorder {
            base_ns: monotonic_ns(),
            inner: Mutex::new(RecorderInner {
                file,
                ops: Vec::new(),
            }),
        })
    }

    /// Run-relative time now.
    pub fn now(&self) -> u64 {
        monotonic_ns().saturating_sub(self.base_ns)
    }

    /// Converts an absolute CLOCK_MONOTONIC reading (from a helper process).
    pub fn relative(&self, abs_ns: u64) -> u64 {
        abs_ns.saturating_sub(self.base_ns)
    }

    /// Stamps the operation with the current time and records it.
    pub fn record(&self, mut op: Op) -> Op {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Stamp under the lock so the file is in time order.
        op.time_ns = self.now();
        Self::push(&mut g, op.clone());
        op
    }

    /// Records an operation that already carries its time.
    pub fn record_at(&self, op: Op) {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        Self::push(&mut g, op);
    }

    fn push(g: &mut RecorderInner, op: Op) {
        if let Some(f) = g.file.as_mut() {
            if let Ok(line) = serde_json::to_string(&op) {
                // A failing disk must not stop the run; the in-memory copy
                // still gets checked and rewritten at the end.
                let _ = writeln!(f, "{line}");
            }
        }
        g.ops.push(op);
    }

    pub fn flush(&self) {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(f) = g.file.as_mut() {
            let _ = f.flush();
        }
    }

    /// A copy of the history so far, sorted by time (helper-process events
    /// may arrive slightly late).
    pub fn snapshot(&self) -> Vec<Op> {
        let g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut ops = g.ops.clone();
        ops.sort_by_key(|o| o.time_ns);
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn op_roundtrips_and_nemesis_process_parses() {
        let line = r#"{"process":"nemesis","type":"invoke","f":"start","value":{"fault":"kill-one"},"time_ns":5}"#;
        let op: Op = serde_json::from_str(line).expect("parse");
        assert_eq!(op.process, Process::Nemesis);
        assert_eq!(op.kind, OpType::Invoke);
        let back = serde_json::to_string(&op).expect("ser");
        let again: Op = serde_json::from_str(&back).expect("reparse");
        assert_eq!(op, again);
        let bad = r#"{"process":"bob","type":"invoke","f":"x","time_ns":1}"#;
        assert!(serde_json::from_str::<Op>(bad).is_err());
        let bad_type = r#"{"process":1,"type":"maybe","f":"x","time_ns":1}"#;
        assert!(serde_json::from_str::<Op>(bad_type).is_err());
    }

    #[test]
    fn pairing_joins_by_process_and_marks_open_invokes_info() {
        let ops = vec![
            Op::new(
                Process::Client(1),
                OpType::Invoke,
                "acquire",
                Some("k"),
                json!({"owner":"a"}),
            )
            .at(1),
            Op::new(
                Process::Client(2),
                OpType::Invoke,
                "read",
                Some("k"),
                Value::Null,
            )
            .at(2),
            Op::new(
                Process::Client(1),
                OpType::Ok,
                "acquire",
                Some("k"),
                json!({"token":7}),
            )
            .at(3),
            Op::new(
                Process::Client(3),
                OpType::Invoke,
                "release",
                Some("k"),
                json!({"owner":"a"}),
            )
            .at(4),
            Op::new(
                Process::Client(3),
                OpType::Info,
                "release",
                Some("k"),
                Value::Null,
            )
            .at(9),
        ];
        let p = pair(&ops);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].kind, OpType::Ok);
        assert_eq!((p[0].invoke_ns, p[0].complete_ns), (1, 3));
        assert_eq!(p[0].res.token, Some(7));
        assert_eq!(p[0].owner(), Some("a"));
        assert_eq!(p[1].kind, OpType::Info);
        assert_eq!(p[1].complete_ns, u64::MAX);
        assert_eq!(p[2].kind, OpType::Info);
        assert_eq!(p[2].complete_ns, u64::MAX);
        assert_eq!(p[2].seen_ns, 9);
    }

    #[test]
    fn history_file_roundtrip() {
        let dir = std::env::temp_dir().join(format!("lkj-hist-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("h.jsonl");
        let rec = Recorder::new(Some(&path)).expect("recorder");
        rec.record(Op::new(
            Process::Client(0),
            OpType::Invoke,
            "read",
            Some("k"),
            Value::Null,
        ));
        rec.record(Op::new(
            Process::Client(0),
            OpType::Ok,
            "read",
            Some("k"),
            json!({"locked":false}),
        ));
        rec.flush();
        let ops = read_history(&path).expect("read");
        assert_eq!(ops, rec.snapshot());
        assert!(ops[0].time_ns <= ops[1].time_ns);
        std::fs::write(&path, "{not json}\n").expect("write");
        let err = read_history(&path).expect_err("must fail");
        assert!(err.to_string().contains(":1:"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fault_windows_match_start_and_stop() {
        let n = Process::Nemesis;
        let ops = vec![
            Op::new(n, OpType::Invoke, "start", None, json!({"fault":"pause"})).at(10),
            Op::new(n, OpType::Ok, "start", None, json!({"fault":"pause"})).at(11),
            Op::new(n, OpType::Invoke, "stop", None, json!({"fault":"pause"})).at(50),
            Op::new(n, OpType::Ok, "stop", None, json!({"fault":"pause"})).at(52),
            Op::new(
                n,
                OpType::Invoke,
                "start",
                None,
                json!({"fault":"kill-one"}),
            )
            .at(60),
            Op::new(
                Process::Client(1),
                OpType::Invoke,
                "read",
                None,
                Value::Null,
            )
            .at(99),
        ];
        let w = fault_windows(&ops);
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].start_ns, w[0].end_ns), (10, 52));
        assert_eq!((w[1].fault.as_str(), w[1].end_ns), ("kill-one", 99));
    }
}
