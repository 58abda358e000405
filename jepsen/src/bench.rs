//! `locker-jepsen bench`: Locker side by side with etcd and Redis, in one
//! run on one machine, with the same load generator.
//!
//! It starts a 3-node Locker, a 3-node etcd (its v3 lock API over the
//! HTTP/JSON gateway, one lease per client) and a Redis with `appendfsync
//! always` running the seed Locker's Lua scripts, all on 127.0.0.1 so they
//! see the same network, then runs each workload ([`run::Workload`]) at each
//! client count against each system in turn (interleaved, so background noise
//! spreads evenly). Per level it records throughput, p50/p99/p999 latency,
//! the servers' CPU (from /proc/PID/stat) and peak resident memory (VmHWM).
//! A separate part fills one Locker node with live locks and measures its
//! memory ([`memory`]). `--out DIR` gets bench.json, bench.md and one SVG per
//! workload.

mod memory;
mod output;
pub(crate) mod procs;
mod resp;
mod run;
mod target;

use crate::cluster::{Cluster, HostKind, Hosts, NodeFlags};
use crate::rng::Rng;
use anyhow::{anyhow, bail, ensure, Context, Result};
use run::{Level, Sys, Workload};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use target::{Endpoint, System};

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `locker-jepsen bench` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// About a minute end to end: 1 and 16 clients, 1.5 s per level, 1,000
    /// processes, and the memory part with 5,000 locks.
    #[arg(long)]
    pub quick: bool,
    /// Systems to run (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "locker,etcd,redis"
    )]
    pub systems: Vec<System>,
    /// Workloads (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "uncontended,contended,extend,keepalive,read"
    )]
    pub workloads: Vec<Workload>,
    /// Client counts (default 1,16,64,256; quick 1,16).
    #[arg(long)]
    pub concurrency: Option<String>,
    /// Seconds per level and system (default 10; quick 1.5).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Live processes of the keep-alive workload (default 10000; quick 1000).
    #[arg(long)]
    pub processes: Option<usize>,
    /// Also run the memory part: one node holding --memory-locks live locks.
    #[arg(long)]
    pub memory: bool,
    /// Run only the memory part.
    #[arg(long)]
    pub memory_only: bool,
    /// Live locks of the memory part (default 1000000; quick 5000).
    #[arg(long)]
    pub memory_locks: Option<usize>,
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// The locker-node binary (default: next to this one, else target/).
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
    #[arg(long)]
    pub etcd_bin: Option<PathBuf>,
    #[arg(long)]
    pub redis_bin: Option<PathBuf>,
    /// Benchmark an existing Locker cluster (comma-separated URLs) instead of
    /// starting one; its server CPU and memory are then not measured.
    #[arg(long)]
    pub endpoints: Option<String>,
    /// Keep the servers' data directories under --out (by default they are
    /// removed after a run in which every system answered: etcd alone
    /// preallocates 64 MB of WAL per member).
    #[arg(long)]
    pub keep_data: bool,
}

/// The resolved plan of a run.
struct Plan {
    systems: Vec<System>,
    workloads: Vec<Workload>,
    concurrency: Vec<usize>,
    duration: Duration,
    processes: usize,
    memory_locks: Option<usize>,
    compare: bool,
    out: PathBuf,
    node_bin: PathBuf,
    etcd_bin: Option<PathBuf>,
    redis_bin: Option<PathBuf>,
    endpoints: Vec<String>,
}

fn list<T>(s: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(parse)
        .collect()
}

