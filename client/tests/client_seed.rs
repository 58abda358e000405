//! The seed's own test suite (`Locker.test.ts`), ported case by case, run
//! against a real single-node cluster started by the `locker_tests` harness.
//!
//! Needs `locker-node` built (`cargo build -p locker-node`).

use locker_client::{
    AcquireResult, Acquired, Error, Locker, LockerOptions, OwnerHashStatus, RunResult,
};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

const REPORT_TTL_MS: u64 = 10_000;
const LOCK_TTL_MS: u64 = 3_000;

mod common;
use common::{cluster_slot, key, runtime, start_cluster};

/// The seed's `beforeEach` options.
fn seed_opts(url: &str) -> LockerOptions {
    LockerOptions {
        endpoints: vec![url.to_string()],
        report_write_ms: REPORT_TTL_MS / 10,
        report_ttl_ms: REPORT_TTL_MS,
        lock_recheck_ms: 100,
        lock_extend_ms: LOCK_TTL_MS / 3,
        lock_ttl_ms: LOCK_TTL_MS,
        ..Default::default()
    }
}

async fn must_acquire(locker: &Locker, key: &str, trace: Option<&str>) -> Acquired {
    match locker.acquire(key, trace).await.expect("acquire") {
        AcquireResult::Success(a) => a,
        AcquireResult::SomeoneElseHoldsLock(l) => panic!("{key} unexpectedly held by {l}"),
    }
}

/// Starts a cluster (outside any async runtime: the harness uses blocking
/// HTTP) and runs the async test body with two lockers.
fn with_lockers<F, Fut>(f: F)
where
    F: FnOnce(String, Locker, Locker) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _slot = cluster_slot();
    let mut cluster = start_cluster(1);
    let url = cluster.url(1);
    common::with_logs_on_panic(&mut cluster, |_| {
        runtime().block_on(async move {
            let l1 = Locker::new(seed_opts(&url)).expect("locker1");
            let l2 = Locker::new(seed_opts(&url)).expect("locker2");
            f(url, l1.clone(), l2.clone()).await;
            l1.terminate().await;
            l2.terminate().await;
        })
    });
    drop(cluster);
}

#[test]
fn acquires_and_releases_lock() {
    with_lockers(|_, locker1, locker2| async move {
        let k = key("key1");
        let res = must_acquire(&locker1, &k, Some("my-trace")).await;
        assert_eq!(res.lock_data.trace.as_deref(), Some("my-trace"));
        assert!(res.owner_hash().ends_with("#my-trace"));
        let st = locker1
            .read_owner_hash_status(res.owner_hash())
            .await
            .expect("status");
        assert_eq!(st.status, OwnerHashStatus::Running);

        let other = locker2.acquire(&k, None).await.expect("acquire");
        assert!(matches!(other, AcquireResult::SomeoneElseHoldsLock(_)));

        let rel = locker1.release(&k, &res.lock_data).await.expect("release");
        assert_eq!(rel.status, locker_client::LockStatus::Success);
        let st = locker2
            .read_owner_hash_status(res.owner_hash())
            .await
            .expect("status");
        assert_eq!(st.status, OwnerHashStatus::NoKey);
    });
}

#[test]
fn does_not_acquire_an_acquired_lock_from_the_same_process() {
    with_lockers(|_, locker1, _| async move {
        let k = key("key1");
        let res = must_acquire(&locker1, &k, None).await;
        match locker1.acquire(&k, None).await.expect("acquire") {
            AcquireResult::SomeoneElseHoldsLock(l) => assert_eq!(l.owner_hash, res.owner_hash()),
            AcquireResult::Success(_) => panic!("second acquire from the same process"),
        }
        let rel = locker1.release(&k, &res.lock_data).await.expect("release");
        assert_eq!(rel.status, locker_client::LockStatus::Success);
    });
}

