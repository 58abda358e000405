//! The replicated lock table on real 3-node clusters: replication to every
//! node, leader failover, whole-cluster crash and restart, and a node added at
//! runtime that catches up through a snapshot.

use std::time::Duration;

use locker_proto::{ClusterAnswer, ReadAnswer};
use locker_tests::{api, eventually, Cluster};
use serde_json::json;

fn owner(key: &str, n: u32) -> String {
    format!("{key}@test-host/4242.1000.{n}")
}

fn token(a: &locker_tests::Answer) -> u64 {
    a.lock().expect("a lock with a fencing token").fencing_token
}

#[test]
fn a_lock_granted_through_the_leader_is_seen_on_every_node() {
    let c = Cluster::start(3);
    let leader = c.leader().expect("leader");
    let a = api::acquire(
        &c.url(leader),
        "jobs/report",
        json!({"owner_hash": owner("jobs/report", 1), "ttl_ms": 60_000}),
    );
    assert_eq!((a.code, a.status()), (200, "SUCCESS"), "{:?}", a.body);
    for n in &c.nodes {
        // Linearizable read (forwarded by followers to the leader).
        let r = api::read(&n.url(), "jobs/report");
        assert!(
            r.read().locked,
            "node {} linearizable read: {:?}",
            n.id,
            r.body
        );
        assert_eq!(
            r.lock().map(|l| l.owner_hash),
            Some(owner("jobs/report", 1))
        );
        // Each replica applies it too: a stale local read sees it soon.
        eventually(Duration::from_secs(5), "replication to every node", || {
            api::read_stale(&n.url(), "jobs/report")
                .try_json::<ReadAnswer>()
                .is_some_and(|a| a.locked)
                .then_some(())
        });
    }
    // A write through a follower is forwarded and refused for another owner.
    let f = c.followers()[0];
    let b = api::acquire(
        &c.url(f),
        "jobs/report",
        json!({"owner_hash": owner("jobs/report", 2)}),
    );
    assert_eq!(
        (b.code, b.status()),
        (409, "SOMEONE_ELSE_HOLDS_LOCK"),
        "{:?}",
        b.body
    );
    assert_eq!(
        b.lock().map(|l| l.owner_hash),
        Some(owner("jobs/report", 1))
    );
    // Every replica holds the same table at the same index; each node answers
    // for itself (a digest is never forwarded).
    let agreed = c.assert_replicas_agree(Duration::from_secs(20));
    assert_eq!(agreed.digest.len(), 64);
    assert!(agreed.digest.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(agreed.locks >= 1, "{agreed:?}");
    for n in &c.nodes {
        let d = locker_tests::replicas::replica_digest(&n.url()).expect("a digest");
        assert_eq!(d.node_id, n.id);
    }
}

#[test]
fn killing_the_leader_elects_another_and_loses_no_acknowledged_lock() {
    let mut c = Cluster::start(3);
    let old = c.leader().expect("leader");
    let mut tokens = Vec::new();
    for i in 0..20 {
        let key = format!("k{i}");
        let a = api::acquire(
            &c.url(old),
            &key,
            json!({"owner_hash": owner(&key, 1), "ttl_ms": 120_000}),
        );
        assert_eq!(a.status(), "SUCCESS", "{:?}", a.body);
        tokens.push(token(&a));
    }
    c.kill(old);
    let new = c.wait_ready(Duration::from_secs(20));
    assert_ne!(new, old, "a killed node cannot lead");
    for (i, t) in tokens.iter().enumerate() {
        let key = format!("k{i}");
        let r = api::read(&c.url(new), &key);
        assert!(r.read().locked, "{key} lost after failover: {:?}", r.body);
        assert_eq!(r.lock().map(|l| l.fencing_token), Some(*t));
        let other = api::acquire(&c.url(new), &key, json!({"owner_hash": owner(&key, 2)}));
        assert_eq!(
            other.status(),
            "SOMEONE_ELSE_HOLDS_LOCK",
            "{key}: {:?}",
            other.body
        );
    }
    // Fencing tokens keep rising across the leader change.
    let fresh = api::acquire(
        &c.url(new),
        "fresh",
        json!({"owner_hash": owner("fresh", 1)}),
    );
    assert!(token(&fresh) > *tokens.iter().max().unwrap_or(&0));
    // The old leader comes back as a follower and catches up.
    c.restart(old);
    c.wait_ready(Duration::from_secs(20));
    eventually(
        Duration::from_secs(10),
        "the old leader to catch up",
        || {
            api::read_stale(&c.url(old), "fresh")
                .try_json::<ReadAnswer>()
                .is_some_and(|a| a.locked)
                .then_some(())
        },
    );
    c.assert_replicas_agree(Duration::from_secs(20));
}

#[test]
fn killing_every_node_and_restarting_keeps_acknowledged_locks_and_tokens_rise() {
    let mut c = Cluster::start(3);
    let leader = c.leader().expect("leader");
    let a = api::acquire(
        &c.url(leader),
        "durable",
        json!({"owner_hash": owner("durable", 1), "ttl_ms": 600_000}),
    );
    assert_eq!(a.status(), "SUCCESS");
    let before = token(&a);
    // Acknowledged means flushed on a majority: kill -9 all, right away.
    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    let leader = c.wait_ready(Duration::from_secs(30));
    let r = api::read(&c.url(leader), "durable");
    assert!(
        r.read().locked,
        "lost after whole-cluster crash: {:?}",
        r.body
    );
    assert_eq!(r.lock().map(|l| l.fencing_token), Some(before));
    let b = api::acquire(
        &c.url(leader),
        "durable",
        json!({"owner_hash": owner("durable", 2)}),
    );
    assert_eq!(b.status(), "SOMEONE_ELSE_HOLDS_LOCK");
    let rel = api::release(&c.url(leader), "durable", &owner("durable", 1));
    assert_eq!(rel.status(), "SUCCESS");
    let again = api::acquire(
        &c.url(leader),
        "durable",
        json!({"owner_hash": owner("durable", 2)}),
    );
    assert_eq!(again.status(), "SUCCESS");
    assert!(
        token(&again) > before,
        "token went from {before} to {}",
        token(&again)
    );
    c.assert_replicas_agree(Duration::from_secs(20));
}

#[test]
fn a_node_added_at_runtime_catches_up_through_a_snapshot() {
    // Small snapshot interval and log tail, so the log is purged quickly.
    let mut c = Cluster::start_with(3, &["--snapshot-every", "50", "--keep-logs", "5"]);
    let leader = c.leader().expect("leader");
    for i in 0..150 {
        let key = format!("snap/{i}");
        let a = api::acquire(
            &c.url(leader),
            &key,
            json!({"owner_hash": owner(&key, 1), "ttl_ms": 600_000}),
        );
        assert_eq!(a.status(), "SUCCESS", "{:?}", a.body);
    }
    let purged = eventually(
        Duration::from_secs(10),
        "the leader to purge its log",
        || {
            let cl = api::cluster(&c.url(leader)).try_json::<ClusterAnswer>()?;
            cl.purged_index.filter(|p| *p > 10)
        },
    );
    let added = c.add_node(4);
    assert_eq!(added.code, 200, "add member: {:?}", added.body);
    let members = added.json::<ClusterAnswer>().members;
    assert!(members.iter().any(|m| m.id == 4 && m.voter), "{members:?}");
    let url4 = c.url(4);
    // Entries up to `purged` are gone from every log: only a snapshot can carry them.
    let snap = eventually(
        Duration::from_secs(20),
        "node 4 to install a snapshot",
        || {
            api::cluster(&url4)
                .try_json::<ClusterAnswer>()?
                .snapshot_index
                .filter(|s| *s >= purged)
        },
    );
    assert!(snap >= purged);
    // The snapshot covers at least the purged entries; the newest keys may
    // come after it through ordinary replication, so wait for each (bounded).
    for i in [0, 75, 149] {
        let key = format!("snap/{i}");
        eventually(
            Duration::from_secs(10),
            &format!("{key} on the new node"),
            || {
                api::read_stale(&url4, &key)
                    .try_json::<ReadAnswer>()
                    .is_some_and(|a| a.locked)
                    .then_some(())
            },
        );
    }
    // And it takes part: with 4 voters, losing two old nodes still... needs 3 of 4.
    c.kill(leader);
    let new = c.wait_ready(Duration::from_secs(20));
    let r = api::read(&c.url(new), "snap/1");
    assert!(r.read().locked);
    // The node that caught up through a snapshot holds the same table.
    c.assert_replicas_agree(Duration::from_secs(20));
}

#[test]
fn sigterm_stops_a_node_cleanly_and_it_rejoins_with_its_data() {
    let mut c = Cluster::start(3);
    let leader = c.leader().expect("leader");
    let a = api::acquire(
        &c.url(leader),
        "graceful",
        json!({"owner_hash": owner("graceful", 1), "ttl_ms": 600_000}),
    );
    assert_eq!(a.status(), "SUCCESS");
    // Stopping the leader with SIGTERM: a clean exit (status 0)...
    assert!(
        c.node_mut(leader).stop(),
        "SIGTERM did not give a clean exit"
    );
    // ...the others carry on...
    let new = c.wait_ready(Duration::from_secs(20));
    assert_ne!(new, leader);
    let b = api::acquire(
        &c.url(new),
        "graceful",
        json!({"owner_hash": owner("graceful", 2)}),
    );
    assert_eq!(b.status(), "SOMEONE_ELSE_HOLDS_LOCK");
    // ...and it restarts on its data directory with everything it had.
    c.restart(leader);
    c.wait_ready(Duration::from_secs(20));
    let r = api::read_stale(&c.url(leader), "graceful");
    assert_eq!(
        r.lock().map(|l| l.owner_hash),
        Some(owner("graceful", 1)),
        "{:?}",
        r.body
    );
    c.assert_replicas_agree(Duration::from_secs(20));
}

#[test]
fn peer_traffic_without_the_cluster_secret_is_refused() {
    let c = Cluster::start(1);
    let peer = &c.node(1).peer_addr;
    let http = locker_tests::http();
    for (path, secret) in [
        ("/raft/vote", None),
        ("/raft/append", Some("wrong")),
        ("/peer/info", None),
    ] {
        let mut req = http.post(format!("http://{peer}{path}")).body(vec![0u8; 8]);
        if path == "/peer/info" {
            req = http.get(format!("http://{peer}{path}"));
        }
        if let Some(s) = secret {
            req = req.header("x-locker-cluster-secret", s);
        }
        let r = req.send().expect("peer port answers");
        assert_eq!(r.status().as_u16(), 401, "{path} with secret {secret:?}");
    }
    // The client port does not carry Raft traffic at all.
    let r = locker_tests::post(&format!("{}/raft/vote", c.url(1)), json!({}));
    assert_eq!(r.code, 404);
}

#[test]
fn a_member_can_be_removed_and_the_rest_carries_on() {
    let mut c = Cluster::start(3);
    let leader = c.leader().expect("leader");
    let victim = c.followers()[0];
    let r = locker_tests::http()
        .delete(format!("{}/v1/cluster/members/{victim}", c.url(leader)))
        .header("x-locker-cluster-secret", locker_tests::SECRET)
        .send()
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let body: ClusterAnswer = r.json().expect("a cluster view");
    let ids: Vec<u64> = body.members.iter().map(|m| m.id).collect();
    assert!(!ids.contains(&victim) && ids.len() == 2, "{ids:?}");
    c.kill(victim);
    // Two voters left: both needed, both there.
    let leader = c.wait_ready(Duration::from_secs(20));
    assert_eq!(
        api::acquire(&c.url(leader), "after-remove", json!({})).status(),
        "SUCCESS"
    );
}

#[test]
fn the_leader_sweeps_expired_records() {
    let c = Cluster::start(1);
    let url = c.url(1);
    for i in 0..5 {
        assert_eq!(
            api::acquire(&url, &format!("sweep/{i}"), json!({"ttl_ms": 200})).status(),
            "SUCCESS"
        );
    }
    assert_eq!(
        api::keepalive(&url, "sweep-host/1.1", 200).status(),
        "SUCCESS"
    );
    let metric = |name: &str| -> Option<f64> {
        let text = locker_tests::http()
            .get(format!("{url}/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    eventually(
        Duration::from_secs(10),
        "the sweep to remove expired records",
        || {
            (metric("locker_lock_records ") == Some(0.0)
                && metric("locker_process_records ") == Some(0.0))
            .then_some(())
        },
    );
}

#[test]
fn a_restarted_follower_is_ready_only_once_it_has_caught_up() {
    let mut c = Cluster::start(3);
    let leader = c.leader().expect("leader");
    let f = c.followers()[0];
    c.kill(f);
    for i in 0..50 {
        let key = format!("missed/{i}");
        assert_eq!(
            api::acquire(&c.url(leader), &key, json!({"ttl_ms": 600_000})).status(),
            "SUCCESS"
        );
    }
    c.restart(f);
    let url = c.url(f);
    eventually(Duration::from_secs(20), "the follower to be ready", || {
        (locker_tests::get(&format!("{url}/readyz")).code == 200).then_some(())
    });
    // Ready means caught up: its own replica already has what it missed.
    let r = api::read_stale(&url, "missed/49");
    assert!(r.read().locked, "ready before catching up: {:?}", r.body);
    c.assert_replicas_agree(Duration::from_secs(20));
}

#[test]
fn a_read_never_reports_an_expiry_that_a_later_leader_could_undo() {
    // A leader whose clock runs a minute ahead, and no sweeps to hide the race.
    let mut c = Cluster::start_with(
        1,
        &["--test-clock-offset-ms", "60000", "--sweep-ms", "3600000"],
    );
    let url = c.url(1);
    let a = api::acquire(
        &url,
        "skewed",
        json!({"owner_hash": owner("skewed", 1), "ttl_ms": 1000}),
    );
    assert_eq!(a.status(), "SUCCESS");
    std::thread::sleep(Duration::from_millis(1500));
    // Its clock says the lease is over: the read says free...
    assert!(!api::read(&url, "skewed").read().locked);
    // ...then the next leader's clock is a minute behind it.
    c.node_mut(1).set_flag("--test-clock-offset-ms", None);
    c.restart(1);
    c.wait_ready(Duration::from_secs(20));
    // The takeover marker must not revive what a read already called free.
    let r = api::read(&c.url(1), "skewed");
    assert!(
        !r.read().locked,
        "a lock came back after a read saw it free: {:?}",
        r.body
    );
}
