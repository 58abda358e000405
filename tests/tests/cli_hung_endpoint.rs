//! One hung endpoint (accepts connections, never answers)
//! first in `--endpoints` must not stop `locker run`: every call has to
//! reach the healthy node within its budget.
//!
//! Needs `locker-node` and `locker` built (`cargo build --bins`).

use locker_tests::proxy::Proxy;
use locker_tests::{api, bin, Cluster};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn key(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("cli/{name}/{nanos}")
}

#[test]
fn run_works_with_a_hung_endpoint_first_in_the_list() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let hung = Proxy::hung();
    let k = key("hung");
    let dir = tempfile::tempdir().expect("tmp");
    let marker = dir.path().join("ran");
    // The command outlives several keep-alives (every 500 ms) and lock
    // rechecks (every 500 ms), each of which must get past the hung node.
    let script = format!("sleep 4; touch '{}'", marker.display());
    let started = Instant::now();
    let out = Command::new(bin("locker"))
        .env_remove("LOCKER_ENDPOINTS")
        .arg("--endpoints")
        .arg(format!("{},{}", hung.url(), url))
        .args([
            "run",
            "--report-write-ms",
            "500",
            "--recheck-ms",
            "500",
            &k,
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run locker");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "after {took:?}; stderr: {stderr}"
    );
    assert!(marker.exists(), "the command ran to its end");
    // 4 s of command; the rest is getting past the hung node once or twice.
    assert!(took < Duration::from_secs(12), "took {took:?}");
    assert!(!api::read(&url, &k).read().locked, "released");

    // The one-shot subcommands too, within their --timeout-ms.
    let started = Instant::now();
    let out = Command::new(bin("locker"))
        .env_remove("LOCKER_ENDPOINTS")
        .arg("--endpoints")
        .arg(format!("{},{}", hung.url(), url))
        .args(["--timeout-ms", "4000", "show", &k])
        .stdin(Stdio::null())
        .output()
        .expect("run locker");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// A waiting acquire gave a hung endpoint its whole wait on top of its
/// per-try share: `locker acquire --wait-ms 20000` with a hung node first
/// got a lock freed after 3 s only after ~25 s. It must find a node that
/// answers before it queues.
#[test]
fn a_waiting_acquire_queues_on_a_node_that_answers() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let hung = Proxy::hung();
    let k = key("hung-wait");
    let held = api::acquire(&url, &k, json!({"ttl_ms": 3_000}));
    assert_eq!(held.status(), "SUCCESS", "{:?}", held.body);
    let started = Instant::now();
    let out = Command::new(bin("locker"))
        .env_remove("LOCKER_ENDPOINTS")
        .arg("--endpoints")
        .arg(format!("{},{}", hung.url(), url))
        .args(["acquire", "--wait-ms", "20000", "--ttl-ms", "60000", &k])
        .stdin(Stdio::null())
        .output()
        .expect("locker acquire");
    let took = started.elapsed();
    eprintln!("FIGURES waiting acquire behind a hung endpoint: {took:?}");
    assert!(
        out.status.success(),
        "acquire failed after {took:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_secs(10),
        "the lock was free after 3 s but the acquire took {took:?}"
    );
}
