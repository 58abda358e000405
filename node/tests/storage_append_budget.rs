//! What replication reads for one append request
//! (`LogStore::limited_get_log_entries`): bounded in bytes, never empty for
//! a non-empty range. openraft asks for up to 1000 entries at once and
//! retries the same range after a short timeout; without a byte bound, a
//! follower behind by 1000 large entries (64 KiB batches) would be sent the
//! same huge request forever.

use std::path::Path;

mod common;

use locker_node::core::{Command, Op};
use locker_node::store::APPEND_BYTES;
use locker_node::types::TypeConfig;
use openraft::entry::RaftEntry;
use openraft::testing::log_id;
use openraft::{EntryPayload, RaftLogReader};

/// An entry at `index` whose encoding is about `bytes` long.
fn big_entry(index: u64, bytes: usize) -> locker_node::types::Entry {
    let op = Op::Keepalive {
        process_hash: "web-1/42.1".into(),
        ttl_ms: 10_000,
        info: Some("x".repeat(bytes)),
    };
    let cmd = Command { time_ms: 1, op };
    RaftEntry::new(log_id::<TypeConfig>(1, 1, index), EntryPayload::Normal(cmd))
}

fn write_log(dir: &Path, entries: &[locker_node::types::Entry]) {
    let db = sled::Config::new()
        .path(dir.join("sled"))
        .flush_every_ms(None)
        .open()
        .expect("sled");
    let log = db.open_tree("raft_log").expect("tree");
    for e in entries {
        let bytes = bincode::serialize(e).expect("encode");
        log.insert(e.log_id.index.to_be_bytes(), bytes)
            .expect("insert");
    }
    db.flush().expect("flush");
}

fn open_store(dir: &Path) -> locker_node::store::LogStore {
    common::open_store(dir).expect("open").0
}

fn indexes(entries: &[locker_node::types::Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

#[test]
fn an_append_request_is_bounded_in_bytes_and_never_empty() {
    let dir = tempfile::tempdir().expect("dir");
    let each = 200 << 10; // 200 KiB
    let entries: Vec<_> = (1..=40).map(|i| big_entry(i, each)).collect();
    write_log(dir.path(), &entries);
    let mut log = open_store(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let got = rt
        .block_on(log.limited_get_log_entries(1, 41))
        .expect("read");
    let fit = APPEND_BYTES / each;
    assert!(
        (1..40).contains(&fit),
        "the test needs entries the budget cuts"
    );
    assert_eq!(indexes(&got), (1..=fit as u64).collect::<Vec<_>>());

    // The rest follows from where the last request stopped.
    let next = rt
        .block_on(log.limited_get_log_entries(fit as u64 + 1, 41))
        .expect("read");
    assert_eq!(next.first().map(|e| e.log_id.index), Some(fit as u64 + 1));

    // One entry larger than the whole budget still goes, alone.
    let dir2 = tempfile::tempdir().expect("dir");
    write_log(
        dir2.path(),
        &[big_entry(1, APPEND_BYTES + 1), big_entry(2, 10)],
    );
    let mut log2 = open_store(dir2.path());
    let got = rt
        .block_on(log2.limited_get_log_entries(1, 3))
        .expect("read");
    assert_eq!(indexes(&got), vec![1]);

    // Small entries all go at once, and the range's end is exclusive.
    let got = rt
        .block_on(log.limited_get_log_entries(5, 7))
        .expect("read");
    assert_eq!(indexes(&got), vec![5, 6]);
    let none = rt
        .block_on(log.limited_get_log_entries(7, 7))
        .expect("read");
    assert!(none.is_empty());
}
