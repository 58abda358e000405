//! `locker-jepsen`: fault-injection test suite and benchmark for Locker.

use clap::{Parser, Subcommand};
use locker_jepsen::bench::{run_bench, BenchOpts};
use locker_jepsen::checker::{check_all, CheckOptions, Validity};
use locker_jepsen::client_api;
use locker_jepsen::cluster::{cleanup_prefix, HostKind};
use locker_jepsen::history::read_history;
use locker_jepsen::job_beat::{job_beat_main, BeatArgs, OnTerm};
use locker_jepsen::lib_job::{lib_job_main, LibJobArgs};
use locker_jepsen::mutations;
use locker_jepsen::nemesis::{parse_list, Fault};
use locker_jepsen::report;
use locker_jepsen::runner::{parse_workloads, run_test, TestOpts, UNFENCED_KEY};
use locker_jepsen::workload::{holder_main, HolderArgs};
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
    Test {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
        nodes: u64,
        /// Faults or families: kill, pause, partition, clock, membership, all,
        /// none, or single faults such as kill-leader, partition-ring, loss.
        #[arg(long, default_value = "kill,pause,partition")]
        nemesis: String,
        /// mutex, set, set-unfenced, takeover-http, takeover-client,
        /// takeover (both takeover drivers), run (`locker run` jobs),
        /// run-unlocked (the same without a lock: a negative control),
        /// run-lib (jobs holding the lock through the client library), all.
        #[arg(long, default_value = "mutex,set,takeover")]
        workload: String,
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
        #[arg(long, default_value = "netns")]
        hosts: String,
        /// Seconds between faults, min and max.
        #[arg(long, default_value = "2,5")]
        interval: String,
        /// Seconds a fault lasts, min and max.
        #[arg(long, default_value = "3,8")]
        fault_duration: String,
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
    },
    /// Benchmark: acquire+release cycles/s and latency at given concurrencies.
    Bench {
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[arg(long, default_value = "1,64")]
        concurrency: String,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value = "bench-out")]
        out: PathBuf,
        #[arg(long)]
        node_bin: Option<PathBuf>,
        #[arg(long, default_value = "netns")]
        hosts: String,
        /// Benchmark an existing cluster (comma-separated URLs) instead.
        #[arg(long)]
        endpoints: Option<String>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Re-check a recorded history and rewrite results.json/report.html.
    Check {
        #[arg(long)]
        history: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Clock-rate allowance (default: the run's, else 0.1).
        #[arg(long)]
        drift: Option<f64>,
    },
    /// Mutation runs: each test-only node mutation (node built with
    /// --features locker-node/mutations) must be judged invalid by the checker
    /// meant to catch it, and the unfenced twin must fail. Exit 0 only if
    /// every run did; summary in OUT/mutations.json.
    Mutations {
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
        #[arg(long, default_value = "netns")]
        hosts: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Remove namespaces (and their processes) left by a killed run.
    Cleanup {
        #[arg(long, default_value = "lkj")]
        prefix: String,
    },
    /// Internal: the job of the run workload: appends timestamped heartbeats
    /// to a shared record until its run is over (see job_beat.rs).
    #[command(hide = true)]
    JobBeat {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        key: String,
        #[arg(long)]
        job: String,
        #[arg(long, default_value_t = 1_000)]
        run_ms: u64,
        #[arg(long, default_value_t = 30)]
        interval_ms: u64,
        /// exit, ignore or linger:MS
        #[arg(long, default_value = "exit")]
        on_term: String,
    },
    /// Internal: the job of the run-lib workload: takes KEY through the
    /// client library and beats while its heartbeat says the lock is held.
    #[command(hide = true)]
    LibJob {
        #[arg(long)]
        urls: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        key: String,
        #[arg(long)]
        job: String,
        #[arg(long, default_value_t = 1_000)]
        run_ms: u64,
        #[arg(long, default_value_t = 30)]
        interval_ms: u64,
        #[arg(long, default_value_t = 5_000)]
        wait_ms: u64,
        #[arg(long, default_value_t = 2_000)]
        process_ttl_ms: u64,
    },
    /// Internal: the lock-holding helper process of the takeover workload.
    #[command(hide = true)]
    Holder {
        #[arg(long)]
        urls: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        owner: String,
        #[arg(long)]
        process_hash: String,
        #[arg(long)]
        process_ttl_ms: u64,
        #[arg(long)]
        keepalive_ms: u64,
        #[arg(long, default_value_t = 120)]
        max_secs: u64,
        /// http (raw API calls) or client (the locker_client library).
        #[arg(long, default_value = "http")]
        via: String,
    },
}

fn hosts_kind(s: &str) -> Result<HostKind, String> {
    match s {
        "netns" => Ok(HostKind::Netns),
        "local" => Ok(HostKind::Local),
        other => Err(format!("unknown hosts {other:?} (netns or local)")),
    }
}

fn pair(s: &str) -> Result<(u64, u64), String> {
    let v: Vec<u64> = s
        .split(',')
        .map(|x| x.trim().parse::<u64>().map_err(|e| format!("{s:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [a] => Ok((*a, *a)),
        [a, b] if a <= b => Ok((*a, *b)),
        _ => Err(format!("expected MIN,MAX, got {s:?}")),
    }
}

/// The node binary: the flag, else release, else debug build in the workspace.
fn node_bin(flag: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = flag {
        return if p.exists() {
            std::fs::canonicalize(&p).map_err(|e| format!("{}: {e}", p.display()))
        } else {
            Err(format!("node binary {} not found", p.display()))
        };
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for c in ["target/release/locker-node", "target/debug/locker-node"] {
        let p = root.join(c);
        if p.exists() {
            return std::fs::canonicalize(&p).map_err(|e| e.to_string());
        }
    }
    Err(
        "no locker-node binary: build it (cargo build -p locker-node --release) or pass --node-bin"
            .into(),
    )
}

/// The `locker` CLI: the flag, else next to this binary; needed only by the
/// run workload.
fn locker_bin_path(flag: Option<PathBuf>, workloads: &str) -> Result<Option<PathBuf>, String> {
    let needed = parse_workloads(workloads)?.iter().any(|w| w == "run");
    let p = match flag {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| format!("current exe: {e}"))?
            .with_file_name("locker"),
    };
    match std::fs::canonicalize(&p) {
        Ok(p) => Ok(Some(p)),
        Err(e) if needed => Err(format!(
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
            eprintln!("locker-jepsen: {e}");
            ExitCode::from(3)
        }
    }
}

fn real_main() -> Result<ExitCode, String> {
    match Cli::parse().cmd {
        Cmd::Test {
            nodes,
            nemesis,
            workload,
            time_limit,
            recovery,
            out,
            seed,
            node_bin: nb,
            hosts,
            interval,
            fault_duration,
            process_ttl_ms,
            require_negative_control_failure,
            locker_bin,
        } => {
            let hosts = hosts_kind(&hosts)?;
            let mut faults = parse_list(&nemesis)?;
            if faults.contains(&Fault::CrashPoint) {
                locker_jepsen::crash_point::small_snapshots();
            }
            if hosts == HostKind::Local {
                let dropped: Vec<&str> = faults
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
            let opts = TestOpts {
                nodes,
                nemesis: faults,
                workloads: parse_workloads(&workload)?,
                time_limit_s: time_limit,
                recovery_s: recovery,
                out: out.clone(),
                seed,
                node_bin: node_bin(nb)?,
                hosts,
                interval_s: pair(&interval)?,
                duration_s: pair(&fault_duration)?,
                process_ttl_ms,
                locker_bin: locker_bin_path(locker_bin, &workload)?,
            };
            let r = run_test(opts)?;
            println!("{}", report::terminal_summary(&r));
            println!("report: {}", out.join("report.html").display());
            if require_negative_control_failure && r.negative_control_failed != Some(true) {
                eprintln!("the unfenced negative control did not fail: the faults did not bite");
                return Ok(ExitCode::from(1));
            }
            Ok(exit_for(r.valid))
        }
        Cmd::Bench {
            nodes,
            concurrency,
            duration,
            out,
            node_bin: nb,
            hosts,
            endpoints,
            seed,
        } => {
            let conc: Vec<usize> = concurrency
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse::<usize>()
                        .map_err(|e| format!("--concurrency: {e}"))
                })
                .collect::<Result<_, _>>()?;
            if conc.iter().any(|&c| c == 0 || c > 1024) {
                return Err("--concurrency values must be 1..=1024".into());
            }
            let endpoints: Vec<String> = endpoints
                .map(|e| {
                    e.split(',')
                        .map(|s| s.trim().trim_end_matches('/').to_string())
                        .collect()
                })
                .unwrap_or_default();
            let node_bin = if endpoints.is_empty() {
                node_bin(nb)?
            } else {
                PathBuf::new()
            };
            let r = run_bench(BenchOpts {
                nodes,
                hosts: hosts_kind(&hosts)?,
                node_bin,
                endpoints,
                concurrency: conc,
                duration_s: duration,
                out: out.clone(),
                seed,
            })?;
            for l in r["levels"].as_array().into_iter().flatten() {
                println!(
                    "{:>4} clients: {:>8.1} cycles/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
                    l["clients"],
                    l["cycles_per_s"].as_f64().unwrap_or(0.0),
                    l["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
                    l["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
                    l["errors"]
                );
            }
            println!("report: {}", out.join("bench.html").display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check {
            history,
            out,
            drift,
        } => {
            let ops = read_history(&history)?;
            // The run's own options and parameters, when its results.json
            // sits next to the history: a re-check judges by the same bounds.
            let prev: Option<serde_json::Value> = history
                .parent()
                .map(|d| d.join("results.json"))
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| serde_json::from_str(&t).ok());
            let mut opts = prev
                .as_ref()
                .and_then(|v| serde_json::from_value::<CheckOptions>(v["options"].clone()).ok())
                .unwrap_or_else(|| CheckOptions {
                    unfenced_keys: vec![UNFENCED_KEY.to_string()],
                    ..CheckOptions::default()
                });
            if let Some(d) = drift {
                opts.drift = d;
            }
            let r = check_all(&ops, &opts);
            let dir =
                out.unwrap_or_else(|| history.parent().map(PathBuf::from).unwrap_or_default());
            let mut meta = prev
                .map(|v| v["run"].clone())
                .filter(|v| v.is_object())
                .unwrap_or_else(|| serde_json::json!({}));
            meta["rechecked_history"] = serde_json::json!(history.display().to_string());
            report::write_all(&dir, &ops, &r, &meta)?;
            println!("{}", report::terminal_summary(&r));
            Ok(exit_for(r.valid))
        }
        Cmd::Mutations {
            short,
            only,
            baseline,
            out,
            node_bin: nb,
            hosts,
            seed,
        } => {
            hosts_kind(&hosts)?;
            let opts = mutations::MutationOpts {
                exe: std::env::current_exe().map_err(|e| format!("current exe: {e}"))?,
                node_bin: node_bin(nb)?,
                hosts,
                out: out.clone(),
                short,
                only: only
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                baseline,
                seed,
            };
            let (summary, ok) = mutations::run_all(&opts)?;
            for r in summary["runs"].as_array().into_iter().flatten() {
                println!("{}", mutations::line(r));
            }
            println!("summary: {}", out.join("mutations.json").display());
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Cleanup { prefix } => {
            if !prefix.starts_with("lkj") {
                return Err("refusing to remove namespaces not made by locker-jepsen (prefix must start with lkj)".into());
            }
            let removed = cleanup_prefix(&prefix);
            println!(
                "removed {} namespaces: {}",
                removed.len(),
                removed.join(" ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::JobBeat {
            file,
            key,
            job,
            run_ms,
            interval_ms,
            on_term,
        } => {
            job_beat_main(BeatArgs {
                file,
                key,
                job,
                run_ms: run_ms.min(600_000),
                interval_ms,
                on_term: OnTerm::parse(&on_term)?,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::LibJob {
            urls,
            file,
            key,
            job,
            run_ms,
            interval_ms,
            wait_ms,
            process_ttl_ms,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            let code = rt.block_on(lib_job_main(LibJobArgs {
                urls: urls.split(',').map(str::to_string).collect(),
                file,
                key,
                job,
                run_ms: run_ms.min(600_000),
                interval_ms,
                wait_ms: wait_ms.min(600_000),
                process_ttl_ms,
            }))?;
            Ok(ExitCode::from(code))
        }
        Cmd::Holder {
            urls,
            key,
            owner,
            process_hash,
            process_ttl_ms,
            keepalive_ms,
            max_secs,
            via,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            let urls: Vec<String> = urls.split(',').map(str::to_string).collect();
            if via == "client" {
                rt.block_on(client_api::holder_main(client_api::ClientHolderArgs {
                    urls,
                    key,
                    process_ttl_ms,
                    keepalive_ms,
                    max_secs: max_secs.min(3_600),
                }))?;
                return Ok(ExitCode::SUCCESS);
            } else if via != "http" {
                return Err(format!("unknown --via {via:?} (http or client)"));
            }
            rt.block_on(holder_main(HolderArgs {
                urls,
                key,
                owner,
                process_hash,
                process_ttl_ms,
                keepalive_ms,
                max_secs: max_secs.min(3_600),
            }))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
