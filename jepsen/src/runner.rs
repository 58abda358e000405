//! `locker-jepsen test`: set up hosts, start the cluster, run workloads and
//! the nemesis, heal, check, report, tear down (also on error and Ctrl-C).

use crate::api::Api;
use crate::checker::{check_all, CheckOptions, Results};
use crate::client_hosts::ClientHosts;
use crate::cluster::{enter_netns, Cluster, HostKind, Hosts, NodeFlags};
use crate::history::{write_history, Recorder};
use crate::nemesis::{Fault, Nemesis};
use crate::report;
use crate::rng::Rng;
use crate::workload::{self, Ctx, Resource, TakeoverCfg, Via, Worker};
use crate::workload_run::{self, clients_needed, RunCfg};
use clap::builder::PossibleValue;
use clap::ValueEnum;
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// A workload. Its command-line name (`--workload`) is the kebab-case of
/// the variant, also written in results.json.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Mutex,
    Set,
    SetUnfenced,
    TakeoverHttp,
    TakeoverClient,
    Run,
    RunUnlocked,
    RunLib,
}

/// One item of `--workload`: a workload, `takeover` (both takeover
/// drivers) or `all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadItem {
    One(Workload),
    Takeover,
    All,
}

impl ValueEnum for WorkloadItem {
    fn value_variants<'a>() -> &'a [Self] {
        static ITEMS: std::sync::OnceLock<Vec<WorkloadItem>> = std::sync::OnceLock::new();
        ITEMS.get_or_init(|| {
            let one = Workload::value_variants()
                .iter()
                .map(|w| WorkloadItem::One(*w));
            one.chain([WorkloadItem::Takeover, WorkloadItem::All])
                .collect()
        })
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        match self {
            WorkloadItem::One(w) => w.to_possible_value(),
            WorkloadItem::Takeover => {
                Some(PossibleValue::new("takeover").help("takeover-http and takeover-client"))
            }
            WorkloadItem::All => Some(PossibleValue::new("all").help("every workload")),
        }
    }
}

/// The workloads of `items`, groups expanded, each once, in order; at least one.
pub fn expand_workloads(items: &[WorkloadItem]) -> anyhow::Result<Vec<Workload>> {
    let mut v = Vec::new();
    for item in items {
        let names: Vec<Workload> = match item {
            WorkloadItem::All => Workload::value_variants().to_vec(),
            WorkloadItem::Takeover => vec![Workload::TakeoverHttp, Workload::TakeoverClient],
            WorkloadItem::One(w) => vec![*w],
        };
        for n in names {
            if !v.contains(&n) {
                v.push(n);
            }
        }
    }
    anyhow::ensure!(!v.is_empty(), "no workload");
    Ok(v)
}

