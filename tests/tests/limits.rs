//! Limits of a node and of a token, against real nodes over HTTP: past a
//! limit the answer is 429 and nothing changes.

use std::time::Duration;

use locker_tests::auth::{
    call, default_entries, entry, start_with_tokens, write_tokens, ADMIN, BILLING, OPS,
};
use locker_tests::{api, enc, get, Cluster};
use serde_json::json;

fn code(a: &locker_tests::Answer) -> (u16, String) {
    (
        a.code,
        a.body["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

fn keys(base: &str) -> Vec<String> {
    let a = get(&format!("{base}/v1/locks"));
    a.body["locks"]
        .as_array()
        .expect("locks")
        .iter()
        .filter_map(|l| l["key"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn node_limits_refuse_with_429_and_change_nothing() {
    let c = Cluster::start_with(
        1,
        &[
            "--max-locks",
            "3",
            "--max-processes",
            "1",
            "--max-waiters",
            "1",
        ],
    );
    let u = c.url(1);
    // The readiness probe's read took no record; two grants fill the table
    // with the one below.
    let a = api::acquire(&u, "a", json!({}));
    assert_eq!(a.code, 200);
    let owner_a = a.lock().expect("lock").owner_hash;
    assert_eq!(api::acquire(&u, "b", json!({})).code, 200);
    assert_eq!(api::acquire(&u, "c", json!({})).code, 200);
    let over = api::acquire(&u, "d", json!({}));
    assert_eq!(
        code(&over),
        (429, "LIMIT_EXCEEDED".into()),
        "{:?}",
        over.body
    );
    assert_eq!(keys(&u), vec!["a", "b", "c"]);
    // A re-acquire or extend of a held lock adds no record.
    let again = api::acquire(&u, "a", json!({"owner_hash": owner_a}));
    assert_eq!(again.code, 200, "{:?}", again.body);
    assert_eq!(api::extend(&u, "a", &owner_a, Some(60_000)).code, 200);
    // Freeing a record makes room.
    assert_eq!(api::release(&u, "a", &owner_a).code, 200);
    assert_eq!(api::acquire(&u, "d", json!({})).code, 200);

    assert_eq!(api::keepalive(&u, "h/1.1", 60_000).code, 200);
    let p2 = api::keepalive(&u, "h/2.2", 60_000);
    assert_eq!(code(&p2), (429, "LIMIT_EXCEEDED".into()));
    assert_eq!(
        api::keepalive(&u, "h/1.1", 60_000).code,
        200,
        "a known process still refreshes"
    );
    let bound = api::acquire(&u, "b", json!({"process_hash": "h/2.2"}));
    assert_eq!(bound.code, 409, "the refused process was not registered");

    // One blocking acquire may wait; a second is refused at once.
    let first = {
        let u = u.clone();
        std::thread::spawn(move || api::acquire(&u, "b", json!({"wait_ms": 3_000})))
    };
    // Enqueued well within this on a single node.
    std::thread::sleep(Duration::from_millis(500));
    let second = api::acquire(&u, "c", json!({"wait_ms": 3_000}));
    assert_eq!(
        code(&second),
        (429, "LIMIT_EXCEEDED".into()),
        "{:?}",
        second.body
    );
    assert_eq!(
        first.join().expect("waiter").code,
        409,
        "the first one waited its turn"
    );
}

/// The default tokens, with billing holding one lock at most and ops
/// sending one request per second at most.
fn limited_tokens() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("tokens.json");
    let mut entries = default_entries();
    entries.retain(|e| e["name"] != BILLING.name && e["name"] != OPS.name);
    entries.push(entry(
        BILLING,
        &["billing/"],
        &["read", "write"],
        json!({"max_locks": 1}),
    ));
    entries.push(entry(
        OPS,
        &["ops/"],
        &["read", "write"],
        json!({"rate_per_s": 1}),
    ));
    write_tokens(&path, &entries);
    (dir, path)
}

#[test]
fn a_tokens_max_locks_and_rate_refuse_with_429() {
    let (_dir, path) = limited_tokens();
    let c = start_with_tokens(1, &path, &[]);
    let u = c.url(1);
    let acq = |token: &str, key: &str| {
        let url = format!("{u}/v1/locks/{}/acquire", enc(key));
        call("POST", &url, Some(token), Some(json!({})))
    };
    assert_eq!(acq(BILLING.secret, "billing/a").code, 200);
    let over = acq(BILLING.secret, "billing/b");
    assert_eq!(
        code(&over),
        (429, "LIMIT_EXCEEDED".into()),
        "{:?}",
        over.body
    );
    assert_eq!(
        acq(ADMIN.secret, "billing/c").code,
        200,
        "others are not counted"
    );
    let b = call(
        "GET",
        &format!("{u}/v1/locks/{}", enc("billing/b")),
        Some(ADMIN.secret),
        None,
    );
    assert_eq!(b.body["locked"], false);

    // A bucket of one request per second: the second at once is refused.
    let answers: Vec<_> = (0..3)
        .map(|i| acq(OPS.secret, &format!("ops/{i}")))
        .collect();
    let refused: Vec<_> = answers.iter().filter(|a| a.code == 429).collect();
    assert!(!refused.is_empty(), "{answers:?}");
    for r in &refused {
        assert_eq!(code(r).1, "RATE_LIMITED");
        let after: u64 = r
            .retry_after
            .as_deref()
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=2).contains(&after), "{after}");
    }
    let list = call(
        "GET",
        &format!("{u}/v1/locks?prefix=ops/"),
        Some(ADMIN.secret),
        None,
    );
    let held = list.body["locks"].as_array().map_or(0, Vec::len);
    assert_eq!(
        held,
        answers.len() - refused.len(),
        "refused requests took nothing"
    );
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(acq(OPS.secret, "ops/later").code, 200, "the bucket refills");
}

#[test]
fn an_owner_hash_with_an_oversize_trace_suffix_is_refused() {
    let c = Cluster::start(1);
    let u = c.url(1);
    let owner = format!("k@h/1.2.3#{}", "t".repeat(2_000));
    let a = api::acquire(&u, "k", json!({"owner_hash": owner}));
    assert_eq!(code(&a), (400, "INVALID_OWNER_HASH".into()), "{:?}", a.body);
    assert!(keys(&u).is_empty());
    let ok = format!("k@h/1.2.3#{}", "t".repeat(1_000));
    assert_eq!(api::acquire(&u, "k", json!({"owner_hash": ok})).code, 200);
}
