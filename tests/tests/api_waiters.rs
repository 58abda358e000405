//! Blocking acquire: waiters are granted in arrival order, without polling.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use locker_tests::{api, Cluster};
use serde_json::json;

#[test]
fn ten_waiters_are_granted_one_at_a_time_in_arrival_order() {
    let c = Cluster::start(3);
    let leader = c.url(c.leader().expect("leader"));
    let follower = c.url(c.followers()[0]);
    let key = "fifo";
    let first = format!("{key}@h/1.1.0");
    assert_eq!(
        api::acquire(&leader, key, json!({"owner_hash": first, "ttl_ms": 60_000})).status(),
        "SUCCESS"
    );

    let grants: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let mut threads = Vec::new();
    for i in 0..10 {
        // Half through the follower: forwarding keeps the order too.
        let url = if i % 2 == 0 {
            leader.clone()
        } else {
            follower.clone()
        };
        let grants = grants.clone();
        threads.push(std::thread::spawn(move || {
            let me = format!("{key}@h/1.1.{}", i + 1);
            let r = api::acquire(
                &url,
                key,
                json!({"owner_hash": me, "ttl_ms": 60_000, "wait_ms": 60_000}),
            );
            assert_eq!(r.status(), "SUCCESS", "waiter {i}: {:?}", r.body);
            grants.lock().unwrap().push((i, Instant::now()));
            // Hold it briefly, then hand over by releasing.
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(
                api::release(&url, key, &me).status(),
                "SUCCESS",
                "waiter {i} release"
            );
        }));
        // Arrival order is the order the leader queued them in: the next
        // starts once this one is queued there (a fixed 150 ms let a
        // forwarded waiter arrive after the next one on a loaded machine).
        locker_tests::wait_for_metric(
            &leader,
            &format!("locker_waiters {}", i + 1),
            Duration::from_secs(15),
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        grants.lock().unwrap().is_empty(),
        "nobody may get it while the first holds it"
    );
    assert_eq!(api::release(&leader, key, &first).status(), "SUCCESS");
    for t in threads {
        t.join().expect("waiter thread");
    }
    let order: Vec<usize> = grants.lock().unwrap().iter().map(|(i, _)| *i).collect();
    assert_eq!(
        order,
        (0..10).collect::<Vec<_>>(),
        "grants out of arrival order"
    );
}

#[test]
fn a_waiter_is_granted_when_the_lock_expires_and_gives_up_at_its_deadline() {
    let c = Cluster::start(1);
    let url = c.url(1);
    assert_eq!(
        api::acquire(&url, "w", json!({"owner_hash": "w@h/1.1.0", "ttl_ms": 700})).status(),
        "SUCCESS"
    );
    let started = Instant::now();
    let r = api::acquire(
        &url,
        "w",
        json!({"owner_hash": "w@h/1.1.1", "wait_ms": 10_000}),
    );
    assert_eq!(r.status(), "SUCCESS", "{:?}", r.body);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "granted {took:?} after the expiry"
    );

    let started = Instant::now();
    let r = api::acquire(
        &url,
        "w",
        json!({"owner_hash": "w@h/1.1.2", "wait_ms": 500}),
    );
    assert_eq!((r.code, r.status()), (409, "SOMEONE_ELSE_HOLDS_LOCK"));
    assert_eq!(r.lock().map(|l| l.owner_hash).as_deref(), Some("w@h/1.1.1"));
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "gave up early"
    );
}