/// Parses `mutex,takeover,...` (see [`WorkloadItem`]).
pub fn parse_workloads(s: &str) -> anyhow::Result<Vec<Workload>> {
    let items = s
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(|w| {
            WorkloadItem::from_str(w, false).map_err(|e| anyhow::anyhow!("workload {w:?}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    expand_workloads(&items)
}

pub const UNFENCED_KEY: &str = "jepsen/set-unfenced";

#[derive(Clone, Debug)]
pub struct TestOpts {
    pub nodes: u64,
    pub nemesis: Vec<Fault>,
    pub workloads: Vec<Workload>,
    pub time_limit_s: u64,
    pub recovery_s: u64,
    pub out: PathBuf,
    pub seed: u64,
    pub node_bin: PathBuf,
    pub hosts: HostKind,
    pub interval_s: (u64, u64),
    pub duration_s: (u64, u64),
    pub process_ttl_ms: u64,
    /// The `locker` CLI binary (the `run` workload).
    pub locker_bin: Option<PathBuf>,
}

/// Runs one test; the returned results were also written to `out`.
pub fn run_test(o: TestOpts) -> anyhow::Result<Results> {
    std::fs::create_dir_all(&o.out)
        .map_err(|e| anyhow::anyhow!("create {}: {e}", o.out.display()))?;
    let mut rng = Rng::new(o.seed);
    let hosts = Hosts::new(o.hosts, &mut rng.fork(1));
    let extra = o.nemesis.contains(&Fault::Member) as u64;
    if hosts.kind == HostKind::Netns {
        eprintln!("[setup] namespaces {}-*", hosts.prefix);
    }
    hosts.setup(o.nodes + extra)?;
    let clients = Arc::new(ClientHosts::new(&hosts, clients_needed(&o.workloads)));
    if let Err(e) = clients.setup() {
        hosts.teardown();
        return Err(anyhow::Error::msg(e));
    }
    let h2 = hosts.clone();
    let joined = std::thread::Builder::new()
        .name("harness".into())
        .spawn(move || -> anyhow::Result<Results> {
            if h2.kind == HostKind::Netns {
                enter_netns(&h2.harness_ns())?;
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| anyhow::anyhow!("runtime: {e}"))?;
            rt.block_on(run_async(o, h2, rng, clients))
        })
        .map_err(|e| anyhow::anyhow!("spawn harness thread: {e}"))
        .and_then(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("the harness panicked"))
        });
    // Always, whatever happened above.
    hosts.teardown();
    joined?
}

async fn wait_ready(api: &Api, c: &Cluster, limit: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < end {
        let mut ok = 0;
        for &id in &c.members {
            match api.get_json(&format!("{}/readyz", c.hosts.url(id))).await {
                Some((200, _)) => ok += 1,
                Some((code, v)) => last = format!("node {id}: readyz {code} {v}"),
                None => last = format!("node {id}: no answer"),
            }
        }
        if ok == c.members.len() {
            return Ok(());
        }
        sleep(Duration::from_millis(300)).await;
    }
    Err(anyhow::anyhow!("cluster not ready after {limit:?}: {last}"))
}

async fn run_async(
    o: TestOpts,
    hosts: Hosts,
    mut rng: Rng,
    clients: Arc<ClientHosts>,
) -> anyhow::Result<Results> {
    let rec = Arc::new(Recorder::new(Some(&o.out.join("history.jsonl")))?);
    let (mut cluster, api) = start_cluster(&o, hosts, &mut rng).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let run_tag = format!("{:x}", rng.next_u64() & 0xffff);
    let start = Instant::now();
    let ctx = Arc::new(Ctx {
        rec: rec.clone(),
        api: api.clone(),
        urls: cluster.urls(),
        deadline: start + Duration::from_secs(o.time_limit_s + o.recovery_s),
        stop: stop.clone(),
        stall_requests: AtomicU64::new(0),
        kill_holder: tokio::sync::Notify::new(),
        run_tag,
        clients: clients.clone(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let spawned = spawn_workloads(&o, &ctx, &mut rng, &clients, &mut tasks)?;
    let mut nemesis = Nemesis {
        faults: o.nemesis.clone(),
        rng: rng.fork(99),
        rec: rec.clone(),
        api: api.clone(),
        ctx: ctx.clone(),
        interval_s: o.interval_s,
        duration_s: o.duration_s,
        log: Vec::new(),
        state: Default::default(),
    };
    let nemesis_until = start + Duration::from_secs(o.time_limit_s);
    let (interrupted, recovered) =
        drive(&mut nemesis, &mut cluster, &api, &ctx, nemesis_until).await?;
    stop.store(true, Ordering::SeqCst);
    if interrupted {
        eprintln!("[stop] interrupted: stopping workers and nodes");
        // Make sure nothing stays paused or cut off while we wind down.
        nemesis.heal_all(&mut cluster).await;
    }
    wind_down(tasks, &spawned, &rec, &mut cluster, interrupted).await?;
    let run = RunEnd {
        election_timeout_ms: cluster.election_timeout_ms,
        nemesis_log: nemesis.log,
        interrupted,
        recovered,
    };
    check_and_report(&o, &rec, run)
}

/// Starts every node and waits until the cluster serves (node log tails in
/// the error if it never does).
async fn start_cluster(
    o: &TestOpts,
    hosts: Hosts,
    rng: &mut Rng,
) -> anyhow::Result<(Cluster, Api)> {
    let secret = format!("jepsen-{}", rng.next_u64());
    let mut cluster = Cluster::new(
        hosts,
        o.node_bin.clone(),
        o.out.join("nodes"),
        o.nodes,
        secret,
    );
    // Longer than the node's leader wait (3 s) and write timeout (5 s), so
    // most faults end in a definite 503 rather than an unknown timeout.
    let api = Api::new(Duration::from_millis(6_500))?;
    crate::power_loss::prepare(&mut cluster, &o.nemesis, &o.out)?;
    for id in 1..=o.nodes {
        cluster.start(id, NodeFlags::default())?;
    }
    if let Err(e) = wait_ready(&api, &cluster, Duration::from_secs(60)).await {
        let tails: Vec<String> = (1..=o.nodes)
            .map(|i| format!("--- node {i} ---\n{}", cluster.node_log_tail(i, 15)))
            .collect();
        cluster.stop_all().await;
        return Err(anyhow::anyhow!("{e}\n{}", tails.join("\n")));
    }
    eprintln!(
        "[setup] cluster of {} ready at {}",
        o.nodes,
        cluster.urls().join(" ")
    );
    Ok((cluster, api))
}

/// What the workloads left to finish after the run: protected sets to read,
/// the run workload's shared record.
struct Spawned {
    resources: Vec<Arc<Resource>>,
    run_cfg: Option<anyhow::Result<Arc<RunCfg>>>,
}

/// Spawns every worker of every workload.
fn spawn_workloads(
    o: &TestOpts,
    ctx: &Arc<Ctx>,
    rng: &mut Rng,
    clients: &Arc<ClientHosts>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<Spawned> {
    let exe = std::env::current_exe().map_err(|e| anyhow::anyhow!("current exe: {e}"))?;
    let mut next_id = 1u64;
    let mut sp = Spawned {
        resources: Vec::new(),
        run_cfg: None,
    };
    let mut worker = |rng: &mut Rng| {
        let wk = Worker::new(next_id, ctx.clone(), rng.fork(next_id));
        next_id += 1;
        wk
    };
    for &w in &o.workloads {
        match w {
            Workload::Mutex => {
                for k in 0..3 {
                    for _ in 0..3 {
                        let key = format!("jepsen/mutex/{k}");
                        tasks.spawn(workload::mutex_worker(worker(rng), key));
                    }
                }
            }
            Workload::Set | Workload::SetUnfenced => {
                let fenced = w == Workload::Set;
                let key = if fenced { "jepsen/set" } else { UNFENCED_KEY };
                let res = Arc::new(Resource::new(key, fenced));
                sp.resources.push(res.clone());
                for _ in 0..4 {
                    tasks.spawn(workload::set_worker(
                        worker(rng),
                        key.to_string(),
                        res.clone(),
                    ));
                }
            }
            Workload::TakeoverHttp | Workload::TakeoverClient => {
                let (via, key) = if w == Workload::TakeoverHttp {
                    (Via::Http, "jepsen/takeover")
                } else {
                    (Via::Client, "jepsen/takeover-client")
                };
                let cfg = Arc::new(TakeoverCfg {
                    exe: exe.clone(),
                    process_ttl_ms: o.process_ttl_ms,
                    keepalive_ms: (o.process_ttl_ms / 4).max(100),
                    via,
                    host: workload_run::takeover_host(via),
                });
                let wk = worker(rng);
                let holder = 5_000 + wk.id;
                tasks.spawn(workload::takeover_worker(wk, holder, key.into(), cfg));
            }
            Workload::Run | Workload::RunUnlocked | Workload::RunLib => {
                let cfg = sp.run_cfg.get_or_insert_with(|| {
                    let bin = o.locker_bin.clone().unwrap_or_default();
                    RunCfg::new(&o.out, exe.clone(), bin, o.process_ttl_ms, clients.clone())
                        .map(Arc::new)
                });
                workload_run::spawn(
                    tasks,
                    w,
                    ctx,
                    cfg.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?,
                    rng,
                );
            }
        }
    }
    Ok(sp)
}

/// Runs the nemesis until `until`, waits for the healed cluster and the end
/// of the recovery time, unless SIGINT/SIGTERM comes first. Returns
/// (interrupted, recovered after the heal).
async fn drive(
    nemesis: &mut Nemesis,
    cluster: &mut Cluster,
    api: &Api,
    ctx: &Ctx,
    until: Instant,
) -> anyhow::Result<(bool, bool)> {
    let mut recovered = true;
    let main = async {
        nemesis.run(cluster, until).await;
        if let Err(e) = wait_ready(api, cluster, Duration::from_secs(60)).await {
            eprintln!("[heal] {e}");
            recovered = false;
        } else {
            eprintln!("[heal] cluster ready again");
        }
        tokio::time::sleep_until(ctx.deadline).await;
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| anyhow::anyhow!("signal handler: {e}"))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| anyhow::anyhow!("signal handler: {e}"))?;
    let interrupted = tokio::select! {
        _ = main => false,
        Some(()) = int.recv() => {
            eprintln!("[stop] SIGINT");
            true
        }
        Some(()) = term.recv() => {
            eprintln!("[stop] SIGTERM");
            true
        }
    };
    Ok((interrupted, recovered))
}

/// Lets the workers finish (20 s at most), records the final reads and the
/// replicas' digests, stops the nodes, collects the run workload's record.
async fn wind_down(
    mut tasks: tokio::task::JoinSet<()>,
    sp: &Spawned,
    rec: &Arc<Recorder>,
    cluster: &mut Cluster,
    interrupted: bool,
) -> anyhow::Result<()> {
    let drain = tokio::time::timeout(Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drain.is_err() {
        tasks.abort_all();
    }
    for (i, r) in sp.resources.iter().enumerate() {
        workload::final_read(rec, 9_000 + i as u64, r);
    }
    if !interrupted {
        // Checker 6's input, once the workers are quiet (see replicas.rs).
        let admin = crate::admin::Admin::new(&cluster.secret, Duration::from_secs(3))?;
        let limit = Duration::from_secs(20);
        let got = crate::replicas::collect(&admin, cluster, rec, limit).await;
        eprintln!("[replicas] {got}");
    }
    cluster.stop_all().await;
    if let Some(Ok(cfg)) = &sp.run_cfg {
        match workload_run::collect(rec, &cfg.record) {
            Ok(n) => eprintln!("[run] {n} jobs recorded"),
            Err(e) => eprintln!("[run] {e}"),
        }
    }
    rec.flush();
    Ok(())
}

/// How the run ended, for the checkers and the report.
struct RunEnd {
    election_timeout_ms: u64,
    nemesis_log: Vec<String>,
    interrupted: bool,
    recovered: bool,
}

/// Checks the history and writes it, results.json and the report.
fn check_and_report(o: &TestOpts, rec: &Recorder, run: RunEnd) -> anyhow::Result<Results> {
    let ops = rec.snapshot();
    // Rewrite in time order (helper-process lines may have arrived late).
    write_history(&o.out.join("history.jsonl"), &ops)?;
    let opts = CheckOptions {
        drift: 0.1,
        election_timeout_ms: run.election_timeout_ms + 3_000,
        slack_ms: 3_000,
        progress_bound_ms: 15_000,
        unfenced_keys: vec![UNFENCED_KEY.to_string()],
        ..CheckOptions::default()
    };
    let results = check_all(&ops, &opts);
    let meta = json!({
        "nodes": o.nodes,
        "hosts": format!("{:?}", o.hosts).to_lowercase(),
        "nemesis": o.nemesis.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "workloads": o.workloads,
        "time_limit_s": o.time_limit_s,
        "recovery_s": o.recovery_s,
        "seed": o.seed,
        "node_bin": o.node_bin.display().to_string(),
        "ops": ops.len(),
        "interrupted": run.interrupted,
        "recovered_after_heal": run.recovered,
        "nemesis_log": run.nemesis_log,
    });
    report::write_all(&o.out, &ops, &results, &meta)?;
    if run.interrupted {
        return Err(anyhow::anyhow!(
            "interrupted; partial results in {}: {}",
            o.out.display(),
            results.verdict
        ));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_lists_parse() {
        use Workload::*;
        assert_eq!(
            parse_workloads("mutex,takeover").expect("parse"),
            vec![Mutex, TakeoverHttp, TakeoverClient]
        );
        assert_eq!(
            parse_workloads("takeover-client,takeover").expect("parse"),
            vec![TakeoverClient, TakeoverHttp]
        );
        assert_eq!(
            parse_workloads("all").expect("parse").len(),
            Workload::value_variants().len()
        );
        assert!(parse_workloads("nap").is_err());
        assert!(parse_workloads(",").is_err());
        let names = serde_json::to_value(Workload::value_variants()).expect("names");
        assert_eq!(
            names,
            json!([
                "mutex",
                "set",
                "set-unfenced",
                "takeover-http",
                "takeover-client",
                "run",
                "run-unlocked",
                "run-lib"
            ])
        );
    }
}