fn plan(a: &BenchArgs) -> Result<Plan> {
    let systems = a.systems.clone();
    let workloads = a.workloads.clone();
    let conc = a
        .concurrency
        .clone()
        .unwrap_or_else(|| if a.quick { "1,16" } else { "1,16,64,256" }.into());
    let concurrency = list(&conc, |x| {
        x.parse::<usize>()
            .ok()
            .filter(|c| (1..=1024).contains(c))
            .ok_or_else(|| anyhow!("--concurrency: {x:?} is not 1..=1024"))
    })?;
    let secs = a.duration.unwrap_or(if a.quick { 1.5 } else { 10.0 });
    ensure!(
        (0.1..=3600.0).contains(&secs),
        "--duration must be 0.1..=3600 seconds"
    );
    let processes = a.processes.unwrap_or(if a.quick { 1_000 } else { 10_000 });
    ensure!(processes > 0, "--processes must be at least 1");
    let memory = a.memory || a.memory_only || a.quick;
    let locks = a
        .memory_locks
        .unwrap_or(if a.quick { 5_000 } else { 1_000_000 });
    let endpoints: Vec<String> = a
        .endpoints
        .as_deref()
        .map(|e| list(e, |s| Ok(s.trim_end_matches('/').to_string())))
        .transpose()?
        .unwrap_or_default();
    let compare = !a.memory_only;
    let need_node =
        memory || (compare && systems.contains(&System::Locker) && endpoints.is_empty());
    let has = |s| compare && systems.contains(&s);
    Ok(Plan {
        node_bin: if need_node {
            node_bin(a.node_bin.as_deref())?
        } else {
            PathBuf::new()
        },
        etcd_bin: has(System::Etcd)
            .then(|| procs::find_bin(a.etcd_bin.as_deref(), "etcd", "etcd-server"))
            .transpose()?,
        redis_bin: has(System::Redis)
            .then(|| procs::find_bin(a.redis_bin.as_deref(), "redis-server", "redis-server"))
            .transpose()?,
        systems,
        workloads,
        concurrency,
        duration: Duration::from_secs_f64(secs),
        processes,
        memory_locks: memory.then_some(locks),
        compare,
        out: a.out.clone(),
        endpoints,
    })
}

/// The node binary: the flag, else the one built next to this binary (same
/// profile), else a release or debug build in the workspace.
fn node_bin(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return std::fs::canonicalize(p).with_context(|| format!("node binary {}", p.display()));
    }
    let mut cands = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        cands.push(dir.join("locker-node"));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    cands.push(root.join("target/release/locker-node"));
    cands.push(root.join("target/debug/locker-node"));
    cands
        .into_iter()
        .find(|p| p.is_file())
        .context("no locker-node binary: cargo build -p locker-node, or pass --node-bin")
}

