//! The client's promises beyond the seed, on real clusters: a job that blocks
//! its runtime keeps its lock; killing the leader does not interrupt a job;
//! failover past a dead endpoint.

mod common;

use common::{cluster_slot, key, runtime, start_cluster, with_logs_on_panic};
use locker_client::{Error, ErrorKind, Locker, LockerOptions, RunResult};
use locker_tests::{api, eventually};
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn a_job_that_blocks_its_runtime_longer_than_the_process_ttl_keeps_its_lock() {
    let _slot = cluster_slot();
    let mut cluster = start_cluster(1);
    let url = cluster.url(1);
    with_logs_on_panic(&mut cluster, |_| {
        // A current-thread runtime: when the job blocks its thread, nothing
        // async in this runtime runs, so only the reporter's own OS thread
        // can keep the process alive.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            const PROCESS_TTL_MS: u64 = 1_000;
            let locker = Locker::new(LockerOptions {
                endpoints: vec![url.clone()],
                report_write_ms: 200,
                report_ttl_ms: PROCESS_TTL_MS,
                lock_ttl_ms: 30_000,
                lock_recheck_ms: 100,
                lock_extend_ms: 10_000,
                ..Default::default()
            })
            .expect("locker");
            let k = key("blocked");
            let (url2, k2) = (url.clone(), k.clone());
            let res = locker
                .acquire_and_run(
                    &k,
                    |hb, owner| async move {
                        // Another process keeps trying to take the key while
                        // we are blocked.
                        let checker = std::thread::spawn(move || {
                            let mut refused = 0;
                            let until = Instant::now() + Duration::from_millis(3_500);
                            while Instant::now() < until {
                                let r = api::acquire(
                                    &url2,
                                    &k2,
                                    json!({"owner_hash": format!("{k2}@other/1.2.3"), "ttl_ms": 1000}),
                                );
                                assert_eq!(r.status(), "SOMEONE_ELSE_HOLDS_LOCK", "{:?}", r.body);
                                assert_eq!(
                                    r.lock().map(|l| l.owner_hash).as_deref(),
                                    Some(owner.as_str())
                                );
                                refused += 1;
                                std::thread::sleep(Duration::from_millis(200));
                            }
                            refused
                        });
                        // Block the runtime's only thread for 4x the process ttl.
                        std::thread::sleep(Duration::from_millis(4 * PROCESS_TTL_MS));
                        let refused = checker.join().map_err(|_| {
                            Error::Config("the lock was takeable while we were blocked".into())
                        })?;
                        // Unblocked: the lock is still ours, heartbeats work.
                        hb.delay(300).await?;
                        Ok::<_, Error>(refused)
                    },
                    None,
                )
                .await
                .expect("job ran to completion");
            match res {
                RunResult::Success(refused) => assert!(refused >= 10, "only {refused} checks"),
                other => panic!("{other:?}"),
            }
            locker.terminate().await;
        });
    });
}

#[test]
fn killing_the_leader_during_a_job_does_not_interrupt_it() {
    let _slot = cluster_slot();
    let mut cluster = start_cluster(3);
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let leader = cluster.leader().expect("a leader");
    let k = key("leader-kill");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let job = spawn_ten_second_job(endpoints, k.clone(), tx);
    with_logs_on_panic(&mut cluster, |cluster| {
        let owner = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the job started");
        std::thread::sleep(Duration::from_millis(1_500));
        kill_the_leader_and_see_the_lock_stay(cluster, leader, &k, &owner);
    });
    let (res, lost) = job.join().expect("job thread");
    assert!(lost.is_empty(), "lost the lock: {lost:?}");
    match res {
        Ok(RunResult::Success(beats)) => assert!(beats > 30, "only {beats} heartbeats"),
        other => panic!("the job was interrupted: {other:?}"),
    }
}

/// What the job brought back: its result (heartbeats done) and the lost-lock
/// events the client reported.
type JobOutcome = (Result<RunResult<u32>, Error>, Vec<String>);

/// A job holding `k` through the client for 10 s, heartbeating every 100 ms;
/// it sends its owner hash on `tx` once it runs.
fn spawn_ten_second_job(
    endpoints: Vec<String>,
    k: String,
    tx: std::sync::mpsc::Sender<String>,
) -> std::thread::JoinHandle<JobOutcome> {
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let locker = Locker::new(LockerOptions {
                endpoints,
                report_write_ms: 500,
                report_ttl_ms: 10_000,
                lock_ttl_ms: 20_000,
                lock_recheck_ms: 200,
                lock_extend_ms: 2_000,
                failover_timeout_ms: 15_000,
                ..Default::default()
            })
            .expect("locker");
            let mut errors = locker.errors();
            let res = locker
                .acquire_and_run(
                    &k,
                    |hb, owner| async move {
                        let _ = tx.send(owner);
                        let mut beats = 0u32;
                        let until = Instant::now() + Duration::from_secs(10);
                        while Instant::now() < until {
                            hb.delay(100).await?;
                            beats += 1;
                        }
                        Ok::<_, Error>(beats)
                    },
                    None,
                )
                .await;
            let mut lost = Vec::new();
            while let Some(ev) = errors.try_recv() {
                if ev.kind == ErrorKind::LostLock {
                    lost.push(ev.to_string());
                }
            }
            locker.terminate().await;
            (res, lost)
        })
    })
}

/// Kills the leader; the lock stays `owner`'s across the election, as a
/// survivor sees it.
fn kill_the_leader_and_see_the_lock_stay(
    cluster: &mut locker_tests::Cluster,
    leader: u64,
    k: &str,
    owner: &str,
) {
    let killed_at = Instant::now();
    cluster.kill(leader);
    let survivor = cluster
        .nodes
        .iter()
        .find(|n| n.is_running())
        .map(|n| n.url())
        .expect("a survivor");
    eventually(
        Duration::from_secs(20),
        "a new leader serving reads",
        || {
            let r = api::read(&survivor, k);
            (r.code == 200).then_some(())
        },
    );
    let r = api::read(&survivor, k);
    assert_eq!(
        r.lock().map(|l| l.owner_hash).as_deref(),
        Some(owner),
        "{:?}",
        r.body
    );
    eprintln!(
        "reads served again {:?} after the kill",
        killed_at.elapsed()
    );
}

#[test]
fn fails_over_past_a_dead_endpoint() {
    let _slot = cluster_slot();
    let mut cluster = start_cluster(1);
    let live = cluster.url(1);
    let dead = format!("http://127.0.0.1:{}", locker_tests::free_port());
    with_logs_on_panic(&mut cluster, |_| {
        runtime().block_on(async {
            let locker = Locker::new(LockerOptions {
                endpoints: vec![dead.clone(), live.clone()],
                report_write_ms: 500,
                ..Default::default()
            })
            .expect("locker");
            let res = locker
                .acquire_and_run(
                    &key("failover"),
                    |hb, _| async move {
                        hb.heartbeat().await?;
                        Ok::<_, Error>(hb.fencing_token())
                    },
                    None,
                )
                .await
                .expect("run");
            match res {
                RunResult::Success(Some(token)) => assert!(token > 0),
                other => panic!("{other:?}"),
            }
            locker.terminate().await;
        });
    });
}
