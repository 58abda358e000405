//! The `run` workload: many `locker run` jobs on a few keys.
//!
//! `RUN_KEYS` keys, `RUNNERS_PER_KEY` runners each; every runner has its own
//! client host (network namespace, see `client_hosts`) and loops:
//!
//! ```text
//! locker run --endpoints N1,N2,N3 --wait-ms .. --report-ttl-ms PTTL .. KEY -- \
//!     locker-jepsen job-beat --file RECORD --key KEY --job ID --run-ms .. --on-term ..
//! ```
//!
//! The job appends heartbeats to one shared record (`jobs/beats.jsonl`),
//! sometimes through `sh -c` (so the beating process is a grandchild of
//! locker), sometimes lingering on or ignoring SIGTERM. Now and then the
//! runner kills a holder with SIGKILL: `locker run` alone (`mode: locker`)
//! or it and the job's whole process group (`mode: group`), and records a
//! `kill-run` event, after which another runner must get the key within the
//! documented bound. At the end every job becomes one `job` event in the
//! history; `checker::run` judges them.
//!
//! `run-unlocked` is the twin without a lock (the job is started directly),
//! the negative control: its jobs overlap, and the checker must say so.
//!
//! `run-lib` is the same through the Rust client library: 3 runners on
//! client hosts 10..12 loop `locker-jepsen lib-job` (see `lib_job`), which
//! beats only while `Heartbeater::heartbeat()` says the lock is still held.

use crate::checker::run::spans_from_record;
use crate::client_hosts::ClientHosts;
use crate::history::{Op, OpType, Process, Recorder};
use crate::job_beat::OnTerm;
use crate::rng::Rng;
use crate::runner::Workload;
use crate::workload::Ctx;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::time::{sleep, Instant};

pub const RUN_KEYS: u64 = 3;
pub const RUNNERS_PER_KEY: u64 = 3;
pub const UNLOCKED_RUNNERS: u64 = 2;
pub const UNLOCKED_KEY: &str = "jepsen/run-unlocked";
pub const LIB_KEY: &str = "jepsen/run-lib";
pub const LIB_RUNNERS: u64 = 3;

/// How a runner starts its jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `locker run KEY -- job-beat ...`
    Locker,
    /// `lib-job`: the client library holds the lock inside the job.
    Lib,
    /// `job-beat` with no lock at all (negative control).
    Unlocked,
}
/// History process of runner `i` (its `run` operations)...
const RUN_PROCESS: u64 = 700;
/// ...and of its events (`job`, `kill-run`), which have no invocation.
const EVENT_PROCESS: u64 = 7_700;
/// Hard cap on jobs per runner, whatever the time limit.
const MAX_JOBS: u64 = 20_000;

/// How runners call `locker run`.
pub struct RunCfg {
    pub exe: PathBuf,
    pub locker_bin: PathBuf,
    pub record: PathBuf,
    pub log_dir: PathBuf,
    pub process_ttl_ms: u64,
    pub grace_ms: u64,
    pub wait_ms: u64,
    pub timeout_ms: u64,
    pub clients: Arc<ClientHosts>,
}

