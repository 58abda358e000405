//! Unit tests of the Locker, Heartbeater and reporter against a scripted
//! fake peer (an axum router speaking the proto bodies; no cluster), with a
//! manual clock where timing matters.

use crate::testutil::{refuse, reply, FakePeer};
use crate::*;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use locker_proto::{ExtendRequest, KeepaliveRequest, ReleaseRequest};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A one-key fake node: grants the lock to the first acquirer, answers
/// rechecks with whoever holds it, can refuse keep-alives, and can be told
/// that someone else took the lock.
#[derive(Default)]
struct FakeState {
    holder: Option<String>,
    process: Option<String>,
    token: u64,
    keepalives_fail: bool,
    read_delay_ms: u64,
    keepalives: Vec<String>,
    ended: Vec<String>,
    /// Acquires still to refuse with `OWNER_HASH_RETIRED`.
    retire_acquires: usize,
    /// Acquires still to answer 503 `TIMEOUT` without applying (their
    /// fate unknown to the client).
    lose_acquires: usize,
    /// The owner hash of every acquire seen.
    acquires: Vec<String>,
    /// Releases still to apply and then answer 503 `TIMEOUT`, as a
    /// follower does when its forward's answer from the leader is lost.
    lose_release_answers: usize,
}

type Shared = Arc<Mutex<FakeState>>;

fn lock_data(owner: &str, process: Option<&str>, token: u64) -> LockData {
    LockData {
        key: "k".into(),
        owner_hash: owner.into(),
        process_hash: process.map(str::to_string),
        trace: None,
        acquired_at: 1,
        extended_at: 1,
        expires_at: 2,
        ttl_ms: 300_000,
        fencing_token: token,
    }
}

fn answer(status: LockStatus, lock: Option<LockData>) -> Response {
    reply(status.http_status(), &LockResponse { status, lock })
}

/// The holder's answer to someone else (409 with the holder's lock).
fn held_by_other(s: &FakeState, h: &str) -> Response {
    let l = lock_data(h, s.process.as_deref(), s.token);
    answer(LockStatus::SomeoneElseHoldsLock, Some(l))
}

async fn keepalive(
    State(st): State<Shared>,
    Path(ph): Path<String>,
    Json(_body): Json<KeepaliveRequest>,
) -> Response {
    let mut s = st.lock().expect("state");
    if s.keepalives_fail {
        return refuse(ErrorCode::NoLeader, "scripted");
    }
    s.keepalives.push(ph);
    let ok = KeepaliveResponse {
        status: ProcessStatus::Success,
        alive_until: 1,
    };
    reply(200, &ok)
}

async fn end_process(State(st): State<Shared>, Path(ph): Path<String>) -> Response {
    st.lock().expect("state").ended.push(ph);
    reply(
        200,
        &StatusAnswer {
            status: ProcessStatus::Success,
        },
    )
}

async fn acquire(State(st): State<Shared>, Json(body): Json<AcquireRequest>) -> Response {
    let mut s = st.lock().expect("state");
    let owner = body.owner_hash.unwrap_or_default();
    s.acquires.push(owner.clone());
    if s.lose_acquires > 0 {
        s.lose_acquires -= 1;
        return refuse(ErrorCode::Timeout, "scripted: answer lost");
    }
    if s.retire_acquires > 0 {
        s.retire_acquires -= 1;
        return refuse(ErrorCode::OwnerHashRetired, "scripted");
    }
    if let Some(h) = s.holder.clone().filter(|h| *h != owner) {
        return held_by_other(&s, &h);
    }
    s.token += 1;
    s.holder = Some(owner.clone());
    s.process = body.process_hash.clone();
    let l = lock_data(&owner, body.process_hash.as_deref(), s.token);
    answer(LockStatus::Success, Some(l))
}

async fn extend(State(st): State<Shared>, Json(body): Json<ExtendRequest>) -> Response {
    let s = st.lock().expect("state");
    match s.holder.clone() {
        None => answer(LockStatus::NoKey, None),
        Some(h) if h != body.owner_hash => held_by_other(&s, &h),
        Some(h) => {
            let l = lock_data(&h, s.process.as_deref(), s.token);
            answer(LockStatus::Success, Some(l))
        }
    }
}

