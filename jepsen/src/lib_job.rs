//! `locker-jepsen lib-job`: the `run-lib` workload's job, driven through the
//! Rust client library instead of `locker run`. It takes the key through a
//! `locker_client::Locker` (waiting in the queue), then does its "work":
//! calls `Heartbeater::heartbeat()` and, only while that says the lock is
//! still ours, appends a heartbeat line to the shared record (same format
//! as `job_beat`). When the library reports the lock lost (or its local
//! deadline passes, e.g. when the client is cut off) the job stops at once.
//! The checker then proves that the library's own loss detection keeps two
//! library-driven jobs of a key from ever running at once.

use crate::job_beat::beat_line;
use locker_client::{AcquireOptions, AcquireResult, Locker, LockerOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::{sleep, Instant};

pub struct LibJobArgs {
    pub urls: Vec<String>,
    pub file: PathBuf,
    pub key: String,
    pub job: String,
    pub run_ms: u64,
    pub interval_ms: u64,
    pub wait_ms: u64,
    pub process_ttl_ms: u64,
}

/// Exit codes, as `locker run`'s: 0 done, 3 held, 5 lost, 1 error.
pub async fn lib_job_main(a: LibJobArgs) -> anyhow::Result<u8> {
    let p = a.process_ttl_ms.max(500);
    let locker = Locker::new(LockerOptions {
        endpoints: a.urls.clone(),
        report_write_ms: (p / 5).max(50),
        report_ttl_ms: p,
        lock_ttl_ms: 3 * p,
        lock_extend_ms: p,
        lock_recheck_ms: p,
        request_timeout_ms: 1_000,
        failover_timeout_ms: 3_000,
        ..LockerOptions::default()
    })
    .map_err(|e| anyhow::anyhow!("locker: {e}"))?;
    let opts = AcquireOptions {
        trace: None,
        wait_ms: (a.wait_ms > 0).then_some(a.wait_ms),
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
    let end = Instant::now() + Duration::from_millis(a.run_ms);
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
