//! A new leader's takeover marker is proposed once per term.
//!
//! The marker moves every live lease; when it also rewrote each one to disk
//! (before the table-wide lock shift), with a million locks its apply took
//! longer than the write timeout, the node proposed another marker, and
//! another: each rewrote the whole table again (a restarted node grew to
//! 16 GB and never became ready). Here a node with a few thousand live
//! locks restarts with a 1 ms write timeout, so its marker is "slow" the
//! same way: it must still become ready, with one marker in its log.

use std::time::Duration;

use locker_tests::{enc, eventually, get, http, Cluster};
use serde_json::json;

const LOCKS: usize = 3_000;

#[test]
fn a_slow_takeover_marker_is_not_proposed_again() {
    let mut c = Cluster::start(1);
    let url = c.url(1);
    let client = http();
    for i in 0..LOCKS {
        let key = format!("marker/{i}");
        let r = client
            .post(format!("{url}/v1/locks/{}/acquire", enc(&key)))
            .json(&json!({"owner_hash": format!("{key}@t/1.1.{i}"), "ttl_ms": 600_000}))
            .send()
            .expect("acquire");
        assert!(r.status().is_success(), "acquire {i}: {}", r.status());
    }
    let before = get(&format!("{url}/readyz")).body["committed_index"]
        .as_u64()
        .expect("committed index");
    c.node_mut(1).set_flag("--write-timeout-ms", Some("1"));
    c.restart(1);
    let ready = eventually(
        Duration::from_secs(30),
        "the restarted node to be ready",
        || {
            let r = get(&format!("{url}/readyz"));
            (r.code == 200).then_some(r)
        },
    );
    // Time for a retry loop to pile up markers, were there one.
    std::thread::sleep(Duration::from_secs(2));
    let now = get(&format!("{url}/readyz")).body["committed_index"]
        .as_u64()
        .unwrap_or(u64::MAX);
    // The new term's blank entry, one marker, and the idle leader's clock
    // ticks (about one a second while leases are live); a marker proposed
    // every 100 ms would pass this many within the first second.
    assert!(
        now <= before + 2 + 5,
        "the marker was proposed again and again: committed {before} -> {now} ({:?})",
        ready.body
    );
}
