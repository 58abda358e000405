//! Concurrent client writes share log entries (`Op::Batch`, the leader's
//! proposer) and each is still answered as if it were alone: the table read
//! back holds exactly the grants answered (holder and fencing token), the
//! tokens are distinct log indexes of this run, one client wins the shared
//! key, keep-alives and extends are answered, replicas agree; and the
//! leader's metrics show fewer entries than ops.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use locker_proto::{ClusterAnswer, ListAnswer};
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

/// A grant as answered: key, owner and fencing token.
type Grant = (String, String, u64);

/// What the clients saw: the grants of their own keys, the winners of the
/// shared key, and every wrong answer.
#[derive(Default)]
struct Seen {
    grants: Vec<Grant>,
    shared_wins: Vec<Grant>,
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
            let grant = (key.clone(), owner.clone(), l.fencing_token);
            seen.lock().unwrap().grants.push(grant);
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
    match (r.status(), r.lock()) {
        ("SUCCESS", Some(l)) => {
            let grant = ("batch/shared".to_string(), shared_owner, l.fencing_token);
            seen.lock().unwrap().shared_wins.push(grant);
        }
        ("SOMEONE_ELSE_HOLDS_LOCK", _) => {}
        (other, _) => wrong.push(format!("{i} shared acquire: {other} {:?}", r.body)),
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

fn applied_index(base: &str) -> u64 {
    let view = retried(|| api::cluster(base)).try_json::<ClusterAnswer>();
    view.and_then(|v| v.last_applied_index)
        .expect("an applied index")
}

/// The table (read back through `base`) holds exactly the `answered`
/// grants under `batch/`: each key's holder and fencing token as its
/// answer said, and no other lock. The tokens are log indexes of this run
/// (above `first_index`, applied before the clients began), one per grant.
fn assert_table_holds_exactly(base: &str, answered: &[&Grant], first_index: u64) {
    let list = retried(|| api::locks(base, "batch/", 10_000));
    assert_eq!(list.code, 200, "{:?}", list.body);
    let table: BTreeMap<String, (String, u64)> = list
        .json::<ListAnswer>()
        .locks
        .into_iter()
        .map(|l| (l.key, (l.owner_hash, l.fencing_token)))
        .collect();
    let want: BTreeMap<String, (String, u64)> = answered
        .iter()
        .map(|(k, o, t)| (k.clone(), (o.clone(), *t)))
        .collect();
    let keys: HashSet<&String> = table.keys().chain(want.keys()).collect();
    let differ: Vec<_> = keys
        .into_iter()
        .filter(|k| table.get(*k) != want.get(*k))
        .map(|k| (k, table.get(k), want.get(k)))
        .collect();
    assert!(differ.is_empty(), "(key, table, answered): {differ:?}");
    let tokens: HashSet<u64> = answered.iter().map(|(_, _, t)| *t).collect();
    assert_eq!(tokens.len(), answered.len(), "two grants shared a token");
    let old: Vec<u64> = tokens.into_iter().filter(|t| *t <= first_index).collect();
    assert!(
        old.is_empty(),
        "tokens {old:?} are not indexes after {first_index}"
    );
}

#[test]
fn concurrent_writes_share_entries_and_each_is_answered_alone() {
    let c = Cluster::start(3);
    let leader = c.url(c.leader().expect("leader"));
    let follower = c.url(c.followers()[0]);
    let ops_before = c.metric_sum("locker_proposed_client_ops_total");
    let entries_before = c.metric_sum("locker_proposed_client_entries_total");
    let first_index = applied_index(&leader);

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
    assert_eq!(seen.grants.len(), CLIENTS, "every own key granted");
    assert_eq!(
        seen.shared_wins.len(),
        1,
        "shared key: {:?}",
        seen.shared_wins
    );
    let answered: Vec<&Grant> = seen.grants.iter().chain(&seen.shared_wins).collect();
    assert_table_holds_exactly(&leader, &answered, first_index);

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
