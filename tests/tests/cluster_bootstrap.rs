//! The lowest id forms the cluster on first start, and only then: started
//! again on an empty data directory (a container without its volume) while
//! its peers already hold a cluster, it refuses instead of forming a second one.

use std::time::Duration;

use locker_tests::{api, Cluster};
use serde_json::json;

#[test]
fn the_bootstrap_node_on_an_empty_data_dir_refuses_to_form_a_second_cluster() {
    let mut c = Cluster::start(3);
    let leader = c.leader().expect("leader");
    let a = api::acquire(
        &c.url(leader),
        "kept",
        json!({"owner_hash": "kept@h/1.1.1", "ttl_ms": 600_000}),
    );
    assert_eq!(a.status(), "SUCCESS");
    // Node 1 (the lowest id, the one that initializes) loses its volume.
    c.kill(1);
    std::fs::remove_dir_all(&c.node(1).data_dir).expect("wipe node 1");
    c.restart(1);
    let status = c.node_mut(1).wait_exit(Duration::from_secs(20));
    let log = c.node(1).log_text();
    let status =
        status.unwrap_or_else(|| panic!("node 1 kept running on an empty data dir:\n{log}"));
    assert!(!status.success(), "exit status {status:?}");
    assert!(
        log.contains("already initialized") && log.contains("data directory"),
        "no clear message in the log:\n{log}"
    );
    // The real cluster is untouched.
    let leader = c.wait_ready(Duration::from_secs(30));
    let r = api::read(&c.url(leader), "kept");
    assert_eq!(
        r.lock().map(|l| l.owner_hash).as_deref(),
        Some("kept@h/1.1.1"),
        "{:?}",
        r.body
    );
    c.assert_replicas_agree(Duration::from_secs(20));
}
