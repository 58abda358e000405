//! `locker-jepsen`: fault-injection test suite and benchmark for Locker.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use locker_jepsen::checker::{check_all, CheckOptions, Validity};
use locker_jepsen::client_api;
use locker_jepsen::cluster::{cleanup_prefix, HostKind};
use locker_jepsen::history::read_history;
use locker_jepsen::job_beat::{job_beat_main, BeatArgs};
use locker_jepsen::lib_job::{lib_job_main, LibJobArgs};
use locker_jepsen::mutations;
use locker_jepsen::nemesis::{expand, Fault, NemesisItem};
use locker_jepsen::report;
use locker_jepsen::runner::{
    expand_workloads, run_test, TestOpts, Workload, WorkloadItem, UNFENCED_KEY,
};
use locker_jepsen::workload::{holder_main, HolderArgs, Via};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "locker-jepsen",
    version,
    about = "Jepsen-style tests and benchmark for Locker"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a cluster under faults, record a history, check it, write a report.
    /// Exit code: 0 valid, 1 invalid, 2 unknown, 3 harness error.
    Test(TestArgs),
    /// Benchmark: Locker side by side with etcd and Redis (bench.json,
    /// bench.md and SVG plots in --out).
    Bench(locker_jepsen::bench::BenchArgs),
    /// Re-check a recorded history and rewrite results.json/report.html.
    Check(CheckArgs),
    /// Mutation runs: each test-only node mutation (node built with
    /// --features locker-node/mutations) must be judged invalid by the checker
    /// meant to catch it, and the unfenced twin must fail. Exit 0 only if
    /// every run did; summary in OUT/mutations.json.
    Mutations(MutationArgs),
    /// Remove namespaces (and their processes) left by a killed run.
    Cleanup {
        #[arg(long, default_value = "lkj")]
        prefix: String,
    },
    /// Internal: the job of the run workload: appends timestamped heartbeats
    /// to a shared record until its run is over (see job_beat.rs).
    #[command(hide = true)]
    JobBeat(BeatArgs),
    /// Internal: the job of the run-lib workload: takes KEY through the
    /// client library and beats while its heartbeat says the lock is held.
    #[command(hide = true)]
    LibJob(LibJobArgs),
    /// Internal: the lock-holding helper process of the takeover workload.
    #[command(hide = true)]
    Holder(HolderArgs),
}

#[derive(Args)]
struct TestArgs {
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Faults or fault families, comma-separated (`none`: no fault).
    #[arg(long, value_delimiter = ',', default_value = "kill,pause,partition")]
    nemesis: Vec<NemesisItem>,
    /// Workloads, comma-separated: mutex, set, set-unfenced, takeover-http,
    /// takeover-client, takeover (both takeover drivers), run (`locker run`
    /// jobs), run-unlocked (the same without a lock: a negative control),
    /// run-lib (jobs holding the lock through the client library), all.
    #[arg(long, value_delimiter = ',', default_value = "mutex,set,takeover")]
    workload: Vec<WorkloadItem>,
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Seconds of fault-free load after the final heal.
    #[arg(long, default_value_t = 20)]
    recovery: u64,
    #[arg(long, default_value = "jepsen-out")]
    out: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// netns (default; needs root) or local (127.0.0.1, no network faults).
    #[arg(long, value_enum, default_value_t = HostKind::Netns)]
    hosts: HostKind,
    /// Seconds between faults, min and max.
    #[arg(long, default_value = "2,5", value_parser = pair)]
    interval: (u64, u64),
    /// Seconds a fault lasts, min and max.
    #[arg(long, default_value = "3,8", value_parser = pair)]
    fault_duration: (u64, u64),
    /// Keep-alive ttl of the takeover workload's holder processes.
    #[arg(long, default_value_t = 2_000)]
    process_ttl_ms: u64,
    /// Exit 1 unless the unfenced negative control lost writes (proves the
    /// pause nemesis bites).
    #[arg(long)]
    require_negative_control_failure: bool,
    /// The `locker` CLI binary for the run workload (default: next to
    /// this binary).
    #[arg(long)]
    locker_bin: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    #[arg(long)]
    history: PathBuf,
    #[arg(long)]
    out: Option<PathBuf>,
    /// Clock-rate allowance (default: the run's, else 0.1).
    #[arg(long)]
    drift: Option<f64>,
}

