//! Without a majority the answer is a retryable 503 within a bounded time,
//! never a hang and never a wrong SUCCESS; service resumes after.

use std::time::{Duration, Instant};

use locker_tests::{api, Cluster};
use serde_json::json;

/// Leader wait (3 s) + write timeout (5 s) + forwarding slack.
const BOUND: Duration = Duration::from_secs(12);

fn assert_unavailable(a: &locker_tests::Answer, took: Duration, what: &str) {
    assert_eq!(a.code, 503, "{what}: {:?}", a.body);
    assert!(
        ["NO_LEADER", "TIMEOUT"].contains(&a.error_code()),
        "{what}: {:?}",
        a.body
    );
    assert_eq!(a.retry_after.as_deref(), Some("1"), "{what}: Retry-After");
    assert!(took < BOUND, "{what} took {took:?}");
}

#[test]
fn a_stopped_majority_gives_503_within_the_bound_and_service_resumes() {
    let mut c = Cluster::start(3);
    let leader = c.leader().expect("leader");
    let followers = c.followers();
    let url = c.url(leader);
    assert_eq!(api::acquire(&url, "before", json!({})).status(), "SUCCESS");

    // Both followers stop: the leader alone cannot commit or confirm reads.
    for f in &followers {
        c.node_mut(*f).pause();
    }
    let t = Instant::now();
    let w = api::acquire(&url, "during", json!({}));
    assert_unavailable(&w, t.elapsed(), "write on a leader without quorum");
    let t = Instant::now();
    let r = api::read(&url, "before");
    assert_unavailable(&r, t.elapsed(), "linearizable read without quorum");
    // A stale read still answers from the local replica.
    assert!(api::read_stale(&url, "before").read().locked);

    for f in &followers {
        c.node_mut(*f).resume();
    }
    c.wait_ready(Duration::from_secs(30));
    let leader = c.leader().expect("leader after resume");
    let a = api::acquire(&c.url(leader), "after", json!({}));
    assert_eq!(a.status(), "SUCCESS", "{:?}", a.body);
}

#[test]
fn a_lone_follower_answers_503_within_the_bound() {
    let mut c = Cluster::start(3);
    let leader = c.leader().expect("leader");
    let followers = c.followers();
    let (lone, other) = (followers[0], followers[1]);
    c.node_mut(leader).pause();
    c.node_mut(other).pause();
    let url = c.url(lone);
    for attempt in 0..2 {
        let t = Instant::now();
        let w = api::acquire(&url, "k", json!({}));
        assert_unavailable(
            &w,
            t.elapsed(),
            &format!("write {attempt} on a lone follower"),
        );
    }
    c.node_mut(leader).resume();
    c.node_mut(other).resume();
    let leader = c.wait_ready(Duration::from_secs(30));
    // A 503 TIMEOUT means "unknown": a request queued at the paused leader
    // may still apply, so check only that service resumes.
    let a = api::acquire(
        &c.url(leader),
        "after",
        json!({"owner_hash": "after@h/1.1.1"}),
    );
    assert_eq!(a.status(), "SUCCESS", "{:?}", a.body);
}

/// A node started with a low soft limit on open files (as systemd and
/// recent container runtimes do: soft 1024, hard far above).
fn start_with_fd_limit(
    soft: u64,
    hard: u64,
    dir: &std::path::Path,
    client: &str,
) -> locker_tests::Reaped {
    let peer = format!("127.0.0.1:{}", locker_tests::free_port());
    let mut cmd = std::process::Command::new(locker_tests::bin("locker-node"));
    cmd.args(["--id", "1", "--data-dir"])
        .arg(dir)
        .args(["--client-addr", client, "--peer-addr", &peer])
        .args(["--cluster-secret", locker_tests::SECRET])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    locker_tests::limit_open_files(&mut cmd, soft, hard);
    locker_tests::Reaped(cmd.spawn().expect("spawn locker-node"))
}

#[test]
fn a_few_hundred_blocking_acquires_do_not_exhaust_the_nodes_open_files() {
    // Each blocking acquire holds a connection, so a file descriptor, for
    // up to wait_ms. Under the usual soft limit a few hundred waiters used
    // to use up the node's descriptors: it could accept no other request
    // (and, on a cluster, open no connection to its peers), while the hard
    // limit would have allowed thousands.
    let dir = tempfile::tempdir().expect("tempdir");
    let client = format!("127.0.0.1:{}", locker_tests::free_port());
    let _node = start_with_fd_limit(128, 4096, dir.path(), &client);
    let url = format!("http://{client}");
    locker_tests::eventually(Duration::from_secs(30), "the node to serve", || {
        (api::acquire(
            &url,
            "fd/held",
            json!({"owner_hash": "fd/held@h/1.1.0", "ttl_ms": 600_000}),
        )
        .status()
            == "SUCCESS")
            .then_some(())
    });
    // 200 waiters, each its own connection, sent and left waiting.
    let body = json!({"owner_hash": "fd/held@h/1.1.1", "wait_ms": 60_000}).to_string();
    let request = format!(
        "POST /v1/locks/fd%2Fheld/acquire HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let waiters: Vec<std::net::TcpStream> = (0..200)
        .filter_map(|_| {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(&client).ok()?;
            s.write_all(request.as_bytes()).ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(waiters.len(), 200);
    std::thread::sleep(Duration::from_millis(1_000));
    locker_tests::assert_answers_200(
        locker_tests::http()
            .post(format!("{url}/v1/locks/fd%2Fother/acquire"))
            .timeout(Duration::from_secs(5))
            .header("content-type", "application/json")
            .body("{}"),
        "with 200 waiters queued, another acquire",
    );
    drop(waiters);
}