#[test]
fn does_not_release_someone_elses_lock() {
    with_lockers(|_, locker1, locker2| async move {
        let k = key("key2");
        let res = must_acquire(&locker2, &k, None).await;
        let mut forged = res.lock_data.clone();
        // The seed sets ownerHash = "some"; ours must still parse for the
        // server, so forge a well-formed hash of another run.
        forged.owner_hash = format!("{k}@elsewhere/1.2.3");
        let rel = locker1.release(&k, &forged).await.expect("release");
        assert_eq!(rel.status, locker_client::LockStatus::SomeoneElseHoldsLock);
        assert_eq!(rel.lock.expect("holder").owner_hash, res.owner_hash());
        // Still held by its owner.
        let l = locker1
            .read_lock_data(&k)
            .await
            .expect("read")
            .expect("locked");
        assert_eq!(l.owner_hash, res.owner_hash());
    });
}

#[test]
fn acquires_lock_when_other_owner_process_dies_suddenly() {
    with_lockers(|url, locker1, locker2| async move {
        const SHORT_REPORT_TTL_MS: u64 = 1_000;
        let k = key("key1");
        let locker_to_die = Locker::new(LockerOptions {
            report_write_ms: SHORT_REPORT_TTL_MS / 10,
            report_ttl_ms: SHORT_REPORT_TTL_MS,
            ..seed_opts(&url)
        })
        .expect("locker");
        let res = must_acquire(&locker_to_die, &k, None).await;
        // No goodbye: keep-alives just stop, as after SIGKILL.
        locker_to_die.simulate_crash().await;
        tokio::time::sleep(Duration::from_millis(SHORT_REPORT_TTL_MS + 300)).await;
        must_acquire(&locker2, &k, None).await;
        let st = locker1
            .read_owner_hash_status(res.owner_hash())
            .await
            .expect("status");
        assert_eq!(st.status, OwnerHashStatus::SomeoneElseHoldsLock);
    });
}

#[test]
fn terminate_frees_the_locks_at_once() {
    with_lockers(|url, _, locker2| async move {
        let k = key("key1");
        let l = Locker::new(seed_opts(&url)).expect("locker");
        let res = must_acquire(&l, &k, None).await;
        let hb = res.heartbeater();
        l.terminate().await;
        // No waiting for any ttl: the process record is gone.
        must_acquire(&locker2, &k, None).await;
        assert!(matches!(hb.heartbeat().await, Err(Error::Lost(_))));
    });
}

#[test]
fn expires_the_lock_if_not_extended_for_a_long_time() {
    with_lockers(|_, locker1, locker2| async move {
        let k = key("key1");
        let res = must_acquire(&locker1, &k, None).await;
        tokio::time::sleep(Duration::from_millis(LOCK_TTL_MS + 300)).await;
        assert_eq!(locker2.read_lock_data(&k).await.expect("read"), None);
        let st = locker1
            .read_owner_hash_status(res.owner_hash())
            .await
            .expect("status");
        assert_eq!(st.status, OwnerHashStatus::NoKey);
    });
}

#[test]
fn does_not_expire_the_lock_if_it_is_extended() {
    with_lockers(|_, locker1, _| async move {
        let k = key("key1");
        let res = must_acquire(&locker1, &k, None).await;
        let extend = res.extender();
        for _ in 0..LOCK_TTL_MS / 1000 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let r = extend.extend().await.expect("extend");
            assert_eq!(r.status, locker_client::LockStatus::Success);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let l = locker1
            .read_lock_data(&k)
            .await
            .expect("read")
            .expect("still locked");
        assert_eq!(l.process_hash, res.lock_data.process_hash);
        assert_eq!(l.acquired_at, res.lock_data.acquired_at);
        assert_ne!(l.extended_at, res.lock_data.extended_at);
        assert_eq!(
            l.fencing_token, res.lock_data.fencing_token,
            "extend keeps the token"
        );
        let rel = locker1.release(&k, &res.lock_data).await.expect("release");
        assert_eq!(rel.status, locker_client::LockStatus::Success);
    });
}

