//! `locker-jepsen lib-job`: the `run-lib` workload's job, driven through the
//! Rust client library instead of `locker run`. It takes the key through a
//! `locker_client::Locker` (waiting in the queue), then does its "work":
//! calls `Heartbeater::heartbeat()` and, only while that says the lock is
//! still ours, appends a heartbeat line to the shared record (same format
//! as `job_beat`). When the library reports the lock lost (or its local
//! deadline passes, e.g. when the client is cut off) the job stops at once.
//! The checker then proves that the library's own loss detection keeps two
//! library-driven jobs of a key from ever running at once.

use crate::job_beat::{beat_line, JobArgs, MAX_RUN_MS};
use locker_client::{AcquireOptions, AcquireResult, Locker, LockerOptions};
use std::io::Write;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// `locker-jepsen lib-job` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct LibJobArgs {
    /// The cluster's client URLs (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub urls: Vec<String>,
    #[command(flatten)]
    pub run: JobArgs,
    /// How long to wait in the key's queue (at most 600000).
    #[arg(long, default_value_t = 5_000)]
    pub wait_ms: u64,
    #[arg(long, default_value_t = 2_000)]
    pub process_ttl_ms: u64,
}

/// Exit codes, as `locker run`'s: 0 done, 3 held, 5 lost, 1 error.
pub async fn lib_job_main(args: LibJobArgs) -> anyhow::Result<u8> {
    let a = &args.run;
    let locker = locker_for(&args)?;
    let opts = AcquireOptions {
        trace: None,
        wait_ms: (args.wait_ms > 0).then_some(args.wait_ms.min(600_000)),
    };
    let acq = match locker.acquire_with(&a.key, opts).await {
        Ok(AcquireResult::Success(acq)) => acq,
        Ok(AcquireResult::SomeoneElseHoldsLock(_)) => {
            locker.terminate().await;
            return Ok(3);
        }
        Err(e) => {
            eprintln!("lib-job: acquire: {e}");
            locker.terminate().await;
            return Ok(1);
        }
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.file)
        .map_err(|e| anyhow::anyhow!("open {}: {e}", a.file.display()))?;
    let hb = acq.heartbeater();
    let end = Instant::now() + Duration::from_millis(a.run_ms.min(MAX_RUN_MS));
    let mut code = 0u8;
    let mut first = true;
    while Instant::now() < end {
        if let Err(e) = hb.heartbeat().await {
            eprintln!("lib-job: stopping: {e}");
            code = 5;
            break;
        }
        // SAFETY: getpid/getpgid(0) only read our own ids.
        let (pid, pgid) = unsafe { (libc::getpid(), libc::getpgid(0)) };
        let (ev, extra) = if first {
            (
                "s",
                format!(",\"pid\":{pid},\"pgid\":{pgid},\"via\":\"client\""),
            )
        } else {
            ("b", String::new())
        };
        beat_line(&mut f, &a.key, &a.job, ev, &extra)?;
        if first {
            first = false;
            println!("STARTED {pid} {pgid}");
            let _ = std::io::stdout().flush();
        }
        sleep(Duration::from_millis(a.interval_ms.clamp(1, 1_000))).await;
    }
    // No closing line: it would be written after the last check.
    if code == 0 {
        if let Err(e) = acq.release().await {
            eprintln!("lib-job: release: {e}");
        }
    }
    locker.terminate().await;
    Ok(code)
}

/// The job's client: timings scaled to the process ttl (at least 500 ms).
fn locker_for(args: &LibJobArgs) -> anyhow::Result<Locker> {
    let p = args.process_ttl_ms.max(500);
    Locker::new(LockerOptions {
        endpoints: args.urls.clone(),
        report_write_ms: (p / 5).max(50),
        report_ttl_ms: p,
        lock_ttl_ms: 3 * p,
        lock_extend_ms: p,
        lock_recheck_ms: p,
        request_timeout_ms: 1_000,
        failover_timeout_ms: 3_000,
        ..LockerOptions::default()
    })
    .map_err(|e| anyhow::anyhow!("locker: {e}"))
}