async fn release(State(st): State<Shared>, Json(body): Json<ReleaseRequest>) -> Response {
    let mut s = st.lock().expect("state");
    let done = match s.holder.clone() {
        None => answer(LockStatus::NoKey, None),
        Some(h) if h != body.owner_hash => held_by_other(&s, &h),
        Some(_) => {
            s.holder = None;
            answer(LockStatus::Success, None)
        }
    };
    if s.lose_release_answers > 0 {
        // Applied above; only the answer is lost.
        s.lose_release_answers -= 1;
        return refuse(
            ErrorCode::Timeout,
            "scripted: the leader's answer was cut off",
        );
    }
    done
}

async fn read(State(st): State<Shared>) -> Response {
    let (delay, lock) = {
        let s = st.lock().expect("state");
        let lock = s
            .holder
            .as_deref()
            .map(|h| lock_data(h, s.process.as_deref(), s.token));
        (s.read_delay_ms, lock)
    };
    // Slow answers without holding the state (writes go on meanwhile).
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let answer = ReadAnswer {
        locked: lock.is_some(),
        lock,
    };
    reply(200, &answer)
}

async fn fake_node() -> (FakePeer, Shared) {
    let st: Shared = Arc::default();
    let router = Router::new()
        .route("/v1/processes/{ph}", put(keepalive).delete(end_process))
        .route("/v1/locks/{key}", get(read))
        .route("/v1/locks/{key}/acquire", post(acquire))
        .route("/v1/locks/{key}/extend", post(extend))
        .route("/v1/locks/{key}/release", post(release))
        .fallback(|| async { refuse(ErrorCode::NotFound, "no route") })
        .with_state(st.clone());
    (FakePeer::serve(router).await, st)
}

fn opts(url: String, clock: Arc<ManualClock>) -> LockerOptions {
    LockerOptions {
        endpoints: vec![url],
        report_write_ms: 1_000,
        report_ttl_ms: 10_000,
        reporter_spawn_timeout_ms: 3_000,
        lock_recheck_ms: 100,
        lock_extend_ms: 1_000,
        lock_ttl_ms: 3_000,
        failover_timeout_ms: 1_000,
        request_timeout_ms: 1_000,
        clock: Some(clock),
        ..Default::default()
    }
}

async fn acquired(locker: &Locker) -> Acquired {
    match locker.acquire("k", None).await.expect("acquire") {
        AcquireResult::Success(a) => a,
        AcquireResult::SomeoneElseHoldsLock(l) => panic!("unexpectedly held by {l}"),
    }
}

#[tokio::test]
async fn acquire_waits_for_keepalive_and_uses_seed_formats() {
    let (srv, st) = fake_node().await;
    let clock = Arc::new(ManualClock::new(1_000));
    let locker = Locker::new(opts(srv.url(), clock)).expect("locker");
    let acq = acquired(&locker).await;
    let ph = locker.process_hash().expect("reporter started");
    assert!(is_valid_process_hash(&ph), "{ph}");
    assert!(ph.starts_with(&format!("{}/{}.", hostname(), std::process::id())));
    // The first keep-alive was written before the acquire.
    assert_eq!(st.lock().expect("st").keepalives.first(), Some(&ph));
    let parts = parse_owner_hash(acq.owner_hash()).expect("owner hash parses");
    assert_eq!(parts.key, "k");
    assert_eq!(parts.process_hash, ph);
    assert_eq!(acq.lock_data.process_hash.as_deref(), Some(ph.as_str()));
    // A second acquire from the same process is a different owner: refused.
    match locker.acquire("k", Some("t")).await.expect("acquire") {
        AcquireResult::SomeoneElseHoldsLock(l) => {
            assert_eq!(l.owner_hash, acq.lock_data.owner_hash)
        }
        AcquireResult::Success(_) => panic!("second acquire must be refused"),
    }
    locker.terminate().await;
    // terminate ends the process record (frees its locks at once).
    assert_eq!(st.lock().expect("st").ended, vec![ph]);
    assert!(matches!(
        locker.acquire("k", None).await,
        Err(Error::Terminated)
    ));
}

