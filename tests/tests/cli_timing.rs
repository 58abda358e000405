//! `locker run` refuses timings under which the command could not be dead
//! before the cluster may free its lock (exit 2, before any network call):
//! see `locker run --help`, "Timing".
//!
//! Needs `locker` built (`cargo build --bins`); no cluster.

use locker_tests::bin;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MAX: &str = "18446744073709551615";

fn run_with(flags: &[&str]) -> (Option<i32>, String, Duration) {
    let t = Instant::now();
    let out = Command::new(bin("locker"))
        .env_remove("LOCKER_ENDPOINTS")
        // Nothing listens there: a run that is not refused fails later.
        .args(["--endpoints", "http://127.0.0.1:9", "--timeout-ms", "300"])
        .arg("run")
        .args(flags)
        .args(["cli/timing", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .expect("locker run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t.elapsed(),
    )
}

#[test]
fn unsafe_timings_are_refused_before_anything_starts() {
    for flags in [
        &["--report-write-ms", "0"][..],
        &["--report-write-ms", MAX],
        &["--report-ttl-ms", "0"],
        &["--grace-ms", "9000"],
        &["--grace-ms", MAX],
        &["--safety-margin-ms", "10000"],
        &["--safety-margin-ms", MAX],
        &["--ttl-ms", "3000", "--extend-ms", "3000"],
        &[
            "--ttl-ms",
            "3000",
            "--grace-ms",
            "2000",
            "--extend-ms",
            "800",
        ],
        // No room at all for SIGKILL delivery, reaping and clock rates.
        &["--safety-margin-ms", "0"],
    ] {
        let (code, stderr, took) = run_with(flags);
        assert_eq!(code, Some(2), "{flags:?} not refused ({took:?}): {stderr}");
        assert!(
            stderr.contains("--"),
            "{flags:?}: the refusal names no flag: {stderr}"
        );
        assert!(took < Duration::from_secs(5), "{flags:?} took {took:?}");
    }
}
