//! The `/metrics` page of a real node: valid for Prometheus's own linter, and
//! bounded whatever the clients send.

use std::io::Write;
use std::process::{Command, Stdio};

use locker_tests::{api, http, Cluster};
use serde_json::json;

fn metrics_text(url: &str) -> String {
    http()
        .get(format!("{url}/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("metrics")
}

/// Sends one request with a made-up method `len` bytes long.
fn send_odd_method(url: &str, i: usize, len: usize) {
    let name = format!("M{i}{}", "X".repeat(len));
    let method = reqwest::Method::from_bytes(name.as_bytes()).expect("a valid method token");
    // Any answer will do (the route exists for GET only): the request counts.
    let r = http()
        .request(method, format!("{url}/v1/cluster"))
        .send()
        .expect("an answer to an odd method");
    assert!(r.status().is_client_error(), "{}", r.status());
}

/// Regression: every distinct method used to become a label value, so 100
/// requests with long made-up methods grew the page to hundreds of megabytes.
#[test]
fn unknown_methods_collapse_to_other() {
    let c = Cluster::start(1);
    let url = c.url(c.leader().expect("leader"));
    let before = metrics_text(&url).len();
    for i in 0..100 {
        send_odd_method(&url, i, 4000);
    }
    let text = metrics_text(&url);
    assert!(!text.contains("XXXX"), "a raw method became a label");
    assert!(
        text.contains(
            "locker_http_requests_total{method=\"other\",route=\"/v1/cluster\",status=\"405\"} 100"
        ),
        "100 odd requests are counted under `other`:\n{text}"
    );
    // One more series per family, not one per request.
    assert!(
        text.len() < before + 8 * 1024,
        "page grew from {before} to {} bytes",
        text.len()
    );
}

/// `promtool check metrics` (Prometheus's linter) accepts the whole page:
/// types, `_total` counters, histogram buckets, help texts.
#[test]
fn promtool_accepts_the_page() {
    let c = Cluster::start(1);
    let url = c.url(c.leader().expect("leader"));
    let r = api::acquire(&url, "metrics/promtool", json!({"ttl_ms": 30_000}));
    assert_eq!(r.code, 200, "{:?}", r.body);
    send_odd_method(&url, 0, 10);
    let text = metrics_text(&url);
    for needle in [
        "# TYPE locker_http_requests_total counter",
        "# TYPE locker_leader_changes_total counter",
        "# TYPE locker_forwarded_requests_total counter",
        "# TYPE locker_waiter_wakeups_total counter",
        "# TYPE locker_proposed_client_ops_total counter\nlocker_proposed_client_ops_total 1\n",
        "# TYPE locker_proposed_client_entries_total counter\nlocker_proposed_client_entries_total 1\n",
        "# TYPE locker_storage_fsyncs_total counter",
        "# TYPE locker_storage_entries_flushed_total counter",
        "# TYPE locker_storage_fsync_seconds_total counter",
        "# TYPE locker_http_request_duration_seconds histogram",
        "# TYPE locker_raft_commit_duration_seconds histogram",
        "# TYPE locker_live_locks gauge\nlocker_live_locks 1\n",
        "# TYPE locker_raft_is_leader gauge\nlocker_raft_is_leader 1\n",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }
    let Some(out) = promtool_check(&text) else {
        // scripts/test.sh installs it (Debian package `prometheus`).
        eprintln!(
            "SKIPPED promtool check: `promtool` is not installed (Debian package `prometheus`)"
        );
        return;
    };
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- page:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `promtool check metrics` on `text`; `None` if promtool is missing.
fn promtool_check(text: &str) -> Option<std::process::Output> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(text.as_bytes()).expect("write to promtool");
    drop(stdin);
    Some(child.wait_with_output().expect("promtool output"))
}
