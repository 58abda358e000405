//! Log time across a failover, on a real 3-node cluster (SPEC section 3).
//!
//! A leader change must hand a lease no more than the time without a leader:
//! a lock's (and a process's) remaining time survives the failover instead of
//! being reset to a fresh full ttl. And an idle leader keeps the log time up
//! with its clock (tick entries), so the time without traffic before the
//! failover is not granted again either.
//!
//! Every node of the test runs on this machine's clock, so log times (ms since
//! the epoch, stamped by the leader) can be compared with the test's own wall
//! clock within a few hundred milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use locker_tests::{api, eventually, Cluster};
use serde_json::json;

const PROCESS: &str = "time-host/4242.1000";
/// How long the cluster stays idle before the failover: long enough that a
/// takeover granting it again (or a fresh ttl) is far outside the bounds below.
const IDLE: Duration = Duration::from_secs(12);
/// Slack on top of the measured leaderless time: the tick period (~1 s, the
/// log time may lag the leader's clock by that much) plus scheduling on a busy
/// machine.
const SLACK_MS: u64 = 3_000;

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn applied_index(c: &Cluster, id: u64) -> u64 {
    api::cluster(&c.url(id)).body["last_applied_index"]
        .as_u64()
        .unwrap_or(0)
}

fn expires_at(a: &locker_tests::Answer) -> u64 {
    a.body["lock"]["expires_at"]
        .as_u64()
        .unwrap_or_else(|| panic!("no expires_at in {:?}", a.body))
}

#[test]
fn an_idle_leader_commits_clock_ticks_while_a_lease_is_live() {
    let c = Cluster::start(3);
    let leader = c.leader().expect("leader");
    let url = c.url(leader);
    let owner = format!("time/idle@{PROCESS}.1");
    let a = api::acquire(
        &url,
        "time/idle",
        json!({"owner_hash": owner, "ttl_ms": 60_000}),
    );
    assert_eq!(a.status(), "SUCCESS", "{:?}", a.body);

    let idle = Duration::from_secs(6);
    let from = applied_index(&c, leader);
    std::thread::sleep(idle);
    let to = applied_index(&c, leader);
    // About one tick a second; a third of that is plenty on a busy machine,
    // and zero (the behaviour before ticks) is far below it.
    assert!(
        to >= from + idle.as_secs() / 3,
        "an idle leader must commit clock ticks: applied index {from} -> {to} in {idle:?}"
    );
    // Every replica applies them too, so a follower's log time keeps up.
    for f in c.followers() {
        eventually(Duration::from_secs(5), "followers apply the ticks", || {
            (applied_index(&c, f) >= to).then_some(())
        });
    }

    // With nothing live, a takeover would shift nothing: no ticks at all.
    let r = api::release(&url, "time/idle", &owner);
    assert_eq!(r.status(), "SUCCESS", "{:?}", r.body);
    // (A tick already on its way when the lock went may still land.)
    std::thread::sleep(Duration::from_millis(500));
    let from = applied_index(&c, leader);
    std::thread::sleep(Duration::from_secs(3));
    let to = applied_index(&c, leader);
    assert_eq!(from, to, "an idle leader with nothing live wrote entries");
}

#[test]
fn a_failover_keeps_the_remaining_lease_time() {
    let mut c = Cluster::start(3);
    let old = c.leader().expect("leader");
    let url = c.url(old);

    // A process with 25 s to live and a long lock bound to it, and a ttl-only
    // lock of 60 s. `sent` is before the keep-alive left: the holder's own
    // deadline for the process is `sent + 25 s` at the earliest.
    let sent = wall_ms();
    let ka = api::keepalive(&url, PROCESS, 25_000);
    assert_eq!(ka.status(), "SUCCESS", "{:?}", ka.body);
    let alive_until = ka.body["alive_until"].as_u64().expect("alive_until");
    let bound = api::acquire(
        &url,
        "time/bound",
        json!({"owner_hash": format!("time/bound@{PROCESS}.1"),
               "process_hash": PROCESS, "ttl_ms": 600_000}),
    );
    assert_eq!(bound.status(), "SUCCESS", "{:?}", bound.body);
    let ttl = api::acquire(
        &url,
        "time/ttl",
        json!({"owner_hash": format!("time/ttl@{PROCESS}.2"), "ttl_ms": 60_000}),
    );
    assert_eq!(ttl.status(), "SUCCESS", "{:?}", ttl.body);
    let e0 = expires_at(&ttl);

    // Idle: no client writes, so only the leader's ticks move the log time.
    std::thread::sleep(IDLE);

    let killed = wall_ms();
    c.kill(old);
    let new = c.wait_ready(Duration::from_secs(30));
    assert_ne!(new, old);
    let leaderless = wall_ms() - killed;

    // The ttl-only lock: shifted by the leaderless gap, not given 60 s again.
    let r = api::read(&c.url(new), "time/ttl");
    assert_eq!(r.body["locked"], json!(true), "{:?}", r.body);
    let e1 = expires_at(&r);
    eprintln!(
        "leaderless {leaderless} ms; ttl-only lock expires_at moved by {} ms",
        e1.saturating_sub(e0)
    );
    assert!(e1 >= e0, "a failover shortened the lease: {e0} -> {e1}");
    assert!(
        e1 <= e0 + leaderless + SLACK_MS,
        "a failover granted more than the leaderless time ({leaderless} ms): \
         expires_at {e0} -> {e1} (+{} ms)",
        e1 - e0
    );

    // The process-bound lock lives as long as its process's remaining time
    // (plus the leaderless gap), and not a fresh process ttl from the takeover.
    let free_at = eventually(Duration::from_secs(60), "the bound lock to end", || {
        let r = api::read(&c.url(new), "time/bound");
        (r.code == 200 && r.body["locked"] == json!(false)).then(wall_ms)
    });
    eprintln!(
        "bound lock ended {} ms after its process's alive_until before the failover",
        free_at.saturating_sub(alive_until)
    );
    assert!(
        free_at >= sent + 25_000,
        "the bound lock ended at {free_at}, before its process's deadline {}",
        sent + 25_000
    );
    assert!(
        free_at <= alive_until + leaderless + SLACK_MS,
        "the process got more than the leaderless time ({leaderless} ms): \
         alive until {alive_until}, its lock ended at {free_at} (+{} ms)",
        free_at - alive_until
    );
}