#[tokio::test]
async fn heartbeats_are_cheap_and_coalesced() {
    let (srv, st) = fake_node().await;
    let clock = Arc::new(ManualClock::new(1_000));
    let locker = Locker::new(opts(srv.url(), clock.clone())).expect("locker");
    let acq = acquired(&locker).await;
    let hb = acq.heartbeater();
    // Nothing due: a tight loop makes no request at all.
    for _ in 0..10_000 {
        hb.heartbeat().await.expect("heartbeat");
    }
    assert_eq!(srv.hits_of("GET /v1/locks/k"), 0);
    assert_eq!(srv.hits_of("POST /v1/locks/k/extend"), 0);

    // A recheck is due; 20 concurrent heartbeats share one slow request.
    st.lock().expect("st").read_delay_ms = 200;
    clock.advance(150);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let hb = hb.clone();
        tasks.push(tokio::spawn(async move { hb.heartbeat().await }));
    }
    for t in tasks {
        t.await.expect("join").expect("heartbeat ok");
    }
    assert_eq!(
        srv.hits_of("GET /v1/locks/k"),
        1,
        "concurrent rechecks coalesce"
    );

    // Rechecked just now: not again until lock_recheck_ms passes.
    hb.heartbeat().await.expect("hb");
    assert_eq!(srv.hits_of("GET /v1/locks/k"), 1);

    // After lock_extend_ms an extend (not a recheck) goes out.
    clock.advance(1_000);
    hb.heartbeat().await.expect("hb");
    assert_eq!(srv.hits_of("POST /v1/locks/k/extend"), 1);
    assert_eq!(srv.hits_of("GET /v1/locks/k"), 1);
    locker.terminate().await;
}

#[tokio::test]
async fn takeover_fails_heartbeat_naming_the_new_holder() {
    let (srv, st) = fake_node().await;
    let clock = Arc::new(ManualClock::new(1_000));
    let locker = Locker::new(opts(srv.url(), clock.clone())).expect("locker");
    let mut errors = locker.errors();
    let acq = acquired(&locker).await;
    let hb = acq.heartbeater();
    let mine = acq.owner_hash().to_string();
    st.lock().expect("st").holder = Some("k@thief/1.2.3".into());
    clock.advance(150);
    match hb.heartbeat().await {
        Err(Error::Lost(e)) => {
            assert_eq!(e.key, "k");
            assert_eq!(e.owner_hash, mine);
            assert_eq!(e.reason, LostReason::TakenOver);
            assert_eq!(e.holder.expect("holder").owner_hash, "k@thief/1.2.3");
        }
        other => panic!("expected a lost lock, got {other:?}"),
    }
    // Sticky, and reported on the error stream.
    assert!(hb.is_lost());
    assert!(matches!(hb.heartbeat().await, Err(Error::Lost(_))));
    let lost = tokio::time::timeout(Duration::from_secs(1), hb.lost())
        .await
        .expect("lost() completes");
    assert_eq!(lost.reason, LostReason::TakenOver);
    let mut saw = false;
    while let Some(ev) = errors.try_recv() {
        saw |= ev.kind == ErrorKind::LostLock;
    }
    assert!(saw, "lost_lock event emitted");
    locker.terminate().await;
}

#[tokio::test]
async fn self_fences_at_local_deadline_without_the_cluster() {
    let (srv, st) = fake_node().await;
    let clock = Arc::new(ManualClock::new(1_000));
    let mut o = opts(srv.url(), clock.clone());
    o.lock_extend_ms = 60_000; // never extend in this test
    o.lock_recheck_ms = 60_000;
    let locker = Locker::new(o).expect("locker");
    let acq = acquired(&locker).await;
    let hb = acq.heartbeater();
    // Keep the process alive by local reckoning while the lease runs out.
    st.lock().expect("st").keepalives_fail = false;
    // Keep-alives go on from the reporter thread; only lock operations count.
    let lock_hits = |srv: &FakePeer| srv.hits() - srv.hits_of("PUT /v1/processes");
    let before = lock_hits(&srv);
    // ttl 3000, margin 300: lost at sent + 2700.
    clock.advance(2_699);
    hb.heartbeat()
        .await
        .expect("still ours just before the deadline");
    clock.advance(1);
    match hb.heartbeat().await {
        Err(Error::Lost(e)) => assert_eq!(e.reason, LostReason::LocalDeadline),
        other => panic!("expected self-fencing, got {other:?}"),
    }
    let lock_ops = lock_hits(&srv) - before;
    assert_eq!(lock_ops, 0, "self-fencing needs no request");
    locker.terminate().await;
}

