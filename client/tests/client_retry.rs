//! A request that took effect but whose answer was lost is retried on
//! another endpoint: the retry must not turn into a second, different
//! owner. An acquire sent without an owner hash got one made up by the
//! server on each try, so the first (lost) grant held the lock for nobody
//! and the retry was refused with that ghost as the holder.

mod common;

use common::{cluster_slot, key, runtime, start_cluster};
use locker_client::{AcquireRequest, Client, ClientOptions, Error, LockStatus};
use locker_tests::proxy::Proxy;

#[test]
fn an_acquire_whose_answer_was_lost_is_not_refused_on_retry() {
    let _slot = cluster_slot();
    let c = start_cluster(1);
    let url = c.url(1);
    let deaf = Proxy::start(&c.node(1).client_addr);
    deaf.deaf();
    let rt = runtime();
    rt.block_on(async move {
        let client = Client::new(ClientOptions {
            endpoints: vec![deaf.url(), url.clone()],
            failover_timeout_ms: 4_000,
            ..Default::default()
        })
        .expect("client");
        let k = key("lost-answer/");
        let r = client
            .acquire(
                &k,
                &AcquireRequest {
                    ttl_ms: Some(60_000),
                    ..Default::default()
                },
            )
            .await
            .expect("acquire");
        assert_eq!(
            r.status,
            LockStatus::Success,
            "the retry was refused: the lost first try holds the lock as {:?}",
            r.lock.map(|l| l.owner_hash)
        );
    });
}

/// An acquire refused after a try whose fate is unknown: the lost try's
/// copy, arriving once the key is free again, must not grant it to a run
/// the caller has given up (found by the fault suite in the same family as
/// tests/tests/late_copies.rs). The client ends that run with a release
/// before it answers, and the node then refuses the late copy. The answer
/// is an unknown outcome, not the retry's SOMEONE_ELSE_HOLDS_LOCK: seen
/// from the client, the lost try may have been granted and have expired
/// before the retry (a ttl shorter than a try), which the retry's refusal
/// and the fence's NO_KEY would not show.
#[test]
fn a_refused_retry_fences_the_lost_try() {
    let _slot = cluster_slot();
    let mut c = start_cluster(3);
    let leader = c.wait_ready(std::time::Duration::from_secs(30));
    let follower = c.followers()[0];
    let (lurl, furl) = (c.url(leader), c.url(follower));
    let k = key("fence-lost-try/");
    // Someone else holds the key.
    let holder = format!("{k}@other/1.1.1");
    let a = locker_tests::api::acquire(&lurl, &k, serde_json::json!({"owner_hash": holder}));
    assert_eq!(a.code, 200, "{:?}", a.body);
    // The first endpoint is a frozen follower: the first try's bytes wait
    // in its socket, and the try times out with its fate unknown.
    c.node_mut(follower).pause();
    let rt = runtime();
    let owner = format!("{k}@me/2.2.7");
    let answer = rt.block_on(async {
        let client = Client::new(ClientOptions {
            endpoints: vec![furl.clone(), lurl.clone()],
            failover_timeout_ms: 4_000,
            ..Default::default()
        })
        .expect("client");
        client
            .acquire(
                &k,
                &AcquireRequest {
                    owner_hash: Some(owner.clone()),
                    ttl_ms: Some(60_000),
                    ..Default::default()
                },
            )
            .await
    });
    match answer {
        Err(Error::Unavailable { last, .. }) => {
            assert!(last.contains("outcome unknown"), "{last}")
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
    // The key is freed, then the lost try arrives.
    let r = locker_tests::api::release(&lurl, &k, &holder);
    assert_eq!(r.status(), "SUCCESS", "{:?}", r.body);
    c.node_mut(follower).resume();
    c.assert_replicas_agree(std::time::Duration::from_secs(30));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let read = locker_tests::api::read(&lurl, &k);
    assert_eq!(
        read.body["locked"], false,
        "the lost try granted the key to a run that was refused: {:?}",
        read.body
    );
}