#[test]
fn a_waiter_that_disconnects_leaves_the_queue() {
    let c = Cluster::start(1);
    let url = c.url(1);
    assert_eq!(
        api::acquire(
            &url,
            "dc",
            json!({"owner_hash": "dc@h/1.1.0", "ttl_ms": 60_000})
        )
        .status(),
        "SUCCESS"
    );
    // First in line, but gives up after 1 s by hanging up.
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(1000))
        .build()
        .expect("client");
    let gone = impatient
        .post(format!("{url}/v1/locks/dc/acquire"))
        .json(&json!({"owner_hash": "dc@h/1.1.1", "wait_ms": 60_000}))
        .send();
    assert!(gone.is_err(), "the impatient waiter should have timed out");
    // Second in line: must get the lock when the holder releases, not the ghost.
    let url2 = url.clone();
    let second = std::thread::spawn(move || {
        api::acquire(
            &url2,
            "dc",
            json!({"owner_hash": "dc@h/1.1.2", "wait_ms": 20_000}),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(api::release(&url, "dc", "dc@h/1.1.0").status(), "SUCCESS");
    let r = second.join().expect("second waiter");
    assert_eq!(r.status(), "SUCCESS", "{:?}", r.body);
    assert_eq!(
        r.lock().map(|l| l.owner_hash).as_deref(),
        Some("dc@h/1.1.2")
    );
    let m = locker_tests::http()
        .get(format!("{url}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    assert!(m.contains("locker_waiters 0"), "waiters left behind:\n{m}");
}

#[test]
fn a_waiter_giving_up_never_takes_the_lock_from_the_head_of_the_queue() {
    // The leader's clock runs at twice real speed, so the head of the queue,
    // which sleeps until the holder's lease ends, wakes well after it ended
    // (no sweeps to wake it earlier). The second waiter's deadline falls in
    // between: the key is free then, but it is the head's turn.
    let c = Cluster::start_with(1, &["--test-clock-rate", "2", "--sweep-ms", "3600000"]);
    let url = c.url(1);
    let key = "cut";
    let holder = api::acquire(
        &url,
        key,
        json!({"owner_hash": "cut@h/1.1.0", "ttl_ms": 2000}),
    );
    assert_eq!(holder.status(), "SUCCESS");
    let granted = Instant::now();
    let head_url = url.clone();
    let head = std::thread::spawn(move || {
        api::acquire(
            &head_url,
            key,
            json!({"owner_hash": "cut@h/1.1.1", "wait_ms": 10_000}),
        )
    });
    std::thread::sleep(Duration::from_millis(150));
    // Ends about 1100 ms (real) after the grant: 2200 ms of leader time.
    let wait_ms = 1100u64.saturating_sub(granted.elapsed().as_millis() as u64);
    let second = api::acquire(
        &url,
        key,
        json!({"owner_hash": "cut@h/1.1.2", "wait_ms": wait_ms}),
    );
    let head = head.join().expect("head thread");
    assert_eq!(
        (head.status(), second.status()),
        ("SUCCESS", "SOMEONE_ELSE_HOLDS_LOCK"),
        "the waiter behind cut ahead of the head: head {:?}, second {:?}",
        head.body,
        second.body
    );
    assert_eq!(
        second.lock().map(|l| l.owner_hash).as_deref(),
        Some("cut@h/1.1.1")
    );
}

#[test]
fn writes_to_other_keys_do_not_wake_the_waiters_of_a_key() {
    let c = Cluster::start(1);
    let url = c.url(1);
    let metric = |name: &str| -> u64 {
        let text = locker_tests::http()
            .get(format!("{url}/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    };
    let key = "busy";
    assert_eq!(
        api::acquire(
            &url,
            key,
            json!({"owner_hash": "busy@h/1.1.0", "ttl_ms": 60_000})
        )
        .status(),
        "SUCCESS"
    );
    let waiters: Vec<_> = (1..=10)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let me = format!("busy@h/1.1.{i}");
                let r = api::acquire(&url, key, json!({"owner_hash": me, "wait_ms": 60_000}));
                if r.status() == "SUCCESS" {
                    api::release(&url, key, &me);
                }
                r
            })
        })
        .collect();
    locker_tests::eventually(Duration::from_secs(10), "10 queued waiters", || {
        (metric("locker_waiters ") == 10).then_some(())
    });
    let before = metric("locker_waiter_wakeups_total ");
    for i in 0..30 {
        let other = format!("other/{i}");
        assert_eq!(api::acquire(&url, &other, json!({})).status(), "SUCCESS");
    }
    let woken = metric("locker_waiter_wakeups_total ") - before;
    // Release and let the queue drain, so the threads end.
    assert_eq!(api::release(&url, key, "busy@h/1.1.0").status(), "SUCCESS");
    for (i, w) in waiters.into_iter().enumerate() {
        let r = w.join().expect("waiter");
        assert_eq!(r.status(), "SUCCESS", "waiter {i}: {:?}", r.body);
    }
    assert!(
        woken < 10,
        "30 writes to other keys woke the 10 waiters of {key:?} {woken} times"
    );
}

#[test]
fn a_waiter_moved_to_a_new_leader_is_not_answered_503() {
    // Leadership moves after the waiter has waited longer than
    // --leader-wait-ms: it used to get 503 NO_LEADER though a leader serves.
    waiter_moved_to_a_new_leader(&[]);
}

#[test]
fn a_waiter_moved_to_a_new_leader_keeps_its_deadline() {
    // Leadership moves within --leader-wait-ms: the waiter was re-run on the
    // new leader with a fresh wait_ms, answering after elapsed + wait_ms.
    waiter_moved_to_a_new_leader(&["--leader-wait-ms", "10000"]);
}

#[test]
fn a_forwarded_waiter_moved_to_a_new_leader_is_forwarded_again() {
    // Sent to a follower, which forwarded it to the leader: when leadership
    // moved, the old leader answered 503 NO_LEADER ("nothing done") and the
    // follower passed that on instead of forwarding to the new leader.
    waiter_moved_to_a_new_leader_via(&[], true);
}

fn waiter_moved_to_a_new_leader(flags: &[&str]) {
    waiter_moved_to_a_new_leader_via(flags, false);
}

/// A blocking acquire queued on the leader when leadership moves goes on to
/// the new leader with what is left of its wait: it answers with the holder
/// within its wait_ms (a client's timeout just above wait_ms must hold).
fn waiter_moved_to_a_new_leader_via(flags: &[&str], via_follower: bool) {
    let c = Cluster::start_with(3, flags);
    let leader = c.leader().expect("leader");
    let target = c.followers()[0];
    let url = c.url(leader);
    let entry = if via_follower {
        c.url(c.followers()[1])
    } else {
        url.clone()
    };
    let key = "moved";
    let held = api::acquire(
        &url,
        key,
        json!({"owner_hash": "moved@h/1.1.0", "ttl_ms": 600_000}),
    );
    assert_eq!(held.status(), "SUCCESS");
    let wait_ms = 8_000u64;
    let waiter_url = entry;
    let started = Instant::now();
    let waiter = std::thread::spawn(move || {
        api::acquire(
            &waiter_url,
            key,
            json!({"owner_hash": "moved@h/1.1.1", "wait_ms": wait_ms}),
        )
    });
    std::thread::sleep(Duration::from_millis(3_500));
    let moved = locker_tests::http()
        .post(format!("{url}/v1/cluster/leader"))
        .header("x-locker-cluster-secret", locker_tests::SECRET)
        .header("content-type", "application/json")
        .body(json!({ "id": target }).to_string())
        .send()
        .map(|r| r.status().as_u16());
    assert_eq!(moved.ok(), Some(200), "leadership did not move");
    let answer = waiter.join().expect("waiter thread");
    let took = started.elapsed();
    assert_eq!(
        answer.status(),
        "SOMEONE_ELSE_HOLDS_LOCK",
        "{:?}",
        answer.body
    );
    assert_eq!(
        answer.lock().map(|l| l.owner_hash).as_deref(),
        Some("moved@h/1.1.0")
    );
    assert!(
        took < Duration::from_millis(wait_ms + 1_500),
        "a wait of {wait_ms} ms answered after {took:?}: restarted on the new leader"
    );
}

/// A counter or gauge from the node's /metrics text.
fn metric(url: &str, name: &str) -> u64 {
    let text = locker_tests::http()
        .get(format!("{url}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

#[test]
fn draining_a_long_queue_wakes_each_waiter_a_few_times_not_once_per_grant() {
    // Every grant, release and queue move used to wake every waiter of the
    // key: draining n waiters cost about n * n wake-ups (a few thousand
    // waiters on one key kept the leader's cores busy). Only the head acts
    // on a change, so only it needs waking.
    let c = Cluster::start(1);
    let url = c.url(1);
    let key = "herd";
    let n = 60u64;
    let first = format!("{key}@h/1.1.0");
    assert_eq!(
        api::acquire(&url, key, json!({"owner_hash": first, "ttl_ms": 60_000})).status(),
        "SUCCESS"
    );
    let waiters: Vec<_> = (1..=n)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let me = format!("{key}@h/1.1.{i}");
                let r = api::acquire(&url, key, json!({"owner_hash": me, "wait_ms": 120_000}));
                if r.status() == "SUCCESS" {
                    api::release(&url, key, &me);
                }
                r
            })
        })
        .collect();
    locker_tests::eventually(Duration::from_secs(20), "all waiters queued", || {
        (metric(&url, "locker_waiters") == n).then_some(())
    });
    let before = metric(&url, "locker_waiter_wakeups_total");
    assert_eq!(api::release(&url, key, &first).status(), "SUCCESS");
    for (i, w) in waiters.into_iter().enumerate() {
        let r = w.join().expect("waiter");
        assert_eq!(r.status(), "SUCCESS", "waiter {i}: {:?}", r.body);
    }
    let woken = metric(&url, "locker_waiter_wakeups_total") - before;
    println!("draining {n} waiters: {woken} wake-ups");
    assert!(
        woken <= 5 * n,
        "draining {n} waiters took {woken} wake-ups (more than 5 per waiter)"
    );
}
