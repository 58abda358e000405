//! Every lock and process route of docs/protocol.md ("HTTP API"), through the leader and
//! through a follower, with the seed's behaviours.

use std::time::Duration;

use locker_proto::{ClusterAnswer, KeepaliveAnswer, ListAnswer, OwnerAnswer};
use locker_tests::{api, eventually, Cluster};
use serde_json::json;

fn owner(key: &str, n: u32) -> String {
    format!("{key}@host-a/100.5000.{n}")
}

/// Runs `f` once against the leader's URL and once against a follower's.
fn through_leader_and_follower(c: &Cluster, f: impl Fn(&str, &str)) {
    let leader = c.leader().expect("leader");
    let follower = c.followers()[0];
    f(&c.url(leader), "leader");
    f(&c.url(follower), "follower");
}

#[test]
fn lock_lifecycle_on_leader_and_follower() {
    let c = Cluster::start(3);
    through_leader_and_follower(&c, |url, via| {
        let key = format!("life/{via}");
        let (a, b) = (owner(&key, 1), owner(&key, 2));
        let (token, acquired_at) = grant_first_lock(url, &key, via, &a);
        holder_extends_and_strangers_are_refused(url, &key, via, (&a, &b), token, acquired_at);
        read_list_and_owner_status(url, &key, via, &a, &b);
        release_frees_the_key(url, &key, &a);
        ended_runs_stay_retired(url, &key, via, &[&a, &b], token);
    });
}

/// The first acquire grants the lock as asked; gives its token and start.
fn grant_first_lock(url: &str, key: &str, via: &str, a: &str) -> (u64, u64) {
    let r = api::acquire(
        url,
        key,
        json!({"owner_hash": a, "ttl_ms": 30_000, "trace": "t-1"}),
    );
    assert_eq!(
        (r.code, r.status()),
        (200, "SUCCESS"),
        "{via}: {:?}",
        r.body
    );
    let lock = r.lock().expect("the granted lock");
    assert_eq!(lock.key, key);
    assert_eq!(lock.owner_hash, a);
    assert_eq!(lock.trace.as_deref(), Some("t-1"));
    assert_eq!(lock.process_hash, None);
    assert_eq!(lock.ttl_ms, 30_000);
    assert_eq!(lock.expires_at, lock.acquired_at + 30_000);
    (lock.fencing_token, lock.acquired_at)
}

/// A second owner is refused and told who holds it; the holder re-acquires
/// (an extend keeping the token) and extends; a stranger cannot extend or
/// release.
fn holder_extends_and_strangers_are_refused(
    url: &str,
    key: &str,
    via: &str,
    (a, b): (&str, &str),
    token: u64,
    acquired_at: u64,
) {
    let r = api::acquire(url, key, json!({"owner_hash": b}));
    assert_eq!(
        (r.code, r.status()),
        (409, "SOMEONE_ELSE_HOLDS_LOCK"),
        "{via}"
    );
    assert_eq!(r.lock().map(|l| l.owner_hash), Some(a.to_string()));

    let r = api::acquire(url, key, json!({"owner_hash": a, "ttl_ms": 40_000}));
    assert_eq!((r.code, r.status()), (200, "SUCCESS"), "{via}");
    let lock = r.lock().expect("the re-acquired lock");
    assert_eq!(lock.fencing_token, token);
    assert_eq!(lock.ttl_ms, 40_000);

    let r = api::extend(url, key, a, Some(50_000));
    assert_eq!((r.code, r.status()), (200, "SUCCESS"), "{via}");
    assert!(r.lock().map(|l| l.extended_at) >= Some(acquired_at));
    let r = api::extend(url, key, b, None);
    assert_eq!((r.code, r.status()), (409, "SOMEONE_ELSE_HOLDS_LOCK"));
    let r = api::release(url, key, b);
    assert_eq!((r.code, r.status()), (409, "SOMEONE_ELSE_HOLDS_LOCK"));
    assert_eq!(r.lock().map(|l| l.owner_hash), Some(a.to_string()));
}

