//! Disk-boundary checks on snapshot install ("assertions at the
//! disk boundary": log time never goes back): a snapshot newer by index but
//! older by log time contradicts the log (log time only moves forward along
//! it, which apply already enforces) and must be refused before any of it
//! reaches the disk.

use locker_node::core::{Command, Op, TableImage};
use locker_node::store;
use locker_node::types::{Entry, SnapshotMeta, TypeConfig};
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn tick(index: u64, time_ms: u64) -> Entry {
    let cmd = Command {
        time_ms,
        op: Op::Tick,
    };
    Entry::new_normal(log_id::<TypeConfig>(1, 1, index), cmd)
}

#[test]
fn a_newer_snapshot_with_an_older_log_time_is_refused_and_changes_nothing() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let (_log, mut sm, replica, _flusher) = store::open(dir.path(), 8 << 20).expect("open");
    let entries = (1..=3).map(|i| Ok((tick(i, 1_000_000 + i), None)));
    rt.block_on(sm.apply(futures::stream::iter(entries)))
        .expect("apply");
    let now_before = replica.read().table.now();
    assert_eq!(now_before, 1_000_003);

    let image = TableImage {
        now: 5,
        locks: vec![],
        processes: vec![],
        retired: vec![],
        lock_tokens: vec![],
        process_tokens: vec![],
    };
    let meta = SnapshotMeta {
        last_log_id: Some(log_id::<TypeConfig>(1, 1, 10)),
        last_membership: Default::default(),
    };
    let data = bincode::serialize(&image).expect("encode");
    let r = rt.block_on(sm.install_snapshot(&meta, data));
    let err = r.expect_err("a snapshot whose log time goes back was installed");
    assert!(
        err.to_string().contains("log time"),
        "unclear refusal: {err}"
    );
    // Nothing changed, in memory or on disk.
    assert_eq!(replica.read().table.now(), now_before);
    let applied = rt.block_on(sm.applied_state()).expect("applied").0;
    assert_eq!(applied.map(|l| l.index), Some(3));
    let stored = rt.block_on(sm.get_current_snapshot()).expect("read");
    assert!(stored.is_none(), "the refused snapshot was stored");
}