#[tokio::test]
async fn self_fences_when_keepalives_fail_longer_than_process_ttl() {
    let (srv, st) = fake_node().await;
    let clock = Arc::new(ManualClock::new(1_000));
    let mut o = opts(srv.url(), clock.clone());
    o.lock_ttl_ms = 300_000;
    o.lock_extend_ms = 60_000;
    o.lock_recheck_ms = 60_000;
    let locker = Locker::new(o).expect("locker");
    let acq = acquired(&locker).await;
    let hb = acq.heartbeater();
    st.lock().expect("st").keepalives_fail = true;
    // Process ttl 10 000, margin 1 000: lapsed 9 000 after the last good send.
    clock.advance(8_000);
    hb.heartbeat().await.expect("process still live locally");
    clock.advance(1_500);
    let lost = tokio::time::timeout(Duration::from_secs(2), hb.lost())
        .await
        .expect("lost() completes at the process deadline");
    assert_eq!(lost.reason, LostReason::ProcessLapsed);
    assert!(matches!(hb.heartbeat().await, Err(Error::Lost(_))));
    locker.terminate().await;
}

#[tokio::test]
async fn lapsed_process_gets_a_new_hash_and_acquire_recovers() {
    let (srv, st) = fake_node().await;
    let clock = Arc::new(ManualClock::new(1_000));
    let mut o = opts(srv.url(), clock.clone());
    o.report_write_ms = 100_000; // write once, as in the seed's same-pid test
    let locker = Locker::new(o).expect("locker");
    let first = acquired(&locker).await;
    let old_ph = locker.process_hash().expect("ph");
    st.lock().expect("st").holder = None; // the cluster dropped the dead process's lock
    clock.advance(20_000); // far beyond the process ttl
    let second = acquired(&locker).await;
    let new_ph = locker.process_hash().expect("ph");
    assert_ne!(old_ph, new_ph, "a lapsed process hash is never revived");
    assert_eq!(
        parse_owner_hash(second.owner_hash())
            .expect("parse")
            .process_hash,
        new_ph
    );
    assert!(
        st.lock().expect("st").ended.contains(&old_ph),
        "old process ended"
    );
    match first.heartbeater().heartbeat().await {
        Err(Error::Lost(e)) => assert_eq!(e.reason, LostReason::ProcessLapsed),
        other => panic!("old lock must be lost, got {other:?}"),
    }
    second
        .heartbeater()
        .heartbeat()
        .await
        .expect("new lock fine");
    locker.terminate().await;
}

#[tokio::test]
async fn acquire_times_out_when_the_reporter_cannot_write() {
    let (srv, st) = fake_node().await;
    st.lock().expect("st").keepalives_fail = true;
    let clock = Arc::new(ManualClock::new(1_000));
    let mut o = opts(srv.url(), clock);
    o.reporter_spawn_timeout_ms = 300;
    let locker = Locker::new(o).expect("locker");
    let mut errors = locker.errors();
    match locker.acquire("k", None).await {
        Err(Error::ReporterTimeout(ms)) => assert_eq!(ms, 300),
        other => panic!("expected a reporter timeout, got {other:?}"),
    }
    let ev = tokio::time::timeout(Duration::from_secs(2), errors.recv())
        .await
        .expect("event")
        .expect("open");
    assert_eq!(ev.kind, ErrorKind::Reporter);
    assert_eq!(srv.hits_of("POST /v1/locks/k/acquire"), 0);
    locker.terminate().await;
}

#[tokio::test]
async fn acquire_and_run_releases_even_when_the_job_fails() {
    let (srv, st) = fake_node().await;
    let clock = Arc::new(ManualClock::new(1_000));
    let locker = Locker::new(opts(srv.url(), clock)).expect("locker");
    let res: Result<RunResult<()>, Error> = locker
        .acquire_and_run(
            "k",
            |hb, owner| async move {
                assert_eq!(hb.owner_hash(), Some(owner.as_str()));
                assert_eq!(hb.fencing_token(), Some(1));
                Err(Error::Config("job failed".into()))
            },
            Some("tr"),
        )
        .await;
    assert!(matches!(res, Err(Error::Config(_))));
    assert_eq!(srv.hits_of("POST /v1/locks/k/release"), 1);
    assert_eq!(st.lock().expect("st").holder, None);

    let ok = locker
        .acquire_and_run("k", |_hb, _| async { Ok::<_, Error>(7) }, None)
        .await
        .expect("run");
    assert_eq!(ok, RunResult::Success(7));
    locker.terminate().await;
}

