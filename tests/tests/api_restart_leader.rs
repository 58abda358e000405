//! Right after a whole-cluster restart, the node that `/v1/cluster` names as
//! leader must serve, or wait (within `--leader-wait-ms`) for a ready leader
//! here or elsewhere, rather than answer 503 at once.
//!
//! The old leader restarted alone (it no longer restores its leadership
//! from its committed vote: `enable_leader_restore` is off, see
//! crash_points.rs) cannot lead. If the others elect a new leader meanwhile,
//! a request that reached the old leader first must end up at the new one.

use std::time::{Duration, Instant};

use locker_tests::{api, eventually, Cluster};

#[test]
fn a_read_sent_to_a_restored_leader_that_loses_its_term_reaches_the_new_leader() {
    let mut c = Cluster::start_with(3, &["--leader-wait-ms", "8000"]);
    let old = c.leader().expect("leader");
    for id in 1..=3 {
        c.kill(id);
    }
    c.restart(old);
    let url = c.url(old);
    eventually(
        Duration::from_secs(20),
        "the old leader serving HTTP",
        || (api::cluster(&url).code == 200).then_some(()),
    );
    // Freeze it, so the others elect a leader it does not hear about yet.
    c.node_mut(old).pause();
    let others: Vec<u64> = (1..=3).filter(|&id| id != old).collect();
    for &id in &others {
        c.restart(id);
    }
    let new_leader = eventually(Duration::from_secs(20), "a new leader", || {
        others.iter().find_map(|&id| {
            let v = api::cluster(&c.url(id)).body;
            (v["state"] == "Leader").then_some(id)
        })
    });
    eventually(Duration::from_secs(20), "the new leader serving", || {
        (api::read(&c.url(new_leader), "probe").code == 200).then_some(())
    });
    // The read queues in the frozen node's socket; it runs when it resumes,
    // before the node has heard of the new leader.
    let reader = std::thread::spawn(move || {
        let started = Instant::now();
        (api::read(&url, "restart/probe"), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    c.node_mut(old).resume();
    let (r, took) = reader.join().expect("reader thread");
    assert_eq!(
        r.code, 200,
        "a read to the restored leader was refused after {took:?}: {}",
        r.body
    );
    assert!(!r.read().locked);
}
