//! What a follower does with requests it hands to the leader: input that
//! would break the forwarding itself, and headers only peers may set.

use std::time::Instant;

use locker_tests::{api, enc, post_raw, Cluster};
use serde_json::json;

#[test]
fn a_huge_wait_ms_sent_to_a_follower_is_refused_as_bad_input() {
    let c = Cluster::start(3);
    let f = c.followers()[0];
    let started = Instant::now();
    let a = post_raw(
        &format!("{}/v1/locks/{}/acquire", c.url(f), enc("fwd/huge-wait")),
        format!("{{\"wait_ms\":{}}}", u64::MAX),
    );
    assert_eq!(
        (a.code, a.error_code()),
        (400, "INVALID_WAIT"),
        "after {:?}: {:?}",
        started.elapsed(),
        a.body
    );
    // The node is still there and the key untouched.
    assert_eq!(
        api::read(&c.url(f), "fwd/huge-wait").body["locked"],
        json!(false)
    );
}