#[test]
fn correctly_works_in_acquire_and_run() {
    with_lockers(|url, _, locker2| async move {
        let k = key("key1");
        let locker = Locker::new(LockerOptions {
            report_write_ms: 100,
            report_ttl_ms: 10_000,
            ..seed_opts(&url)
        })
        .expect("locker");
        let need_exit = Arc::new(AtomicBool::new(false));
        let (acq_tx, acq_rx) = oneshot::channel::<String>();
        let job = {
            let (locker, k, need_exit) = (locker.clone(), k.clone(), need_exit.clone());
            tokio::spawn(async move {
                locker
                    .acquire_and_run(
                        &k,
                        |hb, owner_hash| async move {
                            let _ = acq_tx.send(owner_hash);
                            while !need_exit.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                hb.heartbeat().await?;
                            }
                            Ok::<_, Error>(())
                        },
                        None,
                    )
                    .await
            })
        };
        let owner_hash = acq_rx.await.expect("job started");
        assert!(!owner_hash.is_empty());
        // Longer than the lock ttl: the heartbeats keep it ours.
        let until = tokio::time::Instant::now() + Duration::from_millis(LOCK_TTL_MS + 1_000);
        let mut attempts = 0;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
            match locker2.acquire(&k, None).await.expect("acquire") {
                AcquireResult::SomeoneElseHoldsLock(l) => assert_eq!(l.owner_hash, owner_hash),
                AcquireResult::Success(_) => panic!("took a lock that is being heartbeated"),
            }
            attempts += 1;
        }
        assert!(attempts > 20, "only {attempts} attempts");
        need_exit.store(true, Ordering::SeqCst);
        let res = job.await.expect("join").expect("run");
        assert_eq!(res, RunResult::Success(()));
        // Released afterwards.
        assert_eq!(locker2.read_lock_data(&k).await.expect("read"), None);
        locker.terminate().await;
    });
}

#[test]
fn does_seppuku_in_acquire_and_run_if_someone_else_has_taken_over() {
    with_lockers(|_, locker1, locker2| async move {
        let k = key("key1");
        let (expired_tx, expired_rx) = oneshot::channel::<()>();
        let (taken_tx, taken_rx) = oneshot::channel::<()>();
        let job = {
            let (locker1, k) = (locker1.clone(), k.clone());
            tokio::spawn(async move {
                locker1
                    .acquire_and_run(
                        &k,
                        |hb, _| async move {
                            tokio::time::sleep(Duration::from_millis(LOCK_TTL_MS + 200)).await;
                            let _ = expired_tx.send(());
                            let _ = taken_rx.await;
                            Ok::<_, Error>(hb.heartbeat().await)
                        },
                        None,
                    )
                    .await
            })
        };
        expired_rx.await.expect("job ran");
        must_acquire(&locker2, &k, None).await;
        let _ = taken_tx.send(());
        match job.await.expect("join").expect("run") {
            RunResult::Success(Err(Error::Lost(e))) => assert_eq!(e.key, k),
            other => panic!("heartbeat must fail doing seppuku, got {other:?}"),
        }
    });
}

#[test]
fn does_seppuku_naming_the_new_holder_after_a_takeover() {
    with_lockers(|_, locker1, locker2| async move {
        let k = key("key1");
        let (started_tx, started_rx) = oneshot::channel::<String>();
        let (taken_tx, taken_rx) = oneshot::channel::<()>();
        let job = {
            let (locker1, k) = (locker1.clone(), k.clone());
            tokio::spawn(async move {
                locker1
                    .acquire_and_run(
                        &k,
                        |hb, _| async move {
                            let _ = started_tx.send(hb.owner_hash().unwrap_or("").to_string());
                            let _ = taken_rx.await;
                            // Past lock_recheck_ms: the next heartbeat rechecks.
                            tokio::time::sleep(Duration::from_millis(150)).await;
                            Ok::<_, Error>(hb.heartbeat().await)
                        },
                        None,
                    )
                    .await
            })
        };
        let _mine = started_rx.await.expect("job ran");
        // Someone (an operator, a dead-process sweep...) frees the lock and
        // another owner takes it.
        let ph = locker1.process_hash().expect("process");
        let client = locker1.client().clone();
        let l = client.read_lock(&k).await.expect("read").expect("locked");
        let rel = client.release(&k, &l.owner_hash).await.expect("release");
        assert_eq!(rel.status, locker_client::LockStatus::Success);
        let thief = must_acquire(&locker2, &k, None).await;
        let _ = taken_tx.send(());
        match job.await.expect("join").expect("run") {
            RunResult::Success(Err(Error::Lost(e))) => {
                assert_eq!(e.key, k);
                assert_eq!(e.owner_hash, l.owner_hash);
                assert_eq!(
                    e.holder.expect("holder named").owner_hash,
                    thief.owner_hash()
                );
                assert!(e.owner_hash.contains(&ph));
            }
            other => panic!("heartbeat must fail doing seppuku, got {other:?}"),
        }
    });
}