#[tokio::test]
async fn heartbeat_after_release_fails() {
    let (srv, _st) = fake_node().await;
    let clock = Arc::new(ManualClock::new(1_000));
    let locker = Locker::new(opts(srv.url(), clock)).expect("locker");
    let mut kept = None;
    locker
        .acquire_and_run(
            "k",
            |hb, _| {
                kept = Some(hb.clone());
                async { Ok::<_, Error>(()) }
            },
            None,
        )
        .await
        .expect("run");
    match kept.expect("hb").heartbeat().await {
        Err(Error::Lost(e)) => assert_eq!(e.reason, LostReason::Released),
        other => panic!("expected released, got {other:?}"),
    }
    locker.terminate().await;
}

#[tokio::test]
async fn mutex_times_out_naming_the_holder() {
    let (srv, st) = fake_node().await;
    st.lock().expect("st").holder = Some("k@other/1.2.3".into());
    let clock = Arc::new(ManualClock::new(1_000));
    let locker = Locker::new(opts(srv.url(), clock)).expect("locker");
    let r: Result<(), Error> = locker
        .mutex("k", 200, |_hb| async { Ok(()) }, 20, None)
        .await;
    match r {
        Err(Error::Mutex(m)) => {
            assert_eq!(m.key, "k");
            assert_eq!(m.holder.owner_hash, "k@other/1.2.3");
            assert!(m.to_string().contains("k@other/1.2.3"));
        }
        other => panic!("expected a mutex error, got {other:?}"),
    }
    assert!(srv.hits_of("POST /v1/locks/k/acquire") >= 3, "it retried");
    locker.terminate().await;
}

#[tokio::test]
async fn transient_errors_do_not_fail_heartbeats() {
    let (srv, st) = fake_node().await;
    let clock = Arc::new(ManualClock::new(1_000));
    let locker = Locker::new(opts(srv.url(), clock.clone())).expect("locker");
    let mut errors = locker.errors();
    let acq = acquired(&locker).await;
    let hb = acq.heartbeater();
    // Recheck requests time out (slower than the failover budget).
    st.lock().expect("st").read_delay_ms = 1_500;
    clock.advance(150);
    hb.heartbeat()
        .await
        .expect("a slow cluster is not a lost lock");
    let mut kinds = Vec::new();
    while let Some(ev) = errors.try_recv() {
        kinds.push(ev.kind);
    }
    assert!(kinds.contains(&ErrorKind::Locker), "{kinds:?}");
    assert!(!hb.is_lost());
    locker.terminate().await;
}

/// A retired owner hash means a copy of this very acquire was granted and
/// its run already ended: the Locker starts a new run (a new owner hash).
#[tokio::test]
async fn a_retired_owner_hash_starts_a_new_run() {
    let (srv, st) = fake_node().await;
    st.lock().expect("state").retire_acquires = 1;
    let locker = Locker::new(opts(srv.url(), Arc::new(ManualClock::new(1_000)))).expect("locker");
    let a = acquired(&locker).await;
    let seen = st.lock().expect("state").acquires.clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_ne!(seen[0], seen[1], "the new run has a new owner hash");
    assert_eq!(a.owner_hash(), seen[1]);
    locker.terminate().await;
}

