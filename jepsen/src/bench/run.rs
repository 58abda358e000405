//! The workloads, and one measured level: N clients of one system running
//! one workload in a closed loop for a fixed time.

use super::procs;
use super::target::{Client, Endpoint, Held, System};
use crate::bench::percentile;
use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// A benchmark workload. Its command-line name (`--workloads`) is the
/// lower-case variant, also its name in bench.json and its SVG file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Uncontended,
    Contended,
    Extend,
    Keepalive,
    Read,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Uncontended => "uncontended",
            Workload::Contended => "contended",
            Workload::Extend => "extend",
            Workload::Keepalive => "keepalive",
            Workload::Read => "read",
        }
    }

    /// What one counted operation is, for the report.
    pub fn op(self) -> &'static str {
        match self {
            Workload::Uncontended => "acquire+release cycle, each client on its own fresh keys",
            Workload::Contended => {
                "acquire+release cycle on one of 10 hot keys, waiting for the key when it is held"
            }
            Workload::Extend => "extend of a lock the client holds",
            Workload::Keepalive => "keep-alive of one of the live processes, in turn",
            Workload::Read => "linearizable read of who holds one of 10 held keys",
        }
    }

    fn cycles(self) -> bool {
        matches!(self, Workload::Uncontended | Workload::Contended)
    }
}

/// One system under test.
pub struct Sys {
    pub ep: Endpoint,
    /// Server processes whose CPU and memory are measured.
    pub pids: Vec<u32>,
    /// etcd: the leases of the keep-alive workload's processes.
    pub leases: Arc<Vec<i64>>,
}

/// One level's parameters.
pub struct Level {
    pub workload: Workload,
    pub clients: usize,
    pub duration: Duration,
    /// Live processes the keep-alive workload cycles through.
    pub processes: usize,
    /// Unique per level and system, so levels never see each other's keys.
    pub tag: String,
}

/// What one client task brings back.
#[derive(Default)]
struct Tally {
    lat_ms: Vec<f64>,
    acq_ms: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// Runs one level and returns its figures (ops 0 and an `error` when the
/// clients could not even be set up).
pub async fn run_level(sys: &Sys, lv: &Level) -> Value {
    let mut clients = match connect_all(&sys.ep, lv.clients).await {
        Ok(c) => c,
        Err(e) => {
            return json!({"ops": 0, "ops_per_s": 0.0, "errors": 1, "error": format!("{e:#}")})
        }
    };
    let mut held = Vec::new();
    if let Err(e) = prepare(&mut clients, lv, &mut held).await {
        close_all(clients, &held).await;
        return json!({"ops": 0, "ops_per_s": 0.0, "errors": 1, "error": format!("{e:#}")});
    }
    let cpu0 = procs::cpu_total(&sys.pids);
    let me0 = procs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let started = Instant::now();
    let end = started + lv.duration;
    let mut set = JoinSet::new();
    for (i, (c, h)) in clients.into_iter().zip(held.clone()).enumerate() {
        let (w, tag, n, procs_n) = (lv.workload, lv.tag.clone(), lv.clients, lv.processes);
        let leases = sys.leases.clone();
        set.spawn(async move {
            let mut c = c;
            let t = drive(&mut c, w, &tag, i, n, procs_n, &leases, h.first(), end).await;
            (c, t)
        });
    }
    let mut all = Tally::default();
    let mut back = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((c, t)) => {
                back.push(c);
                all.lat_ms.extend(t.lat_ms);
                all.acq_ms.extend(t.acq_ms);
                all.errors += t.errors;
                if all.first_error.is_none() {
                    all.first_error = t.first_error;
                }
            }
            Err(e) => all.error(format!("client task: {e}")),
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let cpu = procs::cpu_total(&sys.pids) - cpu0;
    let me = procs::cpu_seconds(std::process::id()).unwrap_or(0.0) - me0;
    let peak = procs::peak_rss(&sys.pids);
    close_all(back, &held).await;
    figures(
        all,
        elapsed,
        cpu,
        me,
        peak,
        !sys.pids.is_empty(),
        lv.workload,
    )
}

fn figures(
    mut t: Tally,
    elapsed: f64,
    cpu: f64,
    me: f64,
    peak: u64,
    measured: bool,
    w: Workload,
) -> Value {
    t.lat_ms.sort_by(|a, b| a.total_cmp(b));
    t.acq_ms.sort_by(|a, b| a.total_cmp(b));
    let n = t.lat_ms.len();
    let pct = |v: &[f64]| {
        json!({"p50": percentile(v, 0.5), "p99": percentile(v, 0.99),
            "p999": percentile(v, 0.999), "max": v.last().copied().unwrap_or(0.0)})
    };
    let mut v = json!({
        "ops": n,
        "ops_per_s": n as f64 / elapsed,
        "errors": t.errors,
        "latency_ms": pct(&t.lat_ms),
        "elapsed_s": elapsed,
        "harness_cpu_cores": me / elapsed,
    });
    if w.cycles() {
        v["acquire_ms"] = pct(&t.acq_ms);
    }
    if let Some(e) = t.first_error {
        v["first_error"] = json!(e);
    }
    if measured {
        v["server_cpu_cores"] = json!(cpu / elapsed);
        v["server_cpu_us_per_op"] = json!(if n > 0 { cpu * 1e6 / n as f64 } else { 0.0 });
        v["peak_rss_mb"] = json!(peak as f64 / 1048576.0);
    }
    v
}

async fn connect_all(ep: &Endpoint, n: usize) -> Result<Vec<Client>> {
    let mut set = JoinSet::new();
    for i in 0..n {
        let ep = ep.clone();
        set.spawn(async move { (i, Client::connect(&ep, i).await) });
    }
    let mut v: Vec<(usize, Client)> = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        let (i, c) = r.context("connect task")?;
        v.push((i, c?));
    }
    v.sort_by_key(|(i, _)| *i);
    Ok(v.into_iter().map(|(_, c)| c).collect())
}

