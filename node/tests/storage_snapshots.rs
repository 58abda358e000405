//! Snapshot storage races (a race found by review): a snapshot built while a newer
//! one is installed must not overwrite the installed one; and a build being
//! encoded and stored does not hold up applies.
//!
//! Uses the `store::snapshot_build::before_record` crash point with the
//! `pause` action to hold a build between reading the state and storing its
//! record, so the interleaving is forced, not hoped for. Needs
//! `--features failpoints` (fail points are process-wide: the tests of this
//! binary take [`POINT`] in turn).
#![cfg(feature = "failpoints")]

use std::time::Duration;

use locker_node::store::{self, StateMachine};
use locker_node::types::{Snapshot, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::testing::blank_ent;
use openraft::RaftSnapshotBuilder;

const BUILD_POINT: &str = "store::snapshot_build::before_record";
/// Held by each test while it arms [`BUILD_POINT`].
static POINT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_point() -> std::sync::MutexGuard<'static, ()> {
    POINT.lock().unwrap_or_else(|p| p.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn apply_blanks(sm: &mut StateMachine, upto: u64) {
    let entries = (1..=upto).map(|i| Ok((blank_ent::<TypeConfig>(1, 1, i), None)));
    sm.apply(futures::stream::iter(entries))
        .await
        .expect("apply");
}

/// A snapshot at index 10, built by another store.
fn newer_snapshot(rt: &tokio::runtime::Runtime) -> (tempfile::TempDir, Snapshot) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_log, mut sm, _r, _f) = store::open(dir.path(), 8 << 20).expect("open");
    let snap = rt.block_on(async {
        apply_blanks(&mut sm, 10).await;
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build")
    });
    (dir, snap)
}

#[test]
fn a_build_racing_an_install_never_overwrites_the_newer_snapshot() {
    let _point = take_point();
    let rt = runtime();
    let (_src, newer) = newer_snapshot(&rt);
    let dir = tempfile::tempdir().expect("temp dir");
    let (_log, mut sm, _replica, _flusher) = store::open(dir.path(), 8 << 20).expect("open");
    let mut builder = rt.block_on(async {
        apply_blanks(&mut sm, 3).await;
        sm.get_snapshot_builder().await
    });

    fail::cfg(BUILD_POINT, "pause").expect("arm pause");
    // The build reads the state at index 3, then waits at the point.
    let build = std::thread::spawn(move || runtime().block_on(builder.build_snapshot()));
    // Ordering only (not an assertion): let the build reach the point.
    std::thread::sleep(Duration::from_millis(300));
    let meta = newer.meta.clone();
    let install = std::thread::spawn(move || {
        let r = runtime().block_on(sm.install_snapshot(&meta, newer.snapshot));
        (sm, r)
    });
    std::thread::sleep(Duration::from_millis(300));
    fail::cfg(BUILD_POINT, "off").expect("release the build");

    let built = build.join().expect("build thread").expect("build");
    let (mut sm, installed) = install.join().expect("install thread");
    installed.expect("install");
    assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(3));
    let current = rt
        .block_on(sm.get_current_snapshot())
        .expect("read snapshot")
        .expect("a snapshot");
    assert_eq!(
        current.meta.last_log_id.map(|l| l.index),
        Some(10),
        "the older build overwrote the installed snapshot"
    );
    let applied = rt.block_on(sm.applied_state()).expect("applied").0;
    assert_eq!(applied.map(|l| l.index), Some(10));
}

/// Encoding and storing a snapshot happen after the table is copied, outside
/// the replica's lock: an apply during them goes on (it used to wait for the
/// whole build, a stall of every write on each snapshot of a big table).
#[test]
fn an_apply_goes_on_while_a_build_is_stored() {
    let _point = take_point();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let (_log, mut sm, replica, _flusher) = store::open(dir.path(), 8 << 20).expect("open");
    let mut builder = rt.block_on(async {
        apply_blanks(&mut sm, 3).await;
        sm.get_snapshot_builder().await
    });
    fail::cfg(BUILD_POINT, "pause").expect("arm pause");
    let build = std::thread::spawn(move || runtime().block_on(builder.build_snapshot()));
    std::thread::sleep(Duration::from_millis(300));
    let (tx, rx) = std::sync::mpsc::channel();
    let apply = std::thread::spawn(move || {
        runtime().block_on(async {
            let entries = (4..=5).map(|i| Ok((blank_ent::<TypeConfig>(1, 1, i), None)));
            sm.apply(futures::stream::iter(entries))
                .await
                .expect("apply");
        });
        let _ = tx.send(());
    });
    let applied = rx.recv_timeout(Duration::from_secs(5));
    fail::cfg(BUILD_POINT, "off").expect("release the build");
    let built = build.join().expect("build thread").expect("build");
    apply.join().expect("apply thread");
    assert!(
        applied.is_ok(),
        "the apply waited for the snapshot build to be stored"
    );
    assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(3));
    let last = replica.read().last_applied.map(|l| l.index);
    assert_eq!(last, Some(5));
}
