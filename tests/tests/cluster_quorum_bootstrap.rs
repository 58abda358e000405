//! A 3-node cluster forms as soon as a majority of its initial members is
//! up, whichever majority: no member (not even the lowest id) is needed.
//! The member that was not up joins when it starts, and a member that took
//! part and then lost its volume refuses to run instead of rejoining empty.

use std::time::{Duration, Instant};

use locker_proto::ClusterAnswer;
use locker_tests::{api, eventually, Cluster};
use serde_json::json;

fn write_through_leader(c: &Cluster, key: &str) {
    let leader = c.leader().expect("leader");
    let a = api::acquire(
        &c.url(leader),
        key,
        json!({"owner_hash": format!("{key}@h/1.1.1"), "ttl_ms": 600_000}),
    );
    assert_eq!(a.status(), "SUCCESS", "{:?}", a.body);
}

/// Every member, as node `id` sees it, has its client address recorded.
fn all_addresses_recorded(c: &Cluster, id: u64) -> bool {
    api::cluster(&c.url(id))
        .try_json::<ClusterAnswer>()
        .is_some_and(|v| {
            v.members.len() == 3 && v.members.iter().all(|m| !m.client_addr.is_empty())
        })
}

#[test]
fn nodes_1_and_2_form_the_cluster_without_3_which_joins_later() {
    let started = Instant::now();
    let mut c = Cluster::start_only(3, &[], &[1, 2]);
    // `start_only` waited for a leader that serves reads: a majority formed.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    write_through_leader(&c, "before-3");
    let v: ClusterAnswer = api::cluster(&c.url(1)).json();
    assert_eq!(v.members.iter().filter(|m| m.voter).count(), 3, "{v:?}");
    // Node 3 has never been heard from: no client address recorded for it.
    eventually(
        Duration::from_secs(10),
        "1 and 2 to record their addresses",
        || {
            let v: ClusterAnswer = api::cluster(&c.url(1)).try_json()?;
            let recorded = |id| {
                v.members
                    .iter()
                    .any(|m| m.id == id && !m.client_addr.is_empty())
            };
            (recorded(1) && recorded(2) && !recorded(3)).then_some(())
        },
    );

    c.restart(3); // its first start
    c.wait_ready(Duration::from_secs(30));
    let r = api::read(&c.url(3), "before-3");
    assert_eq!(
        r.lock().map(|l| l.owner_hash).as_deref(),
        Some("before-3@h/1.1.1"),
        "{:?}",
        r.body
    );
    eventually(
        Duration::from_secs(10),
        "3's addresses recorded everywhere",
        || {
            [1, 2, 3]
                .iter()
                .all(|&id| all_addresses_recorded(&c, id))
                .then_some(())
        },
    );
    write_through_leader(&c, "after-3");
    c.assert_replicas_agree(Duration::from_secs(20));
}

#[test]
fn nodes_2_and_3_form_the_cluster_without_the_lowest_id() {
    let mut c = Cluster::start_only(3, &[], &[2, 3]);
    write_through_leader(&c, "without-1");
    let leader = c.leader().expect("leader");
    assert_ne!(leader, 1);
    c.restart(1);
    c.wait_ready(Duration::from_secs(30));
    let r = api::read(&c.url(1), "without-1");
    assert_eq!(r.code, 200, "{:?}", r.body);
    c.assert_replicas_agree(Duration::from_secs(20));
}

/// A member that accepts connections but never answers (a stopped process,
/// a proxy that black-holes) does not hold up the others: each of its
/// "does a cluster exist" answers times out and the majority that did
/// answer forms the cluster.
#[test]
fn a_member_that_hangs_during_the_census_does_not_stop_the_majority() {
    let mut c = Cluster::configure(3, &[]);
    // Bound but never accepted: the kernel completes every handshake and
    // the requests wait for an answer that never comes.
    let _hung = std::net::TcpListener::bind(&c.node(3).peer_addr).expect("hold node 3's port");
    let started = Instant::now();
    c.restart(1);
    c.restart(2);
    let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.wait_ready(Duration::from_secs(20))
    }));
    if let Err(e) = ready {
        c.print_log_tails();
        std::panic::resume_unwind(e);
    }
    write_through_leader(&c, "with-3-hung");
    eprintln!("formed with node 3 hung in {:?}", started.elapsed());
}

#[test]
fn a_member_that_took_part_refuses_to_rejoin_on_an_empty_data_dir() {
    let mut c = Cluster::start(3);
    eventually(Duration::from_secs(10), "every address recorded", || {
        all_addresses_recorded(&c, 1).then_some(())
    });
    write_through_leader(&c, "kept");
    // Node 3 (not the lowest id, which never initialized anything by
    // itself in the old scheme either) loses its volume.
    c.kill(3);
    std::fs::remove_dir_all(&c.node(3).data_dir).expect("wipe node 3");
    c.restart(3);
    let status = c.node_mut(3).wait_exit(Duration::from_secs(20));
    let log = c.node(3).log_text();
    let status =
        status.unwrap_or_else(|| panic!("node 3 kept running on an empty data dir:\n{log}"));
    assert!(!status.success(), "exit status {status:?}");
    assert!(
        log.contains("taken part") && log.contains("data directory"),
        "no clear message in the log:\n{log}"
    );
    let leader = c.wait_ready(Duration::from_secs(30));
    let r = api::read(&c.url(leader), "kept");
    assert_eq!(r.code, 200, "{:?}", r.body);
}
