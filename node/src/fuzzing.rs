//! Entry points of the fuzz targets (`fuzz/` at the workspace root, built
//! with the `fuzzing` feature): every decoder of untrusted or stored bytes,
//! driven with arbitrary input. Corrupt bytes must give an error, never a
//! panic, and what decodes must not make a state that breaks the table's
//! invariants.

use crate::core::{Command, Lock, LockTable, Process, Retired};
use crate::network::decode_message;
use crate::store::format;
use crate::types::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};

pub use crate::api::fuzzing::request_input;

type AppendRequest = openraft::raft::AppendEntriesRequest<crate::types::TypeConfig>;
type VoteRequest = openraft::raft::VoteRequest<crate::types::TypeConfig>;
type TransferRequest = openraft::raft::TransferLeaderRequest<crate::types::TypeConfig>;

/// Every message the peer port decodes (requests), and the answers a node
/// decodes from its peers, as the peer port reads them.
pub fn peer_message(data: &[u8]) {
    let _ = decode_message::<AppendRequest>(data);
    let _ = decode_message::<VoteRequest>(data);
    let _ = decode_message::<TransferRequest>(data);
    if let Ok((_vote, _meta, snapshot)) = decode_message::<(Vote, SnapshotMeta, Vec<u8>)>(data) {
        if format::snapshot_format(&snapshot).is_ok() {
            stored_snapshot(&snapshot);
        }
    }
    let _ = decode_message::<
        Result<openraft::raft::AppendEntriesResponse<crate::types::TypeConfig>, String>,
    >(data);
    let _ = decode_message::<Result<openraft::raft::VoteResponse<crate::types::TypeConfig>, String>>(
        data,
    );
}

/// Every record the store reads back: snapshot data, log entries and their
/// commands (applied to a table), lock, process and retired-run records.
pub fn stored_record(data: &[u8]) {
    // A stored record is framed with its checksum (`store::record`): a
    // framed input whose checksum holds is read as its body.
    let data = crate::store::record::body(data).unwrap_or(data);
    stored_snapshot(data);
    if let Ok(entry) = crate::store::decode::<Entry>(data) {
        if let openraft::EntryPayload::Normal(cmd) = &entry.payload {
            apply_to_empty(entry.log_id.index, cmd);
        }
    }
    if let Ok(cmd) = crate::store::decode::<Command>(data) {
        apply_to_empty(1, &cmd);
    }
    let _ = crate::store::decode::<Lock>(data);
    // A lock record as the store reads it: through the lock shift, which
    // must not overflow whatever the stored deadline.
    let framed = crate::store::record::frame(data);
    let shift = crate::store::lock_shift::LockShift::new(u64::MAX - 1);
    let _ = shift.decode("state_machine", b"L", &framed);
    let _ = crate::store::decode::<Process>(data);
    let _ = crate::store::decode::<Retired>(data);
    let _ = crate::store::decode::<Vote>(data);
    let _ = crate::store::decode::<LogId>(data);
    let _ = crate::store::decode::<StoredMembership>(data);
}

/// Snapshot data: decoded, loaded as a table, checked as the store checks
/// it; a table that passes encodes and decodes back to itself.
fn stored_snapshot(data: &[u8]) {
    let Ok(image) = format::decode_snapshot(data) else {
        return;
    };
    let table = LockTable::from_image(image);
    let Some(problem) = invariant_problem(&table, u64::MAX) else {
        let again = format::encode_snapshot(&table.to_image()).expect("a table encodes");
        let back = LockTable::from_image(format::decode_snapshot(&again).expect("decodes"));
        let twice = format::encode_snapshot(&back.to_image()).expect("a table encodes");
        assert!(twice == again, "a snapshot round trip changed the table");
        return;
    };
    drop(problem);
}

/// Applies `cmd` to an empty table: the outcome is whatever it is, the
/// table's invariants hold after it (apply checks them itself in debug
/// builds, as the fuzz targets are).
fn apply_to_empty(index: u64, cmd: &Command) {
    let index = index.max(1);
    let mut table = LockTable::new();
    let _ = table.apply(index, cmd);
}

/// The store's invariant check (`check_invariants`, which asserts) as an
/// answer, the way the store calls it at the disk boundary: with the panic
/// caught and reported, not printed.
fn invariant_problem(table: &LockTable, last_index: u64) -> Option<String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        table.check_invariants(last_index);
    }));
    std::panic::set_hook(hook);
    checked.err().map(|p| format!("{p:?}"))
}
