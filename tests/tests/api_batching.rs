//! Concurrent client writes share log entries (`Op::Batch`, the leader's
//! proposer) and each is still answered as if it were alone: every key
//! granted once, distinct fencing tokens, keep-alives and extends answered,
//! replicas agreeing; and the leader's metrics show fewer entries than ops.

use std::collections::HashSet;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use locker_tests::{api, Answer, Cluster};
use serde_json::json;

const CLIENTS: usize = 64;
const ROUNDS: usize = 5;

/// `call`, again while it answers 503 (an election on a loaded machine;
/// every write here may be repeated: the same owner re-acquires, extends
/// and keeps alive).
fn retried(call: impl Fn() -> Answer) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = call();
        if r.code != 503 || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What one client saw: its grant's token, and every non-SUCCESS answer.
#[derive(Default)]
struct Seen {
    tokens: Vec<(String, u64)>,
    shared_wins: Vec<usize>,
    wrong: Vec<String>,
}

/// Client `i`: keeps its process alive, acquires its own key bound to it,
/// then extends and keeps alive in rounds; once, it also races every other
/// client for one shared key. Half talk to a follower (forwarded).
fn client(i: usize, url: &str, start: &Barrier, seen: &Mutex<Seen>) {
    let process = format!("b{i}/1.2");
    let key = format!("batch/{i}");
    let owner = format!("{key}@{process}.0");
    let mut wrong = Vec::new();
    start.wait();
    let r = retried(|| api::keepalive(url, &process, 300_000));
    if r.code != 200 {
        wrong.push(format!("{i} keepalive: {} {:?}", r.code, r.body));
    }
    let r = retried(|| {
        api::acquire(
            url,
            &key,
            json!({"owner_hash": owner, "process_hash": process, "ttl_ms": 300_000}),
        )
    });
    match r.lock() {
        Some(l) if r.status() == "SUCCESS" && l.owner_hash == owner => {
            seen.lock()
                .unwrap()
                .tokens
                .push((key.clone(), l.fencing_token));
        }
        _ => wrong.push(format!("{i} acquire: {} {:?}", r.code, r.body)),
    }
    let shared_owner = format!("batch/shared@{process}.1");
    let r = retried(|| {
        api::acquire(
            url,
            "batch/shared",
            json!({"owner_hash": shared_owner, "ttl_ms": 300_000}),
        )
    });
    match r.status() {
        "SUCCESS" => seen.lock().unwrap().shared_wins.push(i),
        "SOMEONE_ELSE_HOLDS_LOCK" => {}
        other => wrong.push(format!("{i} shared acquire: {other} {:?}", r.body)),
    }
    for round in 0..ROUNDS {
        let r = retried(|| api::keepalive(url, &process, 300_000));
        if r.code != 200 {
            wrong.push(format!("{i} keepalive {round}: {} {:?}", r.code, r.body));
        }
        let r = retried(|| api::extend(url, &key, &owner, Some(300_000)));
        if r.status() != "SUCCESS" {
            wrong.push(format!("{i} extend {round}: {} {:?}", r.code, r.body));
        }
    }
    seen.lock().unwrap().wrong.extend(wrong);
}

#[test]
fn concurrent_writes_share_entries_and_each_is_answered_alone() {
    let c = Cluster::start(3);
    let leader = c.url(c.leader().expect("leader"));
    let follower = c.url(c.followers()[0]);
    let ops_before = c.metric_sum("locker_proposed_client_ops_total");
    let entries_before = c.metric_sum("locker_proposed_client_entries_total");

    let began = Instant::now();
    let start = Arc::new(Barrier::new(CLIENTS));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let url = if i % 2 == 0 {
                leader.clone()
            } else {
                follower.clone()
            };
            let (start, seen) = (start.clone(), seen.clone());
            std::thread::spawn(move || client(i, &url, &start, &seen))
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let seen = seen.lock().unwrap();
    assert!(seen.wrong.is_empty(), "wrong answers: {:#?}", seen.wrong);
    assert_eq!(seen.tokens.len(), CLIENTS, "every own key granted");
    let keys: HashSet<&str> = seen.tokens.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), CLIENTS, "each key granted once");
    let tokens: HashSet<u64> = seen.tokens.iter().map(|(_, t)| *t).collect();
    assert_eq!(tokens.len(), CLIENTS, "two grants shared a fencing token");
    assert_eq!(
        seen.shared_wins.len(),
        1,
        "shared key: {:?}",
        seen.shared_wins
    );
    let winner = seen.shared_wins[0];
    let held = retried(|| api::read(&leader, "batch/shared"));
    let held = held
        .lock()
        .unwrap_or_else(|| panic!("not held: {:?}", held.body));
    assert_eq!(held.owner_hash, format!("batch/shared@b{winner}/1.2.1"));
    assert!(!tokens.contains(&held.fencing_token), "shared token reused");

    // Every write went through the proposer, in fewer entries than ops.
    let ops = c.metric_sum("locker_proposed_client_ops_total") - ops_before;
    let entries = c.metric_sum("locker_proposed_client_entries_total") - entries_before;
    let want_ops = (CLIENTS * (3 + 2 * ROUNDS)) as u64;
    assert!(
        ops >= want_ops,
        "{ops} client ops proposed, {want_ops} sent"
    );
    assert!(
        entries > 0 && entries < ops,
        "{ops} client ops went into {entries} entries: none shared one"
    );
    eprintln!(
        "{ops} client ops in {entries} entries, {:?}",
        began.elapsed()
    );
    c.assert_replicas_agree(Duration::from_secs(10));
}

/// One client alone: each write is an entry of its own (a batch of one is
/// the bare op).
#[test]
fn a_lone_client_gets_an_entry_per_write_without_waiting() {
    let c = Cluster::start(3);
    let leader = c.url(c.leader().expect("leader"));
    let ops_before = c.metric_sum("locker_proposed_client_ops_total");
    let entries_before = c.metric_sum("locker_proposed_client_entries_total");
    for n in 0..20 {
        let r = retried(|| api::keepalive(&leader, "lone/1.2", 300_000));
        assert_eq!(r.code, 200, "{n}: {:?}", r.body);
    }
    let ops = c.metric_sum("locker_proposed_client_ops_total") - ops_before;
    let entries = c.metric_sum("locker_proposed_client_entries_total") - entries_before;
    assert!(ops >= 20, "{ops}");
    assert_eq!(entries, ops, "a lone client's writes shared an entry");
}
