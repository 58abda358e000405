//! `POST /v1/cluster/leader`: an operator (or the fault suite) moves
//! leadership to a chosen voter on a real 3-node cluster.

use std::time::{Duration, Instant};

use locker_proto::{ClusterAnswer, ErrorCode, RaftState};
use locker_tests::{api, http, Answer, Cluster, SECRET};
use serde_json::{json, Value};

fn transfer(base: &str, body: Value, secret: Option<&str>) -> Answer {
    let mut req = http()
        .post(format!("{base}/v1/cluster/leader"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(s) = secret {
        req = req.header("x-locker-cluster-secret", s);
    }
    match req.send() {
        Ok(r) => {
            let code = r.status().as_u16();
            let body = r.json().unwrap_or(Value::Null);
            Answer {
                code,
                body,
                retry_after: None,
            }
        }
        Err(e) => panic!("transfer request failed: {e}"),
    }
}

#[test]
fn leadership_moves_to_the_chosen_voter_which_serves_at_once() {
    let c = Cluster::start(3);
    let old = c.leader().expect("leader");
    let held = api::acquire(
        &c.url(old),
        "transfer/held",
        json!({"owner_hash": "transfer/held@h/1.2.1", "ttl_ms": 600_000}),
    );
    assert_eq!(held.status(), "SUCCESS");
    let followers = c.followers();
    let (target, via) = (followers[0], followers[1]);

    // Sent to a follower that is not the target: forwarded to the leader.
    let started = Instant::now();
    let a = transfer(&c.url(via), json!({"id": target}), Some(SECRET));
    assert_eq!(a.code, 200, "{:?}", a.body);
    assert_eq!(a.body, json!({"leader_id": target}));
    assert!(started.elapsed() < Duration::from_secs(5));

    // It leads, every node knows, and it serves without waiting.
    let cl = api::cluster(&c.url(target)).json::<ClusterAnswer>();
    assert_eq!((cl.leader_id, cl.state), (Some(target), RaftState::Leader));
    let w = api::acquire(&c.url(target), "transfer/new", json!({}));
    assert_eq!(w.status(), "SUCCESS", "{:?}", w.body);
    let r = api::read(&c.url(target), "transfer/held");
    let (now, before) = (r.lock().expect("held"), held.lock().expect("held"));
    assert_eq!(now.owner_hash, "transfer/held@h/1.2.1");
    assert_eq!(now.fencing_token, before.fencing_token);

    // Asking for the current leader is a no-op that answers at once.
    let again = transfer(&c.url(old), json!({"id": target}), Some(SECRET));
    assert_eq!(
        (again.code, again.body.clone()),
        (200, json!({"leader_id": target}))
    );

    // And back to the old leader.
    let back = transfer(&c.url(target), json!({"id": old}), Some(SECRET));
    assert_eq!(back.code, 200, "{:?}", back.body);
    assert_eq!(c.leader(), Some(old));
    c.assert_replicas_agree(Duration::from_secs(20));
}

#[test]
fn a_transfer_needs_the_secret_and_a_member_id() {
    let c = Cluster::start(3);
    let url = c.url(c.followers()[0]);
    let leader = c.leader().expect("leader");
    let no_secret = transfer(&url, json!({"id": 2}), None);
    assert_eq!(
        (no_secret.code, no_secret.error()),
        (401, Some(ErrorCode::Unauthorized))
    );
    let wrong = transfer(&url, json!({"id": 2}), Some("wrong"));
    assert_eq!(wrong.code, 401);
    let unknown = transfer(&url, json!({"id": 99}), Some(SECRET));
    assert_eq!(
        (unknown.code, unknown.error()),
        (404, Some(ErrorCode::UnknownNode))
    );
    let bad = transfer(&url, json!({"id": "two"}), Some(SECRET));
    assert_eq!((bad.code, bad.error()), (400, Some(ErrorCode::InvalidJson)));
    // Nothing moved.
    assert_eq!(c.leader(), Some(leader));
}