impl RunCfg {
    /// Timings derived from the process ttl: keep-alives 5 per ttl, a grace
    /// of 15 % of it (at most 300 ms), the lock's own ttl 3 x the process
    /// ttl so the process ttl is what frees a dead holder's key.
    pub fn new(
        out: &Path,
        exe: PathBuf,
        locker_bin: PathBuf,
        process_ttl_ms: u64,
        clients: Arc<ClientHosts>,
    ) -> anyhow::Result<RunCfg> {
        let dir = out.join("jobs");
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("mkdir {}: {e}", dir.display()))?;
        Ok(RunCfg {
            exe,
            locker_bin,
            record: dir.join("beats.jsonl"),
            log_dir: dir,
            process_ttl_ms,
            grace_ms: (process_ttl_ms * 15 / 100).min(300),
            wait_ms: 5_000,
            timeout_ms: 3_000,
            clients,
        })
    }

    fn locker_args(&self, urls: &[String], key: &str) -> Vec<String> {
        let p = self.process_ttl_ms;
        [
            "run",
            "--endpoints",
            &urls.join(","),
            "--ttl-ms",
            &(3 * p).to_string(),
            "--report-ttl-ms",
            &p.to_string(),
            "--report-write-ms",
            &(p / 5).max(50).to_string(),
            "--grace-ms",
            &self.grace_ms.to_string(),
            "--timeout-ms",
            &self.timeout_ms.to_string(),
            "--wait-ms",
            &self.wait_ms.to_string(),
            key,
            "--",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// What one job does, drawn per job.
#[derive(Clone, Debug)]
struct Plan {
    job: String,
    run_ms: u64,
    interval_ms: u64,
    on_term: OnTerm,
    /// Run through `sh -c` so the beating process is a grandchild.
    nested: bool,
    /// Kill the holder this long after its job started: (ms, mode).
    kill: Option<(u64, &'static str)>,
}

impl Plan {
    fn draw(rng: &mut Rng, job: String, grace_ms: u64, kind: Kind) -> Plan {
        let run_ms = if rng.chance(0.7) {
            rng.range(200, 1_500)
        } else {
            rng.range(2_500, 6_000)
        };
        let on_term = match rng.below(10) {
            0..=4 => OnTerm::Exit,
            5..=7 => OnTerm::Linger(rng.range(20, (grace_ms * 2 / 3).max(21))),
            _ => OnTerm::Ignore,
        };
        let kill = (kind != Kind::Unlocked && rng.chance(0.15)).then(|| {
            let mode = if kind == Kind::Lib {
                "process"
            } else if rng.chance(0.5) {
                "locker"
            } else {
                "group"
            };
            (rng.range(100, 1_500), mode)
        });
        Plan {
            job,
            run_ms,
            interval_ms: rng.range(20, 50),
            on_term,
            nested: rng.chance(0.3),
            kill,
        }
    }

    /// `lib-job` arguments (the nesting and SIGTERM behaviour do not apply).
    fn lib_args(&self, cfg: &RunCfg, urls: &[String], key: &str) -> Vec<String> {
        [
            "lib-job",
            "--urls",
            &urls.join(","),
            "--file",
            &cfg.record.display().to_string(),
            "--key",
            key,
            "--job",
            &self.job,
            "--run-ms",
            &self.run_ms.to_string(),
            "--interval-ms",
            &self.interval_ms.to_string(),
            "--wait-ms",
            &cfg.wait_ms.to_string(),
            "--process-ttl-ms",
            &cfg.process_ttl_ms.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn job_args(&self, cfg: &RunCfg, key: &str) -> Vec<String> {
        let exe = cfg.exe.display().to_string();
        let mut v: Vec<String> = Vec::new();
        if self.nested {
            // `; true` keeps sh from exec'ing: the job is sh's child.
            v.extend(["sh", "-c", "\"$0\" \"$@\"; true"].map(String::from));
        }
        v.push(exe);
        v.extend([
            "job-beat".to_string(),
            "--file".into(),
            cfg.record.display().to_string(),
            "--key".into(),
            key.to_string(),
            "--job".into(),
            self.job.clone(),
            "--run-ms".into(),
            self.run_ms.to_string(),
            "--interval-ms".into(),
            self.interval_ms.to_string(),
            "--on-term".into(),
            self.on_term.arg(),
        ]);
        v
    }
}

/// Spawns the runners of workload `w` (run, run-lib, run-unlocked).
pub fn spawn(
    tasks: &mut tokio::task::JoinSet<()>,
    w: Workload,
    ctx: &Arc<Ctx>,
    cfg: &Arc<RunCfg>,
    rng: &mut Rng,
) {
    let mut add = |id: u64, host: u64, key: String, kind: Kind| {
        let rn = Runner::new(id, host, key, kind, ctx, cfg, rng);
        tasks.spawn(rn.run());
    };
    match w {
        Workload::RunUnlocked => {
            for r in 0..UNLOCKED_RUNNERS {
                add(90 + r, 0, UNLOCKED_KEY.into(), Kind::Unlocked);
            }
        }
        Workload::RunLib => {
            // Client hosts after the run workload's.
            for r in 0..LIB_RUNNERS {
                let host = RUN_KEYS * RUNNERS_PER_KEY + 1 + r;
                add(host, host, LIB_KEY.into(), Kind::Lib);
            }
        }
        _ => {
            for k in 0..RUN_KEYS {
                for r in 0..RUNNERS_PER_KEY {
                    let client = 1 + k * RUNNERS_PER_KEY + r;
                    add(client, client, format!("jepsen/run/{k}"), Kind::Locker);
                }
            }
        }
    }
}

/// The client host of a takeover workload's holder processes: 13 (HTTP),
/// 14 (client library), after the run workloads' hosts.
pub fn takeover_host(via: crate::workload::Via) -> u64 {
    let base = RUN_KEYS * RUNNERS_PER_KEY + LIB_RUNNERS;
    match via {
        crate::workload::Via::Http => base + 1,
        crate::workload::Via::Client => base + 2,
    }
}

/// Client hosts the workloads need (run: 1..=9, run-lib: 10..=12, takeover
/// holders: 13, 14).
pub fn clients_needed(workloads: &[Workload]) -> u64 {
    let any = |w: Workload| workloads.contains(&w);
    if any(Workload::TakeoverHttp) || any(Workload::TakeoverClient) {
        RUN_KEYS * RUNNERS_PER_KEY + LIB_RUNNERS + 2
    } else if any(Workload::RunLib) {
        RUN_KEYS * RUNNERS_PER_KEY + LIB_RUNNERS
    } else if any(Workload::Run) {
        RUN_KEYS * RUNNERS_PER_KEY
    } else {
        0
    }
}

struct Runner {
    id: u64,
    /// Client host (0: the harness's own network).
    host: u64,
    key: String,
    kind: Kind,
    ctx: Arc<Ctx>,
    cfg: Arc<RunCfg>,
    rng: Rng,
}

/// How one `locker run` ended.
struct Outcome {
    exit: Option<i32>,
    signal: Option<i32>,
    started: bool,
    killed: Option<&'static str>,
    stopped_by_harness: bool,
}

impl Runner {
    fn new(
        id: u64,
        host: u64,
        key: String,
        kind: Kind,
        ctx: &Arc<Ctx>,
        cfg: &Arc<RunCfg>,
        rng: &mut Rng,
    ) -> Runner {
        Runner {
            id,
            host,
            key,
            kind,
            ctx: ctx.clone(),
            cfg: cfg.clone(),
            rng: rng.fork(500 + id),
        }
    }

    fn record(&self, process: u64, kind: OpType, f: &str, v: Value) {
        self.ctx.rec.record(Op::new(
            Process::Client(process),
            kind,
            f,
            Some(&self.key),
            v,
        ));
    }

    fn command(&self, plan: &Plan) -> tokio::process::Command {
        let job = plan.job_args(&self.cfg, &self.key);
        let (prog, args): (PathBuf, Vec<String>) = match self.kind {
            Kind::Unlocked => (PathBuf::from(&job[0]), job[1..].to_vec()),
            Kind::Locker => {
                let mut a = self.cfg.locker_args(&self.ctx.urls, &self.key);
                a.extend(job);
                (self.cfg.locker_bin.clone(), a)
            }
            Kind::Lib => (
                self.cfg.exe.clone(),
                plan.lib_args(&self.cfg, &self.ctx.urls, &self.key),
            ),
        };
        let mut c = self.cfg.clients.command(self.host, &prog);
        c.args(args);
        c
    }

    async fn run(mut self) {
        let mut n = 0u64;
        while !self.ctx.done() && n < MAX_JOBS {
            n += 1;
            let job = format!("c{}-{n}", self.id);
            let plan = Plan::draw(&mut self.rng, job, self.cfg.grace_ms, self.kind);
            let unlocked = self.kind == Kind::Unlocked;
            self.record(
                RUN_PROCESS + self.id,
                OpType::Invoke,
                "run",
                json!({"job": plan.job, "client": self.host, "run_ms": plan.run_ms,
                    "on_term": plan.on_term.arg(), "nested": plan.nested, "unlocked": unlocked,
                    "via": format!("{:?}", self.kind).to_lowercase(),
                    "process_ttl_ms": self.cfg.process_ttl_ms}),
            );
            let (kind, v) = match self.one(&plan).await {
                Ok(o) => outcome_op(&plan, &o),
                Err(e) => (
                    OpType::Fail,
                    json!({"job": plan.job, "error": format!("{e:#}")}),
                ),
            };
            self.record(RUN_PROCESS + self.id, kind, "run", v);
            self.cfg.clients.set_running(self.host, None);
            let pause = if kind == OpType::Fail && !unlocked {
                200
            } else {
                self.rng.range(0, 50)
            };
            sleep(Duration::from_millis(pause)).await;
        }
    }

    /// Runs one `locker run` (or, unlocked, the job itself) to its end.
    async fn one(&mut self, plan: &Plan) -> anyhow::Result<Outcome> {
        let (mut child, started) = self.spawn_run(plan)?;
        let mut o = Outcome {
            exit: None,
            signal: None,
            started: false,
            killed: None,
            stopped_by_harness: false,
        };
        let status = self.supervise(&mut child, started, plan, &mut o).await;
        if let Some(st) = status {
            use std::os::unix::process::ExitStatusExt;
            o.exit = st.code();
            o.signal = st.signal();
        }
        Ok(o)
    }

    /// Spawns the run in its own process group; the receiver gets the job's
    /// process group once it printed `STARTED`.
    fn spawn_run(
        &self,
        plan: &Plan,
    ) -> anyhow::Result<(
        tokio::process::Child,
        tokio::sync::watch::Receiver<Option<i64>>,
    )> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.cfg.log_dir.join(format!("runner{}.log", self.id)))
            .map_err(|e| anyhow::anyhow!("runner log: {e}"))?;
        let mut cmd = self.command(plan);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| anyhow::anyhow!("spawn: {e}"))?;
        let (tx, started) = tokio::sync::watch::channel(None::<i64>);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(out).lines();
                let mut n = 0;
                while let Ok(Some(l)) = lines.next_line().await {
                    n += 1;
                    if n > 1_000 {
                        break;
                    }
                    let mut w = l.split_whitespace();
                    if w.next() == Some("STARTED") {
                        let pgid = w.nth(1).and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
                        let _ = tx.send(Some(pgid));
                    }
                }
            });
        }
        Ok((child, started))
    }

    /// Watches the run until it exits: kills it as planned, asks it to stop
    /// at the end of the test, kills it hard when it overstays.
    async fn supervise(
        &self,
        child: &mut tokio::process::Child,
        mut started: tokio::sync::watch::Receiver<Option<i64>>,
        plan: &Plan,
        o: &mut Outcome,
    ) -> Option<std::process::ExitStatus> {
        let pid = child.id().unwrap_or(0);
        // Nothing legitimate lasts longer than waiting, the job and a stop.
        let hard = Instant::now()
            + Duration::from_millis(self.cfg.wait_ms + plan.run_ms + self.cfg.timeout_ms * 4)
            + Duration::from_secs(30);
        let mut kill_at: Option<Instant> = None;
        let mut job_pgid = 0i64;
        let mut term_sent: Option<Instant> = None;
        loop {
            tokio::select! {
                st = child.wait() => return st.ok(),
                r = started.changed(), if !o.started => {
                    if r.is_err() { continue; }
                    o.started = true;
                    job_pgid = (*started.borrow()).unwrap_or(0);
                    self.cfg
                        .clients
                        .set_running(self.host, Some((pid, plan.run_ms)));
                    kill_at = plan.kill.map(|(ms, _)| Instant::now() + Duration::from_millis(ms));
                }
                _ = sleep(Duration::from_millis(50)) => {}
            }
            let now = Instant::now();
            if let (Some(t), Some((_, mode))) = (kill_at, plan.kill) {
                if now >= t && o.killed.is_none() {
                    self.kill(pid, job_pgid, mode, plan);
                    o.killed = Some(mode);
                    kill_at = None;
                }
            }
            if self.ctx.done() && term_sent.is_none() {
                // End of the run: ask locker to stop (it passes SIGTERM on
                // to the job and releases the lock).
                o.stopped_by_harness = true;
                crate::cluster::signal(pid, libc::SIGTERM);
                term_sent = Some(now);
            }
            let late = term_sent.is_some_and(|t| now >= t + Duration::from_secs(5));
            if now >= hard || late {
                kill_group(pid as i64);
                kill_group(job_pgid);
                o.stopped_by_harness = true;
                return tokio::time::timeout(Duration::from_secs(5), child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
        }
    }

    /// SIGKILL of the holder: `locker` alone, or it and the job's group.
    fn kill(&self, pid: u32, job_pgid: i64, mode: &'static str, plan: &Plan) {
        if mode == "group" {
            kill_group(pid as i64);
            kill_group(job_pgid);
        } else {
            crate::cluster::signal(pid, libc::SIGKILL);
        }
        self.record(
            EVENT_PROCESS + self.id,
            OpType::Info,
            "kill-run",
            json!({"job": plan.job, "mode": mode, "client": self.host,
                "process_ttl_ms": self.cfg.process_ttl_ms}),
        );
    }
}

/// SIGKILL to a whole process group, never to ours, init's or "all".
fn kill_group(pgid: i64) {
    // SAFETY: getpgrp only reads our own process group id.
    let ours = unsafe { libc::getpgrp() } as i64;
    if pgid <= 1 || pgid == ours || pgid > i32::MAX as i64 {
        return;
    }
    // SAFETY: kill(2) on a negative pid signals that process group only.
    unsafe {
        libc::kill(-(pgid as i32), libc::SIGKILL);
    }
}

fn outcome_op(plan: &Plan, o: &Outcome) -> (OpType, Value) {
    let v = json!({"job": plan.job, "exit": o.exit, "signal": o.signal, "started": o.started,
        "killed": o.killed, "stopped_by_harness": o.stopped_by_harness});
    // 0: the job ran and finished; 3: the lock was held (the wait ran out),
    // nothing ran. Anything else (lost lock, error, killed) is not a clean
    // outcome.
    let kind = match (o.exit, o.killed) {
        (Some(0), None) => OpType::Ok,
        (Some(3), None) if !o.started => OpType::Fail,
        _ => OpType::Info,
    };
    (kind, v)
}

/// Turns the shared heartbeat record into one `job` event per job.
pub fn collect(rec: &Recorder, record: &Path) -> anyhow::Result<usize> {
    let text = match std::fs::read_to_string(record) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(anyhow::anyhow!("read {}: {e}", record.display())),
    };
    let (spans, bad) = spans_from_record(&text, |k| k == UNLOCKED_KEY, |t| rec.relative(t));
    if bad > 0 {
        eprintln!("[run] {bad} unreadable lines in {}", record.display());
    }
    for s in &spans {
        // Job ids are `c<runner>-<n>`.
        let runner = s
            .job
            .strip_prefix('c')
            .and_then(|r| r.split('-').next())
            .and_then(|r| r.parse::<u64>().ok())
            .unwrap_or(299);
        rec.record_at(s.to_op(EVENT_PROCESS + runner));
    }
    Ok(spans.len())
}