/// Read and list show the lock; owner status is RUNNING for the holder,
/// SOMEONE_ELSE for another owner of the key.
fn read_list_and_owner_status(url: &str, key: &str, via: &str, a: &str, b: &str) {
    let r = api::read(url, key);
    assert!(r.read().locked);
    let r = locker_tests::get(&format!("{url}/v1/locks?prefix=life%2F{via}&limit=10"));
    assert_eq!(r.code, 200);
    assert_eq!(r.json::<ListAnswer>().locks.len(), 1, "{:?}", r.body);

    let r = api::owner(url, a);
    let o = r.json::<OwnerAnswer>();
    assert_eq!((r.status(), o.key), ("RUNNING", Some(key.to_string())));
    let r = api::owner(url, b);
    assert_eq!(r.status(), "SOMEONE_ELSE_HOLDS_LOCK");
}

/// Release, then everything reads as free.
fn release_frees_the_key(url: &str, key: &str, a: &str) {
    let r = api::release(url, key, a);
    assert_eq!((r.code, r.status()), (200, "SUCCESS"));
    let r = api::release(url, key, a);
    assert_eq!((r.code, r.status()), (404, "NO_KEY"));
    let r = api::extend(url, key, a, None);
    assert_eq!((r.code, r.status()), (404, "NO_KEY"));
    assert_eq!(api::read(url, key).body, json!({"locked": false}));
    let r = api::owner(url, a);
    assert_eq!((r.status(), r.json::<OwnerAnswer>().lock), ("NO_KEY", None));
    let r = api::owner(url, "not an owner hash");
    assert_eq!(
        r.body,
        json!({"status": "MALFORMED_OWNER_HASH", "key": null, "lock": null})
    );
}

/// Both runs are over: `a` released, and `b` sent a release too (refused,
/// but it declared that run ended). Neither comes back; the next run gets a
/// larger fencing token.
fn ended_runs_stay_retired(url: &str, key: &str, via: &str, ended: &[&str], token: u64) {
    for ended in ended {
        let r = api::acquire(url, key, json!({"owner_hash": ended}));
        assert_eq!(
            (r.code, r.error_code()),
            (409, "OWNER_HASH_RETIRED"),
            "{via}: {:?}",
            r.body
        );
    }
    let r = api::acquire(url, key, json!({"owner_hash": owner(key, 3)}));
    assert!(r.lock().map(|l| l.fencing_token) > Some(token));
}

#[test]
fn server_builds_an_owner_hash_when_none_is_given() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let r = api::acquire(&url, "anon", json!({}));
    assert_eq!(r.status(), "SUCCESS");
    let oh = r.lock().expect("the granted lock").owner_hash;
    assert!(oh.starts_with("anon@"), "{oh}");
    assert_eq!(api::owner(&url, &oh).status(), "RUNNING");
    assert_eq!(api::release(&url, "anon", &oh).status(), "SUCCESS");
}

#[test]
fn a_lock_not_extended_expires_and_an_extended_one_stays() {
    let c = Cluster::start(3);
    let url = c.url(c.followers()[0]);
    let (a, b) = (owner("exp/a", 1), owner("exp/b", 1));
    assert_eq!(
        api::acquire(&url, "exp/a", json!({"owner_hash": a, "ttl_ms": 800})).status(),
        "SUCCESS"
    );
    assert_eq!(
        api::acquire(&url, "exp/b", json!({"owner_hash": b, "ttl_ms": 800})).status(),
        "SUCCESS"
    );
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(250));
        // Each extend lands well inside the previous ttl; the last one is
        // long, so the checks below cannot race its expiry.
        assert_eq!(
            api::extend(&url, "exp/b", &b, Some(3_000)).status(),
            "SUCCESS"
        );
    }
    // 1.5 s later: a expired, b kept alive.
    let r = api::extend(&url, "exp/a", &a, None);
    assert_eq!((r.code, r.status()), (404, "NO_KEY"));
    assert_eq!(api::owner(&url, &a).status(), "NO_KEY");
    assert!(api::read(&url, "exp/b").read().locked);
    // Someone else can take the expired key.
    let r = api::acquire(&url, "exp/a", json!({"owner_hash": owner("exp/a", 2)}));
    assert_eq!(r.status(), "SUCCESS");
}