/// Locks held for the level: extend gives each client one of its own; read
/// has client 0 hold the 10 keys everyone reads.
async fn prepare(clients: &mut [Client], lv: &Level, held: &mut Vec<Vec<Held>>) -> Result<()> {
    held.resize(clients.len(), Vec::new());
    match lv.workload {
        Workload::Extend => {
            for (i, c) in clients.iter_mut().enumerate() {
                let h = c.acquire(&format!("{}/x{i}", lv.tag), false).await?;
                held[i].push(h);
            }
        }
        Workload::Read => {
            if let Some(c) = clients.first_mut() {
                for k in 0..10 {
                    let h = c.acquire(&format!("{}/r{k}", lv.tag), false).await?;
                    held[0].push(h);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

async fn close_all(mut clients: Vec<Client>, held: &[Vec<Held>]) {
    // Client tasks come back in any order, but a release names the lock by
    // its token alone, so any client can release every held lock.
    if let Some(c) = clients.first_mut() {
        for h in held.iter().flatten() {
            let _ = c.release(h).await;
        }
    }
    for c in &mut clients {
        c.close().await;
    }
}

/// One client's closed loop until `end`.
#[allow(clippy::too_many_arguments)]
async fn drive(
    c: &mut Client,
    w: Workload,
    tag: &str,
    i: usize,
    n: usize,
    procs_n: usize,
    leases: &[i64],
    mine: Option<&Held>,
    end: Instant,
) -> Tally {
    let mut t = Tally::default();
    let mut seq = 0usize;
    while Instant::now() < end {
        let t0 = Instant::now();
        let r = match w {
            Workload::Uncontended => cycle(c, &format!("{tag}/u{i}/{seq}"), false, &mut t).await,
            Workload::Contended => {
                cycle(c, &format!("{tag}/hot{}", (i + seq) % 10), true, &mut t).await
            }
            Workload::Extend => match mine {
                Some(h) => c.extend(h).await,
                None => Err(anyhow!("no held lock")),
            },
            Workload::Keepalive => c.keepalive((i + seq * n) % procs_n.max(1), leases).await,
            Workload::Read => c
                .read(&format!("{tag}/r{}", (i + seq) % 10))
                .await
                .map(|_| ()),
        };
        seq += 1;
        match r {
            Ok(()) => t.lat_ms.push(t0.elapsed().as_secs_f64() * 1e3),
            Err(e) => {
                t.error(format!("{e:#}"));
                // A failing system must not turn the loop into a busy spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    t
}

async fn cycle(c: &mut Client, key: &str, wait: bool, t: &mut Tally) -> Result<()> {
    let t0 = Instant::now();
    let h = c.acquire(key, wait).await?;
    t.acq_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    c.release(&h).await
}

/// etcd: grants one lease per live process for the keep-alive workload
/// (not timed); other systems create their process records on first use.
pub async fn grant_leases(ep: &Endpoint, n: usize) -> Result<Vec<i64>> {
    if ep.system != System::Etcd {
        return Ok(Vec::new());
    }
    let workers = 32.min(n.max(1));
    let mut set = JoinSet::new();
    for w in 0..workers {
        let ep = ep.clone();
        let count = n / workers + usize::from(w < n % workers);
        set.spawn(async move {
            let mut c = Client::connect(&ep, w).await?;
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                v.push(c.grant(3_600).await?);
            }
            c.close().await;
            anyhow::Ok(v)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r.context("lease task")??);
    }
    Ok(all)
}