/// The real way a run gets retired: a try whose answer was lost, then the
/// retry refused `OWNER_HASH_RETIRED`. The client answers that as an
/// unknown outcome (the lost try may have held the key), after its fence
/// ended the run for certain; the Locker, which never handed that grant to
/// anyone, starts a new run as before instead of failing the acquire.
#[tokio::test]
async fn a_run_retired_after_a_lost_try_starts_a_new_run() {
    let (srv, st) = fake_node().await;
    {
        let mut s = st.lock().expect("state");
        s.lose_acquires = 1;
        s.retire_acquires = 1;
    }
    let locker = Locker::new(opts(srv.url(), Arc::new(ManualClock::new(1_000)))).expect("locker");
    let a = acquired(&locker).await;
    let seen = st.lock().expect("state").acquires.clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0], seen[1], "the retry is the same run");
    assert_ne!(seen[1], seen[2], "the new run has a new owner hash");
    assert_eq!(a.owner_hash(), seen[2]);
    assert_eq!(srv.hits_of("POST /v1/locks/k/release"), 1, "fenced");
    locker.terminate().await;
}

/// A node that answers `OWNER_HASH_RETIRED` to every new run is not
/// retried forever: after three runs the refusal reaches the caller.
#[tokio::test]
async fn a_node_that_retires_every_run_is_refused_after_three() {
    let (srv, st) = fake_node().await;
    st.lock().expect("state").retire_acquires = usize::MAX;
    let locker = Locker::new(opts(srv.url(), Arc::new(ManualClock::new(1_000)))).expect("locker");
    match locker.acquire("k", None).await {
        Err(Error::Api { code, .. }) => assert_eq!(code, ErrorCode::OwnerHashRetired),
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert_eq!(srv.hits_of("POST /v1/locks/k/acquire"), 3);
    locker.terminate().await;
}

/// Asserts that `r` is an unknown outcome naming a release.
fn assert_unknown_release(r: Result<LockResponse, Error>) {
    match r {
        Err(Error::Unavailable { last, .. }) => {
            assert!(last.contains("outcome unknown"), "{last}")
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
}

/// The Jepsen finding: a release applied at the leader whose answer was
/// lost, retried, and answered NO_KEY by the retry. The Locker must not
/// pass that NO_KEY on as a definite answer ("the lease had already
/// ended"): it used to return `Ok(NO_KEY)`.
#[tokio::test]
async fn a_release_whose_applied_try_lost_its_answer_is_unknown_not_no_key() {
    let (srv, st) = fake_node().await;
    let locker = Locker::new(opts(srv.url(), Arc::new(ManualClock::new(1_000)))).expect("locker");
    let acq = acquired(&locker).await;
    st.lock().expect("state").lose_release_answers = 1;
    assert_unknown_release(acq.release().await);
    assert_eq!(st.lock().expect("state").holder, None, "it was released");
    assert_eq!(srv.hits_of("POST /v1/locks/k/release"), 2);
    locker.terminate().await;
}

/// The uncertainty outlives one call: `Locker::release` retries a call
/// that gave up (every answer lost for longer than the failover budget),
/// and the NO_KEY the next call gets is still no definite answer. A
/// release that only settled each call on its own returned `Ok(NO_KEY)`.
#[tokio::test]
async fn an_unknown_release_stays_unknown_across_the_lockers_retries() {
    let (srv, st) = fake_node().await;
    let locker = Locker::new(opts(srv.url(), Arc::new(ManualClock::new(1_000)))).expect("locker");
    let acq = acquired(&locker).await;
    st.lock().expect("state").lose_release_answers = usize::MAX;
    let heal = st.clone();
    tokio::spawn(async move {
        // Past one call's failover budget (1 s): that call gives up.
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        heal.lock().expect("state").lose_release_answers = 0;
    });
    let mut errors = locker.errors();
    assert_unknown_release(acq.release().await);
    // The first call did give up and was retried.
    let mut kinds = Vec::new();
    while let Some(e) = errors.try_recv() {
        kinds.push(e.kind);
    }
    assert!(kinds.contains(&ErrorKind::Locker), "{kinds:?}");
    locker.terminate().await;
}

/// A release with no try of unknown fate still answers NO_KEY as it is
/// (the client.rs tests cover tries that certainly did nothing).
#[tokio::test]
async fn a_release_without_a_doubtful_try_still_answers_no_key() {
    let (srv, _st) = fake_node().await;
    let locker = Locker::new(opts(srv.url(), Arc::new(ManualClock::new(1_000)))).expect("locker");
    let forged = lock_data("k@me/1.2.3", None, 1);
    let r = locker.release("k", &forged).await.expect("answered");
    assert_eq!(r.status, LockStatus::NoKey);
    locker.terminate().await;
}