#[test]
fn a_lock_dies_with_its_process() {
    let c = Cluster::start(3);
    through_leader_and_follower(&c, |url, via| {
        let process = format!("host-{via}/77.123456");
        let key = format!("proc/{via}");
        let a = format!("{key}@{process}.1");
        let r = api::keepalive(url, &process, 1000);
        assert_eq!((r.code, r.status()), (200, "SUCCESS"), "{:?}", r.body);
        // `alive_until` is a required number of the keep-alive answer.
        r.json::<KeepaliveAnswer>();

        // A lock bound to a process that is not alive is refused.
        let r = api::acquire(
            url,
            &key,
            json!({"owner_hash": a, "process_hash": "ghost/1.2"}),
        );
        assert_eq!((r.code, r.status()), (409, "NO_RUNNING_PROCESS"));

        let r = api::acquire(
            url,
            &key,
            json!({"owner_hash": a, "process_hash": process, "ttl_ms": 300_000}),
        );
        assert_eq!(r.status(), "SUCCESS");
        // Keep-alives stop: within the process ttl the lock is free although
        // its own ttl runs for five minutes.
        let freed = eventually(
            Duration::from_secs(5),
            "the lock to die with its process",
            || {
                let r = api::acquire(
                    url,
                    &key,
                    json!({"owner_hash": format!("{key}@other/1.1.1")}),
                );
                (r.status() == "SUCCESS").then_some(r)
            },
        );
        assert_eq!(
            freed.lock().map(|l| l.owner_hash),
            Some(format!("{key}@other/1.1.1"))
        );
        // The old owner hash now reads SOMEONE_ELSE_HOLDS_LOCK.
        assert_eq!(api::owner(url, &a).status(), "SOMEONE_ELSE_HOLDS_LOCK");
    });
}

#[test]
fn dead_process_reads_no_running_process_and_ending_a_process_frees_at_once() {
    let c = Cluster::start(3);
    let url = c.url(c.leader().expect("leader"));
    let p = "host-b/88.999";
    assert_eq!(api::keepalive(&url, p, 600).status(), "SUCCESS");
    let a = format!("np@{p}.1");
    assert_eq!(
        api::acquire(&url, "np", json!({"owner_hash": a, "process_hash": p})).status(),
        "SUCCESS"
    );
    eventually(Duration::from_secs(5), "NO_RUNNING_PROCESS", || {
        let r = api::owner(&url, &a);
        (r.status() == "NO_RUNNING_PROCESS").then_some(r)
    });
    assert!(!api::read(&url, "np").read().locked);

    // Graceful end: every lock of the process is free at once.
    let q = "host-c/99.1";
    assert_eq!(api::keepalive(&url, q, 60_000).status(), "SUCCESS");
    for k in ["end/1", "end/2"] {
        let o = format!("{k}@{q}.1");
        assert_eq!(
            api::acquire(&url, k, json!({"owner_hash": o, "process_hash": q})).status(),
            "SUCCESS"
        );
    }
    let r = api::end_process(&url, q);
    assert_eq!((r.code, r.status()), (200, "SUCCESS"));
    for k in ["end/1", "end/2"] {
        assert!(!api::read(&url, k).read().locked, "{k}");
    }
    let r = api::end_process(&url, q);
    assert_eq!((r.code, r.status()), (404, "NO_KEY"));
}

#[test]
fn cluster_health_ready_and_metrics() {
    let c = Cluster::start(3);
    for n in &c.nodes {
        let r = api::cluster(&n.url());
        let v = r.json::<ClusterAnswer>();
        assert_eq!(v.node_id, n.id);
        assert_eq!(v.members.len(), 3);
        assert!(v.leader_id.is_some());
        // `term` is a required number in the type; the indexes exist once
        // the cluster has written its first entries.
        assert!(v.last_log_index.is_some(), "{:?}", r.body);
        assert!(v.last_applied_index.is_some(), "{:?}", r.body);
        assert_eq!(locker_tests::get(&format!("{}/healthz", n.url())).code, 200);
        assert_eq!(locker_tests::get(&format!("{}/readyz", n.url())).code, 200);
    }
    let url = c.url(c.leader().expect("leader"));
    api::acquire(&url, "m", json!({}));
    let text = locker_tests::http()
        .get(format!("{url}/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    for needle in [
        "locker_http_requests_total{method=\"POST\",route=\"/v1/locks/{key}/acquire\",status=\"200\"}",
        "locker_http_request_duration_seconds_bucket",
        "locker_raft_term ",
        "locker_raft_commit_index ",
        "locker_raft_applied_index ",
        "locker_live_locks 1",
        "locker_waiters 0",
        "locker_storage_fsyncs_total ",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
}