#[derive(Args)]
struct MutationArgs {
    /// Short runs (30-40 s each), as CI uses.
    #[arg(long)]
    short: bool,
    /// Comma-separated cases (no-takeover-shift, early-lease,
    /// token-not-index, ack-before-fsync, unfenced-twin); default all.
    #[arg(long, default_value = "")]
    only: String,
    /// Also run each case on the unmutated node, which must be valid.
    #[arg(long)]
    baseline: bool,
    #[arg(long, default_value = "jepsen-mutations")]
    out: PathBuf,
    #[arg(long)]
    node_bin: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = HostKind::Netns)]
    hosts: HostKind,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The command-line name of a value enum (e.g. `netns`).
fn arg_name(v: &impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

fn pair(s: &str) -> Result<(u64, u64)> {
    let v: Vec<u64> = s
        .split(',')
        .map(|x| x.trim().parse::<u64>().with_context(|| format!("{s:?}")))
        .collect::<Result<_>>()?;
    match v.as_slice() {
        [a] => Ok((*a, *a)),
        [a, b] if a <= b => Ok((*a, *b)),
        _ => bail!("expected MIN,MAX, got {s:?}"),
    }
}

/// The node binary: the flag, else release, else debug build in the workspace.
fn node_bin(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = flag {
        anyhow::ensure!(p.exists(), "node binary {} not found", p.display());
        return std::fs::canonicalize(&p).with_context(|| p.display().to_string());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for c in ["target/release/locker-node", "target/debug/locker-node"] {
        let p = root.join(c);
        if p.exists() {
            return std::fs::canonicalize(&p).with_context(|| p.display().to_string());
        }
    }
    bail!(
        "no locker-node binary: build it (cargo build -p locker-node --release) or pass --node-bin"
    )
}

/// The `locker` CLI: the flag, else next to this binary; needed only by the
/// run workload.
fn locker_bin_path(flag: Option<PathBuf>, workloads: &[Workload]) -> Result<Option<PathBuf>> {
    let needed = workloads.contains(&Workload::Run);
    let p = match flag {
        Some(p) => p,
        None => std::env::current_exe()
            .context("current exe")?
            .with_file_name("locker"),
    };
    match std::fs::canonicalize(&p) {
        Ok(p) => Ok(Some(p)),
        Err(e) if needed => Err(anyhow!(
            "the run workload needs the locker CLI: {}: {e} (cargo build -p locker-client, or --locker-bin)",
            p.display()
        )),
        Err(_) => Ok(None),
    }
}

fn exit_for(v: Validity) -> ExitCode {
    match v {
        Validity::Valid => ExitCode::SUCCESS,
        Validity::Invalid => ExitCode::from(1),
        Validity::Unknown => ExitCode::from(2),
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("locker-jepsen: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    // Bad arguments exit 3 (harness error) like every other setup failure:
    // clap's own code for them, 2, means "unknown" for `test`.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Ok(if e.use_stderr() {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            });
        }
    };
    match cli.cmd {
        Cmd::Test(a) => test_cmd(a),
        Cmd::Bench(a) => bench_cmd(a),
        Cmd::Check(a) => check_cmd(a),
        Cmd::Mutations(a) => mutations_cmd(a),
        Cmd::Cleanup { prefix } => cleanup_cmd(&prefix),
        Cmd::JobBeat(a) => {
            job_beat_main(a)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::LibJob(a) => lib_job_cmd(a),
        Cmd::Holder(a) => holder_cmd(a),
    }
}

/// The faults to inject: `--nemesis` expanded, minus the network faults
/// `--hosts local` cannot make (said on stderr).
fn faults_for(items: &[NemesisItem], hosts: HostKind) -> Vec<Fault> {
    let mut faults = expand(items);
    if faults.contains(&Fault::CrashPoint) {
        locker_jepsen::crash_point::small_snapshots();
    }
    if hosts == HostKind::Local {
        let dropped: Vec<String> = faults
            .iter()
            .filter(|f| f.needs_network())
            .map(|f| f.name())
            .collect();
        if !dropped.is_empty() {
            eprintln!(
                "[setup] --hosts local: skipping network faults {}",
                dropped.join(",")
            );
        }
        faults.retain(|f| !f.needs_network());
    }
    faults
}

fn test_cmd(a: TestArgs) -> Result<ExitCode> {
    let workloads = expand_workloads(&a.workload)?;
    let opts = TestOpts {
        nodes: a.nodes,
        nemesis: faults_for(&a.nemesis, a.hosts),
        locker_bin: locker_bin_path(a.locker_bin, &workloads)?,
        workloads,
        time_limit_s: a.time_limit,
        recovery_s: a.recovery,
        out: a.out.clone(),
        seed: a.seed,
        node_bin: node_bin(a.node_bin)?,
        hosts: a.hosts,
        interval_s: a.interval,
        duration_s: a.fault_duration,
        process_ttl_ms: a.process_ttl_ms,
    };
    let r = run_test(opts)?;
    println!("{}", report::terminal_summary(&r));
    println!("report: {}", a.out.join("report.html").display());
    if a.require_negative_control_failure && r.negative_control_failed != Some(true) {
        eprintln!("the unfenced negative control did not fail: the faults did not bite");
        return Ok(ExitCode::from(1));
    }
    Ok(exit_for(r.valid))
}

fn bench_cmd(a: locker_jepsen::bench::BenchArgs) -> Result<ExitCode> {
    locker_jepsen::bench::main(a)
}

/// The run's own options and parameters, when its results.json sits next
/// to the history: a re-check judges by the same bounds.
fn previous_results(history: &std::path::Path) -> Option<serde_json::Value> {
    history
        .parent()
        .map(|d| d.join("results.json"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
}

fn check_cmd(a: CheckArgs) -> Result<ExitCode> {
    let ops = read_history(&a.history)?;
    let prev = previous_results(&a.history);
    let mut opts = prev
        .as_ref()
        .and_then(|v| serde_json::from_value::<CheckOptions>(v["options"].clone()).ok())
        .unwrap_or_else(|| CheckOptions {
            unfenced_keys: vec![UNFENCED_KEY.to_string()],
            ..CheckOptions::default()
        });
    if let Some(d) = a.drift {
        opts.drift = d;
    }
    let r = check_all(&ops, &opts);
    let dir = a
        .out
        .unwrap_or_else(|| a.history.parent().map(PathBuf::from).unwrap_or_default());
    let mut meta = prev
        .map(|v| v["run"].clone())
        .filter(|v| v.is_object())
        .unwrap_or_else(|| serde_json::json!({}));
    meta["rechecked_history"] = serde_json::json!(a.history.display().to_string());
    report::write_all(&dir, &ops, &r, &meta)?;
    println!("{}", report::terminal_summary(&r));
    Ok(exit_for(r.valid))
}

fn mutations_cmd(a: MutationArgs) -> Result<ExitCode> {
    let opts = mutations::MutationOpts {
        exe: std::env::current_exe().context("current exe")?,
        node_bin: node_bin(a.node_bin)?,
        hosts: arg_name(&a.hosts),
        out: a.out.clone(),
        short: a.short,
        only: a
            .only
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        baseline: a.baseline,
        seed: a.seed,
    };
    let (summary, ok) = mutations::run_all(&opts)?;
    for r in summary["runs"].as_array().into_iter().flatten() {
        println!("{}", mutations::line(r));
    }
    println!("summary: {}", a.out.join("mutations.json").display());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn cleanup_cmd(prefix: &str) -> Result<ExitCode> {
    anyhow::ensure!(
        prefix.starts_with("lkj"),
        "refusing to remove namespaces not made by locker-jepsen (prefix must start with lkj)"
    );
    let removed = cleanup_prefix(prefix);
    println!(
        "removed {} namespaces: {}",
        removed.len(),
        removed.join(" ")
    );
    Ok(ExitCode::SUCCESS)
}

fn lib_job_cmd(a: LibJobArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("runtime")?;
    let code = rt.block_on(lib_job_main(a))?;
    Ok(ExitCode::from(code))
}

fn holder_cmd(a: HolderArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    match a.via {
        Via::Client => rt.block_on(client_api::holder_main(a))?,
        Via::Http => rt.block_on(holder_main(a))?,
    }
    Ok(ExitCode::SUCCESS)
}