#[test]
fn does_seppuku_when_someone_else_has_taken_over_even_from_the_same_pid() {
    with_lockers(|url, _, _| async move {
        let k = key("key1");
        let locker = Locker::new(LockerOptions {
            endpoints: vec![url.clone()],
            report_write_ms: 100_000, // don't write the report a 2nd time
            report_ttl_ms: 100,       // expire the process report quickly
            lock_recheck_ms: 1,       // make heartbeat recheck all the time
            lock_extend_ms: 100_000,  // never extend the lock
            lock_ttl_ms: 100_000,     // never expire the lock
            ..Default::default()
        })
        .expect("locker");
        let (expired_tx, expired_rx) = oneshot::channel::<()>();
        let (taken_tx, taken_rx) = oneshot::channel::<()>();
        let job = {
            let (locker, k) = (locker.clone(), k.clone());
            tokio::spawn(async move {
                locker
                    .acquire_and_run(
                        &k,
                        |hb, _| async move {
                            tokio::time::sleep(Duration::from_millis(1_000)).await; // > report_ttl_ms
                            let _ = expired_tx.send(());
                            let _ = taken_rx.await;
                            Ok::<_, Error>(hb.heartbeat().await)
                        },
                        None,
                    )
                    .await
            })
        };
        expired_rx.await.expect("job ran");
        // The process liveness has expired, but the lock ttl has not.
        must_acquire(&locker, &k, None).await;
        let _ = taken_tx.send(());
        match job.await.expect("join").expect("run") {
            RunResult::Success(Err(Error::Lost(e))) => assert_eq!(e.key, k),
            other => panic!("heartbeat must fail doing seppuku, got {other:?}"),
        }
        locker.terminate().await;
    });
}

fn mutex_across(lockers: usize) {
    with_lockers(move |_, locker1, locker2| async move {
        let k = key(&format!("test-mutex-{lockers}-"));
        let count = Arc::new(AtomicI32::new(0));
        let mut jobs = Vec::new();
        for i in 0..10u64 {
            let locker = if (i as usize).is_multiple_of(lockers) {
                locker1.clone()
            } else {
                locker2.clone()
            };
            let (k, count) = (k.clone(), count.clone());
            jobs.push(tokio::spawn(async move {
                locker
                    .mutex(
                        &k,
                        10_000,
                        |_hb| async move {
                            assert_eq!(count.fetch_add(1, Ordering::SeqCst) + 1, 1);
                            tokio::time::sleep(Duration::from_millis(i * 10)).await;
                            assert_eq!(count.fetch_sub(1, Ordering::SeqCst) - 1, 0);
                            Ok::<_, Error>(i)
                        },
                        10,
                        None,
                    )
                    .await
            }));
        }
        let mut done = Vec::new();
        for j in jobs {
            done.push(
                j.await
                    .expect("no overlap (a panic means two jobs ran at once)")
                    .expect("mutex"),
            );
        }
        done.sort_unstable();
        assert_eq!(done, (0..10).collect::<Vec<_>>());
        assert_eq!(count.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn does_work_in_mutex_across_1_locker() {
    mutex_across(1);
}

#[test]
fn does_work_in_mutex_across_2_lockers() {
    mutex_across(2);
}
