//! A release applied at the leader whose answer is lost on the way back
//! (a Jepsen finding: the follower's forward lost the leader's reply in a
//! partition, the client library failed over, the retry found no key and
//! the library reported that NO_KEY as a definite answer, which reads as
//! "the lease had already ended").
//!
//! Real 3-node clusters (node built with `--features
//! locker-node/failpoints`): the fault point `api::forward::lose_answer`
//! is armed on a follower, which then forwards a release to the leader,
//! where it is applied, and answers 503 TIMEOUT instead of the leader's
//! SUCCESS. The client lists the follower first, so its retry goes to the
//! leader and gets NO_KEY. The library must report an unknown outcome.

use std::time::Duration;

use locker_client::{
    AcquireResult, Client, ClientOptions, Error, LockResponse, Locker, LockerOptions,
};
use locker_tests::{api, crash, Cluster};
use serde_json::json;

const LOSE: &str = "api::forward::lose_answer";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A leader, and a follower that knows it (it forwards at once).
fn cluster() -> (Cluster, u64, u64) {
    let c = Cluster::start(3);
    let leader = c.leader().expect("leader");
    let f = c.followers()[0];
    (c, leader, f)
}

/// The follower first, the leader second: the first try is forwarded, the
/// retry after it goes straight to the leader.
fn endpoints(c: &Cluster, follower: u64, leader: u64) -> Vec<String> {
    vec![c.url(follower), c.url(leader)]
}

fn assert_unknown(r: Result<LockResponse, Error>) {
    match r {
        Err(Error::Unavailable { last, .. }) => {
            assert!(last.contains("outcome unknown"), "{last}")
        }
        other => panic!("expected an unknown outcome, not a definite answer: {other:?}"),
    }
}

/// The release was applied all the same: the key is free at the leader.
fn assert_released(c: &Cluster, leader: u64, key: &str) {
    let r = api::read(&c.url(leader), key);
    assert_eq!(r.code, 200, "{:?}", r.body);
    assert!(!r.read().locked, "the lost try released it: {:?}", r.body);
}

#[test]
fn a_release_whose_answer_a_follower_lost_is_unknown_not_no_key() {
    let (c, leader, f) = cluster();
    let key = "rel-unknown/client";
    let owner = "rel-unknown/client@it-host/1.1.1";
    let held = api::acquire(
        &c.url(leader),
        key,
        json!({"owner_hash": owner, "ttl_ms": 60_000}),
    );
    assert_eq!(held.status(), "SUCCESS", "{:?}", held.body);
    let client = Client::new(ClientOptions {
        endpoints: endpoints(&c, f, leader),
        ..ClientOptions::default()
    })
    .expect("client");
    assert_eq!(crash::arm(c.node(f), LOSE, "return").code, 200);
    let r = runtime().block_on(client.release(key, owner));
    assert_eq!(crash::arm(c.node(f), LOSE, "off").code, 200);
    assert_unknown(r);
    assert_released(&c, leader, key);
}

/// The same through the seed-mirroring `Locker`, whose release retries
/// transient errors: the unknown outcome must reach the caller, not turn
/// into the NO_KEY of a later retry.
#[test]
fn a_lockers_release_whose_answer_was_lost_is_unknown_not_no_key() {
    let (c, leader, f) = cluster();
    let key = "rel-unknown/locker";
    let rt = runtime();
    let r = rt.block_on(async {
        let locker = Locker::new(LockerOptions {
            endpoints: endpoints(&c, f, leader),
            // No keep-alive between the acquire and the release: it would
            // fail over to the leader first, and the release with it.
            report_write_ms: 5_000,
            report_ttl_ms: 30_000,
            lock_ttl_ms: 60_000,
            ..LockerOptions::default()
        })
        .expect("locker");
        let acq = match locker.acquire(key, None).await {
            Ok(AcquireResult::Success(a)) => a,
            other => panic!("acquire: {other:?}"),
        };
        // The test helpers are blocking HTTP: off the async workers.
        let arm =
            |action: &str| tokio::task::block_in_place(|| crash::arm(c.node(f), LOSE, action));
        assert_eq!(arm("return").code, 200);
        let r = tokio::time::timeout(Duration::from_secs(60), acq.release()).await;
        assert_eq!(arm("off").code, 200);
        locker.terminate().await;
        r.expect("the release ends")
    });
    assert_unknown(r);
    assert_released(&c, leader, key);
}
