//! A node that accepts connections and never answers, first
//! in the endpoint list, must not stop the library: acquire, keep-alives,
//! heartbeats, reads and release all reach the healthy node within their
//! budgets, and the good endpoint is remembered.

mod common;

use common::{cluster_slot, key, runtime, start_cluster};
use locker_client::{AcquireResult, Acquired, Client, ClientOptions, Locker, LockerOptions};
use locker_tests::proxy::Proxy;
use std::time::{Duration, Instant};

#[test]
fn every_call_gets_past_a_hung_first_endpoint_within_its_budget() {
    let _slot = cluster_slot();
    let c = start_cluster(1);
    let url = c.url(1);
    let hung = Proxy::hung();
    let endpoints = vec![hung.url(), url.clone()];
    let rt = runtime();
    rt.block_on(async move {
        a_bare_client_reads_within_its_budget(endpoints.clone()).await;
        let locker = Locker::new(LockerOptions {
            endpoints,
            report_write_ms: 500,
            report_ttl_ms: 5_000,
            lock_recheck_ms: 300,
            lock_extend_ms: 1_000,
            lock_ttl_ms: 6_000,
            ..Default::default()
        })
        .expect("locker");
        let k = key("hung-endpoint/");
        let t = Instant::now();
        let acq = match locker.acquire(&k, None).await.expect("acquire") {
            AcquireResult::Success(a) => a,
            AcquireResult::SomeoneElseHoldsLock(h) => panic!("held by {h}"),
        };
        // The reporter's first keep-alive (2 s budget) plus the acquire.
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "acquire took {:?}",
            t.elapsed()
        );
        heartbeats_keep_the_lock_in_time(&acq).await;
        read_and_release_in_time(&locker, &k, acq).await;
        locker.terminate().await;
    });
}

/// A bare client: a read within a 3 s budget, not 5 s on the hung node.
async fn a_bare_client_reads_within_its_budget(endpoints: Vec<String>) {
    let bare = Client::new(ClientOptions {
        endpoints,
        failover_timeout_ms: 3_000,
        ..Default::default()
    })
    .expect("client");
    let t = Instant::now();
    bare.read_lock("nothing-here").await.expect("read");
    assert!(
        t.elapsed() < Duration::from_millis(3_000),
        "read took {:?}",
        t.elapsed()
    );
}

/// Heartbeats for longer than the lock ttl and the process ttl: every
/// keep-alive, extend and recheck must land in time, or the lock is
/// self-fenced and the heartbeat fails.
async fn heartbeats_keep_the_lock_in_time(acq: &Acquired) {
    let hb = acq.heartbeater();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(8) {
        let one = Instant::now();
        hb.heartbeat().await.expect("heartbeat keeps the lock");
        assert!(
            one.elapsed() < Duration::from_secs(3),
            "heartbeat took {:?}",
            one.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A read shows the lock as ours and the release frees it, each within 2 s.
async fn read_and_release_in_time(locker: &Locker, k: &str, acq: Acquired) {
    let t = Instant::now();
    let held = locker.read_lock_data(k).await.expect("read").expect("held");
    assert_eq!(held.owner_hash, acq.owner_hash());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "read took {:?}",
        t.elapsed()
    );

    let t = Instant::now();
    acq.release().await.expect("release");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "release took {:?}",
        t.elapsed()
    );
    assert!(locker.read_lock_data(k).await.expect("read").is_none());
}
