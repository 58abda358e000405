//! Log time across a failover, on a real 3-node cluster (docs/protocol.md, "Time").
//!
//! A leader change must hand a lease no more than the time without a leader:
//! a lock's (and a process's) remaining time survives the failover instead of
//! being reset to a fresh full ttl. And an idle leader keeps the log time up
//! with its clock (tick entries), so the time without traffic before the
//! failover is not granted again either.
//!
//! A leader whose clock is ahead or behind (moved there by a leadership
//! transfer) must neither end a lease early nor grant it more than the
//! handover took.
//!
//! Nodes run on this machine's clock (one with a test offset), so log times
//! (ms since the epoch, stamped by the leader) can be compared with the
//! test's own wall clock within a few hundred milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use locker_proto::{ClusterAnswer, KeepaliveAnswer, ReadAnswer};
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
    api::cluster(&c.url(id))
        .try_json::<ClusterAnswer>()
        .and_then(|a| a.last_applied_index)
        .unwrap_or(0)
}

fn expires_at(a: &locker_tests::Answer) -> u64 {
    a.lock()
        .map(|l| l.expires_at)
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
    eprintln!("idle with a live lease: {} entries in {idle:?}", to - from);
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
    let alive_until = ka.json::<KeepaliveAnswer>().alive_until;
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
    assert!(r.read().locked, "{:?}", r.body);
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
        (r.code == 200 && r.try_json::<ReadAnswer>().is_some_and(|a| !a.locked)).then(wall_ms)
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

fn transfer_leadership(c: &Cluster, via: u64, to: u64) {
    let r = locker_tests::http()
        .post(format!("{}/v1/cluster/leader", c.url(via)))
        .header("content-type", "application/json")
        .header("x-locker-cluster-secret", locker_tests::SECRET)
        .body(json!({ "id": to }).to_string())
        .send()
        .expect("transfer request");
    assert_eq!(r.status().as_u16(), 200, "transfer to {to}: {:?}", r.text());
}

/// A lease taken under a leader on the real clock, then leadership moved to
/// a node whose clock is `offset_ms` off: the lease must neither end before
/// its holder's deadline nor outlive it by more than the handover took.
fn lease_survives_a_skewed_leader(offset_ms: i64) {
    let mut c = Cluster::start(3);
    let skewed = c.followers()[0];
    let offset = offset_ms.to_string();
    c.node_mut(skewed)
        .set_flag("--test-clock-offset-ms", Some(&offset));
    c.restart(skewed);
    let mut leader = c.wait_ready(Duration::from_secs(30));
    if leader == skewed {
        let other = c.followers()[0];
        transfer_leadership(&c, leader, other);
        leader = c.wait_ready(Duration::from_secs(30));
    }

    let sent = wall_ms();
    let a = api::acquire(
        &c.url(leader),
        "skew/ttl",
        json!({"owner_hash": format!("skew/ttl@{PROCESS}.1"), "ttl_ms": 20_000}),
    );
    assert_eq!(a.status(), "SUCCESS", "{:?}", a.body);
    let e0 = expires_at(&a);
    // Idle a while: a takeover that granted a fresh ttl would show clearly.
    std::thread::sleep(Duration::from_secs(8));

    let moving = wall_ms();
    transfer_leadership(&c, leader, skewed);
    assert_eq!(c.wait_ready(Duration::from_secs(30)), skewed);
    let handover = wall_ms() - moving;

    let r = api::read(&c.url(skewed), "skew/ttl");
    assert!(r.read().locked, "{:?}", r.body);
    let e1 = expires_at(&r);
    eprintln!(
        "clock {offset_ms:+} ms: handover {handover} ms, expires_at moved by {} ms",
        e1 as i64 - e0 as i64
    );
    // A clock ahead is covered by the shift; one behind starts at the log
    // time (LeaderClock's floor) and needs none.
    let skew = offset_ms.max(0) as u64;
    assert!(
        e1 + 500 >= e0 + skew,
        "a leader {offset_ms} ms off did not shift the lease by its skew: {e0} -> {e1}"
    );
    assert!(
        e1 <= e0 + skew + handover + SLACK_MS,
        "a leader {offset_ms} ms off granted more than its skew and the handover \
         ({handover} ms): {e0} -> {e1}"
    );

    // In real time, the lease ends at its own deadline plus at most the
    // handover, whatever the new leader's clock says.
    let free_at = eventually(Duration::from_secs(60), "the lease to end", || {
        let r = api::read(&c.url(skewed), "skew/ttl");
        (r.code == 200 && r.try_json::<ReadAnswer>().is_some_and(|a| !a.locked)).then(wall_ms)
    });
    eprintln!(
        "clock {offset_ms:+} ms: the lease ended {} ms after its holder's deadline",
        free_at as i64 - (sent + 20_000) as i64
    );
    assert!(
        free_at >= sent + 20_000,
        "a leader {offset_ms} ms off ended the lease {} ms early",
        sent + 20_000 - free_at
    );
    assert!(
        free_at <= e0 + handover + SLACK_MS,
        "a leader {offset_ms} ms off let the lease outlive its deadline by {} ms",
        free_at - e0
    );
}

#[test]
fn a_new_leader_with_a_clock_ahead_ends_no_lease_early_and_grants_no_fresh_ttl() {
    lease_survives_a_skewed_leader(30_000);
}

#[test]
fn a_new_leader_with_a_clock_behind_keeps_the_lease_to_its_end() {
    lease_survives_a_skewed_leader(-30_000);
}
