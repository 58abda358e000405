//! What `store::open` does with the states a crash can leave on disk
//! (the follower once bricked by a crash after a snapshot catch-up, and the disk-boundary checks). Each test writes the
//! trees directly with sled, in the store's own format, as a crash would
//! have left them, then opens the store.

use std::path::Path;

mod common;
use common::open_store;

use locker_node::core::Lock;
use locker_node::types::{LogId, TypeConfig};
use openraft::storage::RaftLogStorage;
use openraft::testing::{blank_ent, log_id};
use openraft::RaftLogReader;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// sled without its periodic flush thread (it outlives the `Db` for up to
/// its period, holding the directory's file lock).
fn open_sled(path: &Path) -> sled::Db {
    sled::Config::new()
        .path(path)
        .flush_every_ms(None)
        .open()
        .expect("sled")
}

/// Writes log entries at `indexes` (term 1) and an optional purge mark.
fn write_log(dir: &Path, indexes: &[u64], purged: Option<u64>) {
    let db = open_sled(&dir.join("sled"));
    let log = db.open_tree("raft_log").expect("tree");
    let meta = db.open_tree("raft_meta").expect("tree");
    for &i in indexes {
        let e = blank_ent::<TypeConfig>(1, 1, i);
        log.insert(i.to_be_bytes(), bincode::serialize(&e).expect("encode"))
            .expect("insert");
    }
    if let Some(p) = purged {
        let id: LogId = log_id::<TypeConfig>(1, 1, p);
        meta.insert(b"last_purged", bincode::serialize(&id).expect("encode"))
            .expect("insert");
    }
    db.flush().expect("flush");
}

fn indexes(v: Option<LogId>) -> Option<u64> {
    v.map(|l| l.index)
}

/// The bricked-follower bug: the purge mark (after a snapshot install at 7) reached
/// the disk, the deletions of the follower's old entries 1..=5 did not.
/// Before the fix the log state said last_log_id 5 < last_purged 7 and
/// openraft refused to start ("inverted log order").
#[test]
fn entries_left_behind_a_purge_mark_are_dropped_at_open() {
    let dir = tempfile::tempdir().expect("dir");
    write_log(dir.path(), &[1, 2, 3, 4, 5], Some(7));
    let (mut log, _sm, _r, _f) = open_store(dir.path()).expect("open");
    let st = rt().block_on(log.get_log_state()).expect("log state");
    assert_eq!(indexes(st.last_purged_log_id), Some(7));
    assert_eq!(
        indexes(st.last_log_id),
        Some(7),
        "the log state contradicts itself"
    );
    let left = rt()
        .block_on(log.try_get_log_entries(0..100))
        .expect("read");
    assert!(left.is_empty(), "dead entries still there: {left:?}");
}

/// A purge cut short in the middle: entries after the mark stay, the ones
/// at or below it go.
#[test]
fn a_purge_cut_short_keeps_the_entries_after_the_mark() {
    let dir = tempfile::tempdir().expect("dir");
    write_log(dir.path(), &[1, 2, 3, 4, 5], Some(3));
    let (mut log, _sm, _r, _f) = open_store(dir.path()).expect("open");
    let st = rt().block_on(log.get_log_state()).expect("log state");
    assert_eq!(
        (indexes(st.last_purged_log_id), indexes(st.last_log_id)),
        (Some(3), Some(5))
    );
    let left: Vec<u64> = rt()
        .block_on(log.try_get_log_entries(0..100))
        .expect("read")
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(left, vec![4, 5]);
}

/// A log with a hole cannot come from any crash: refuse, with a message.
#[test]
fn a_log_with_a_gap_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("dir");
    write_log(dir.path(), &[1, 2, 4, 5], None);
    let err = match open_store(dir.path()) {
        Ok(_) => panic!("a log with a gap was opened"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("inconsistent") && err.contains("gap"),
        "unclear refusal: {err}"
    );
}

/// A lock table that breaks its invariants on disk (a fencing token from
/// beyond the applied index) is refused at load, not served.
#[test]
fn a_broken_table_on_disk_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let db = open_sled(&dir.path().join("sled"));
        let sm = db.open_tree("state_machine").expect("tree");
        let lock = Lock {
            key: "k".into(),
            owner_hash: "k@h/1.2.3".into(),
            process_hash: None,
            trace: None,
            acquired_at: 1,
            extended_at: 1,
            expires_at: 10,
            ttl_ms: 9,
            fencing_token: 99,
            token: None,
        };
        sm.insert(b"Lk", bincode::serialize(&lock).expect("encode"))
            .expect("insert");
        db.flush().expect("flush");
    }
    let err = match open_store(dir.path()) {
        Ok(_) => panic!("a broken table was loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("invariant"), "unclear refusal: {err}");
}