/// `locker-jepsen bench`: exit 0 when every system produced throughput in
/// every workload and level, 1 when some did not, Err on a harness error.
pub fn main(a: BenchArgs) -> Result<ExitCode> {
    let mut p = plan(&a)?;
    std::fs::create_dir_all(&p.out).with_context(|| format!("create {}", p.out.display()))?;
    // Servers run in their own directories: hand them absolute paths.
    p.out = std::fs::canonicalize(&p.out).with_context(|| p.out.display().to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("runtime")?;
    let r = rt.block_on(bench(&p))?;
    output::write_all(&p.out, &r)?;
    println!("report: {}", p.out.join("bench.md").display());
    let zero = zero_cells(&r);
    if zero.is_empty() {
        if !a.keep_data {
            let _ = std::fs::remove_dir_all(p.out.join("servers"));
            let _ = std::fs::remove_dir_all(p.out.join("memory"));
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("no throughput: {}", zero.join(", "));
        Ok(ExitCode::from(1))
    }
}

/// Cells (workload, clients, system) with no completed operation.
pub fn zero_cells(r: &Value) -> Vec<String> {
    let mut v = Vec::new();
    for row in r["results"].as_array().into_iter().flatten() {
        for (name, x) in row["systems"].as_object().into_iter().flatten() {
            if x["ops_per_s"].as_f64().unwrap_or(0.0) <= 0.0 {
                v.push(format!(
                    "{} @{} {name} ({})",
                    row["workload"],
                    row["clients"],
                    x["first_error"]
                        .as_str()
                        .or(x["error"].as_str())
                        .unwrap_or("?")
                ));
            }
        }
    }
    if r["memory"]["error"].is_string() {
        v.push(format!("memory: {}", r["memory"]["error"]));
    }
    v
}

/// A base port whose 20 ports on 127.0.0.1 are free (runs of other test
/// suites on this machine use the same range).
fn free_base(rng: &mut Rng) -> Result<u16> {
    for _ in 0..50 {
        let base = 20_000 + (rng.below(1_000) as u16) * 20;
        if (base..base + 20).all(procs::port_free) {
            return Ok(base);
        }
    }
    bail!("no free block of 20 ports in 20000..40000")
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ u64::from(std::process::id())
}

async fn bench(p: &Plan) -> Result<Value> {
    let mut rng = Rng::new(seed());
    let http = target::http_client()?;
    let mut r = json!({"setup": setup_text(p), "machine": machine(), "versions": versions(p),
        "duration_s": p.duration.as_secs_f64(), "processes": p.processes, "results": []});
    if p.compare {
        let base = free_base(&mut rng)?;
        let mut st = Started::default();
        let res = tokio::select! {
            x = async {
                let systems = st.start(p, base, &http).await?;
                anyhow::Ok(compare(p, &systems).await)
            } => x,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        };
        st.stop().await;
        r["results"] = json!(res?);
    }
    if let Some(n) = p.memory_locks {
        let hosts = Hosts {
            kind: HostKind::Local,
            prefix: "bench-mem".into(),
            base_port: free_base(&mut rng)?,
        };
        let dir = p.out.join("memory");
        let _ = std::fs::remove_dir_all(&dir);
        let c = Cluster::new(hosts, p.node_bin.clone(), dir, 1, "bench".into());
        println!("memory: one node, {n} live locks");
        r["memory"] = memory::run(c, http.clone(), n).await;
    }
    Ok(r)
}

fn setup_text(p: &Plan) -> String {
    format!(
        "Same run, same machine, same load generator (this process, 2 tokio workers, HTTP/1.1 keep-alive or one RESP connection per client), all servers on 127.0.0.1. Locker: 3 nodes. etcd: 3 members, v3 lock API over the HTTP/JSON gateway, one lease per client. Redis: 1 server, appendfsync always, the seed Locker's Lua scripts by EVALSHA. {:.1} s per level and system; keep-alive workload over {} live processes (Locker: PUT /v1/processes; etcd: a lease keep-alive; Redis: the seed's SET proc:{{hash}} PX). Server CPU is the sum over the system's processes (1.0 = one core busy); peak RSS is the largest VmHWM among them.",
        p.duration.as_secs_f64(),
        p.processes
    )
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| procs::parse_status_kb(&s, "MemTotal"))
        .unwrap_or(0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({"cpu": cpu, "cores": cores, "memory_gb": mem as f64 / 1048576.0, "kernel": kernel.trim()})
}

fn versions(p: &Plan) -> Value {
    let v = |b: &Option<PathBuf>| b.as_deref().map(procs::version);
    json!({"etcd": v(&p.etcd_bin), "redis": v(&p.redis_bin), "locker": env!("CARGO_PKG_VERSION")})
}

/// The started servers, stopped again whatever happens.
#[derive(Default)]
struct Started {
    locker: Option<Cluster>,
    etcd: Option<procs::Servers>,
    redis: Option<procs::Servers>,
}

impl Started {
    async fn start(&mut self, p: &Plan, base: u16, http: &reqwest::Client) -> Result<Vec<Sys>> {
        let mut out = Vec::new();
        let dir = p.out.join("servers");
        let _ = std::fs::remove_dir_all(&dir);
        for &s in &p.systems {
            let (addrs, pids) = match s {
                System::Locker => self.start_locker(p, base, &dir)?,
                System::Etcd => {
                    let bin = p.etcd_bin.as_deref().context("no etcd binary")?;
                    let sv = procs::start_etcd(bin, &dir, base, 3)?;
                    let pids = sv.pids();
                    self.etcd = Some(sv);
                    (
                        (0..3)
                            .map(|i| format!("http://127.0.0.1:{}", procs::etcd_ports(base, i).0))
                            .collect(),
                        pids,
                    )
                }
                System::Redis => {
                    let bin = p.redis_bin.as_deref().context("no redis binary")?;
                    let sv = procs::start_redis(bin, &dir, base)?;
                    let pids = sv.pids();
                    self.redis = Some(sv);
                    (vec![format!("127.0.0.1:{}", procs::redis_port(base))], pids)
                }
            };
            let shas = wait_ready(s, &addrs, &pids, http)
                .await
                .map_err(|e| anyhow!("{e:#} (logs under {})", dir.display()))?;
            let ep = Endpoint {
                system: s,
                addrs,
                http: http.clone(),
                shas: Arc::new(shas),
            };
            println!("{} ready ({} server processes)", s.name(), pids.len());
            out.push(Sys {
                ep,
                pids,
                leases: Arc::new(Vec::new()),
            });
        }
        Ok(out)
    }

    fn start_locker(&mut self, p: &Plan, base: u16, dir: &Path) -> Result<(Vec<String>, Vec<u32>)> {
        if !p.endpoints.is_empty() {
            return Ok((p.endpoints.clone(), Vec::new()));
        }
        let hosts = Hosts {
            kind: HostKind::Local,
            prefix: "bench".into(),
            base_port: base,
        };
        let mut c = Cluster::new(
            hosts,
            p.node_bin.clone(),
            dir.join("locker"),
            3,
            // A multi-node cluster refuses secrets under 16 bytes.
            "locker-bench-cluster-secret".into(),
        );
        for id in 1..=3 {
            c.start(id, NodeFlags::default())?;
        }
        let urls = c.urls();
        let pids = c.nodes.values().map(|n| n.pid).collect();
        self.locker = Some(c);
        Ok((urls, pids))
    }

    async fn stop(&mut self) {
        if let Some(mut c) = self.locker.take() {
            c.stop_all().await;
        }
        for s in [self.etcd.as_mut(), self.redis.as_mut()]
            .into_iter()
            .flatten()
        {
            s.stop().await;
        }
    }
}

/// Waits up to 60 s until every member answers (Locker: /readyz, etcd:
/// /health, Redis: the scripts load). Redis gives the scripts' SHA1s.
async fn wait_ready(
    s: System,
    addrs: &[String],
    pids: &[u32],
    http: &reqwest::Client,
) -> Result<[String; 3]> {
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = match s {
            System::Redis => {
                target::load_scripts(addrs.first().map(String::as_str).unwrap_or("")).await
            }
            _ => {
                let path = if s == System::Locker {
                    "/readyz"
                } else {
                    "/health"
                };
                let mut ok = Ok(Default::default());
                for a in addrs {
                    match http.get(format!("{a}{path}")).send().await {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => ok = Err(anyhow!("{a}{path}: {}", r.status())),
                        Err(e) => ok = Err(anyhow!("{a}{path}: {e}")),
                    }
                }
                ok
            }
        };
        match r {
            Ok(v) => return Ok(v),
            Err(e) if !pids.iter().all(|&p| procs::alive(p)) => {
                return Err(e.context(format!("{} exited at start", s.name())))
            }
            Err(e) if tokio::time::Instant::now() > end => {
                return Err(e.context(format!("{} not ready after 60 s", s.name())))
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every workload, level and system, interleaved by system within a level.
async fn compare(p: &Plan, systems: &[Sys]) -> Vec<Value> {
    let mut rows = Vec::new();
    for &w in &p.workloads {
        let mut with_leases = Vec::new();
        for s in systems {
            let leases = if w == Workload::Keepalive {
                match run::grant_leases(&s.ep, p.processes).await {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("{}: granting keep-alive leases: {e:#}", s.ep.system.name());
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            with_leases.push(Sys {
                ep: s.ep.clone(),
                pids: s.pids.clone(),
                leases: Arc::new(leases),
            });
        }
        for &c in &p.concurrency {
            let mut figures = json!({});
            for s in &with_leases {
                let name = s.ep.system.name();
                let lv = Level {
                    workload: w,
                    clients: c,
                    duration: p.duration,
                    processes: p.processes,
                    tag: format!("b{}-{}-{c}-{name}", std::process::id(), w.name()),
                };
                let x = run::run_level(s, &lv).await;
                println!("{:<11} {:>4} clients {:<6} {:>9.1} ops/s  p50 {:>8.2} ms  p99 {:>8.2} ms  p999 {:>8.2} ms  cpu {:>5.2}  errors {}",
                    w.name(), c, name, x["ops_per_s"].as_f64().unwrap_or(0.0),
                    x["latency_ms"]["p50"].as_f64().unwrap_or(0.0), x["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
                    x["latency_ms"]["p999"].as_f64().unwrap_or(0.0), x["server_cpu_cores"].as_f64().unwrap_or(0.0), x["errors"]);
                figures[name] = x;
            }
            let ratios = output::ratios(&figures);
            rows.push(
                json!({"workload": w.name(), "clients": c, "systems": figures, "ratios": ratios}),
            );
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_zero_cells() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        let r = json!({"results": [{"workload": "read", "clients": 1, "systems": {
            "locker": {"ops_per_s": 5.0}, "etcd": {"ops_per_s": 0.0, "first_error": "boom"}}}]});
        assert_eq!(zero_cells(&r), vec!["\"read\" @1 etcd (boom)".to_string()]);
    }
}
