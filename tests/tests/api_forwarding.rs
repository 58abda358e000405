//! What a follower does with requests it hands to the leader: input that
//! would break the forwarding itself, and headers only peers may set.

use std::time::{Duration, Instant};

use locker_tests::{api, enc, http, post_raw, Cluster};
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
    assert!(!api::read(&c.url(f), "fwd/huge-wait").read().locked);
}

#[test]
fn stale_reads_mean_the_same_to_the_router_and_the_handler() {
    let c = Cluster::start(3);
    let leader = c.leader().expect("leader");
    let f = c.followers()[0];
    let held = api::acquire(&c.url(leader), "fwd/stale", json!({"ttl_ms": 60_000}));
    assert_eq!(held.status(), "SUCCESS");
    let owner = held.lock().map(|l| l.owner_hash).unwrap_or_default();
    for id in [leader, f] {
        let base = c.url(id);
        // `1` and `true` both ask for a stale read, on the leader and a follower.
        for flag in ["true", "1"] {
            let url = format!("{base}/v1/locks/{}?stale={flag}", enc("fwd/stale"));
            locker_tests::eventually(Duration::from_secs(5), "the stale read", || {
                let r = locker_tests::get(&url);
                assert_eq!(r.code, 200, "node {id} {url}: {:?}", r.body);
                r.read().locked.then_some(())
            });
            let list = locker_tests::get(&format!("{base}/v1/locks?prefix=fwd%2F&stale={flag}"));
            assert_eq!(
                list.code, 200,
                "node {id} list stale={flag}: {:?}",
                list.body
            );
            let own = locker_tests::get(&format!("{base}/v1/owners/{}?stale={flag}", enc(&owner)));
            assert_eq!(
                own.code, 200,
                "node {id} owner stale={flag}: {:?}",
                own.body
            );
        }
        // Anything else is refused the same way on every node.
        for bad in ["yes", "2", ""] {
            let r = locker_tests::get(&format!("{base}/v1/locks/{}?stale={bad}", enc("fwd/stale")));
            assert_eq!(
                (r.code, r.error_code()),
                (400, "INVALID_QUERY"),
                "node {id} stale={bad}: {:?}",
                r.body
            );
        }
    }
}

#[test]
fn a_client_cannot_mark_its_request_as_forwarded() {
    let c = Cluster::start_with(3, &["--leader-wait-ms", "2000"]);
    let f = c.followers()[0];
    let leader = c.leader().expect("leader");
    let forgeries = [leader.to_string(), format!("{leader}:00"), "x".to_string()];
    for (i, forged) in forgeries.iter().enumerate() {
        let key = format!("fwd/forged-{i}");
        let r = http()
            .post(format!("{}/v1/locks/{}/acquire", c.url(f), enc(&key)))
            .header("x-locker-forwarded-by", forged)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .expect("send");
        let code = r.status().as_u16();
        let body: serde_json::Value = r.json().unwrap_or_default();
        assert_eq!(
            (code, body["status"].as_str()),
            (200, Some("SUCCESS")),
            "a forged forwarding header {forged:?} changed the answer: {body}"
        );
        let read = http()
            .get(format!("{}/v1/locks/{}", c.url(f), enc(&key)))
            .header("x-locker-forwarded-by", forged)
            .send()
            .expect("send");
        assert_eq!(read.status().as_u16(), 200, "forged header on a read");
    }
}
