//! Storage adapters: the Raft log and the state machine, both on one sled `Db`.
//!
//! One `Db` means one write-ahead log: a single `flush()` makes the vote, the
//! log entries and the state-machine records written before it durable, in
//! order. Keep every tree of a node in this one `Db`.

pub mod crash;
mod flusher;
pub mod format;
pub mod identity;
pub mod lock_shift;
mod log_store;
pub mod record;
mod snapshot_record;
mod state_machine;
mod watchdog;

use std::io;
use std::path::Path;
use std::sync::Arc;

pub use flusher::{FlushStats, Flusher};
pub use identity::{Marker, Owner};
pub use log_store::{LogStore, APPEND_BYTES};
pub use state_machine::{Replica, SharedReplica, StateMachine};
pub use watchdog::{exit_when_raft_stops, EXIT_RAFT_STOPPED};

/// Opens (or creates) a node's database and its two stores, without the
/// identity file (storage tests; a node uses [`open_node`]).
pub fn open(
    dir: &Path,
    cache_bytes: u64,
) -> io::Result<(LogStore, StateMachine, SharedReplica, Flusher)> {
    let (log, sm, replica, flusher, _) = open_inner(dir, cache_bytes, None)?;
    Ok((log, sm, replica, flusher))
}

/// A node's stores, opened by [`open_node`], and the identity file's marker.
pub type NodeStores = (LogStore, StateMachine, SharedReplica, Flusher, Arc<Marker>);

/// Opens (or creates, mode 0700) node `owner`'s data directory, checked
/// against its identity file (see [`identity`]): another node's or
/// cluster's directory, or a database that lost entries or its vote, is
/// refused with a message saying what to do.
pub fn open_node(dir: &Path, cache_bytes: u64, owner: Owner<'_>) -> io::Result<NodeStores> {
    let (log, sm, replica, flusher, marker) = open_inner(dir, cache_bytes, Some(owner))?;
    let marker = marker.ok_or_else(|| io::Error::other("no identity marker"))?;
    Ok((log, sm, replica, flusher, marker))
}

type Opened = (
    LogStore,
    StateMachine,
    SharedReplica,
    Flusher,
    Option<Arc<Marker>>,
);

fn open_inner(dir: &Path, cache_bytes: u64, owner: Option<Owner<'_>>) -> io::Result<Opened> {
    let in_dir =
        |e: io::Error| io::Error::new(e.kind(), format!("data directory {}: {e}", dir.display()));
    // Before sled creates anything: another node's directory stays untouched.
    let recorded = match owner {
        Some(o) => {
            identity::prepare_dir(dir)?;
            let r = identity::read(dir).map_err(in_dir)?;
            if let Some(r) = &r {
                identity::check_owner(dir, r, o).map_err(in_dir)?;
            }
            r
        }
        None => {
            std::fs::create_dir_all(dir)?;
            None
        }
    };
    let db = sled::Config::new()
        .path(dir.join("sled"))
        .segment_size(segment_bytes(&dir.join("sled"))?)
        .cache_capacity(cache_bytes)
        // Our own flushes make writes durable; the background flusher only
        // bounds how much unflushed state-machine data a crash can cost.
        .flush_every_ms(Some(1000))
        .open()
        .map_err(to_io)
        .map_err(in_dir)?;
    // Before anything reads a record: a newer format is refused untouched.
    let found = format::read_db(&db).map_err(in_dir)?;
    let data_file = sync_sled_files(dir)?;
    let flusher = Flusher::start(db.clone(), data_file, dir.join("sled").join("blobs"));
    if found.written() < format::CHECKSUMS_SINCE {
        // Every record gets its checksum before anything reads one.
        let n = record::migrate(&db)?;
        flush_now(&flusher)?;
        if n > 0 {
            tracing::info!(
                records = n,
                "gave every stored record a checksum (data directory format {})",
                format::DB_FORMAT
            );
        }
    }
    let refuse = |e: io::Error| {
        if e.to_string().contains("refusing to start") {
            return e;
        }
        io::Error::new(
            e.kind(),
            format!("data directory {}: {e}; refusing to start: restore this data directory from a copy, or wipe it and replace this node under a new id (docs/operations.md, Refused starts)", dir.display()),
        )
    };
    let mut log = LogStore::open(&db, flusher.clone()).map_err(refuse)?;
    // The identity file is written before the format that says it exists.
    let marker = match owner {
        Some(o) => {
            let m = identity::after_open(dir, o, recorded, &db, &log)?;
            log.set_marker(m.clone());
            Some(m)
        }
        None => None,
    };
    format::record_db(&db, found)?;
    let sm = StateMachine::open(&db, flusher.clone()).map_err(refuse)?;
    let replica = sm.replica();
    Ok((log, sm, replica, flusher, marker))
}

/// Waits, without a runtime, until everything written so far is durable.
fn flush_now(flusher: &Flusher) -> io::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    flusher.after_flush(0, move |r| {
        let _ = tx.send(r);
    });
    rx.recv()
        .map_err(|_| io::Error::other("the flusher has stopped"))?
}

/// sled's segment size for a new store. sled writes a tree node bigger than
/// a quarter of a segment to a blob file whose sync nothing orders before
/// the log's (see `snapshot_record.rs`); at 4 MiB the threshold is 1 MiB,
/// past the biggest node our records make (17 log entries of a 64 KiB
/// request body at most). Costs a few MiB of memory for sled's IO buffers.
pub const SEGMENT_BYTES: usize = 4 << 20;

/// The segment size to open `sled_dir` with: the one recorded in its `conf`
/// (sled refuses a store opened with another), or [`SEGMENT_BYTES`] for a
/// new store. Stores created before hold sled's default, 512 KiB.
fn segment_bytes(sled_dir: &Path) -> io::Result<usize> {
    let conf = match std::fs::read(sled_dir.join("conf")) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SEGMENT_BYTES),
        Err(e) => return Err(e),
    };
    // `segment_size: N` is its first line (text, followed by a checksum).
    let recorded = conf
        .split(|b| *b == b'\n')
        .find_map(|line| line.strip_prefix(b"segment_size: "))
        .and_then(|n| std::str::from_utf8(n).ok()?.trim().parse().ok());
    recorded.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: no segment_size in sled's configuration",
                sled_dir.join("conf").display()
            ),
        )
    })
}

/// Makes what sled created at open durable, and returns its data file for
/// the flusher's `fdatasync` (see `flusher.rs`). sled writes its `conf`
/// without an fsync and never syncs a directory, so a power cut soon after
/// the first start could lose the file names or the configuration.
fn sync_sled_files(dir: &Path) -> io::Result<std::fs::File> {
    let sled_dir = dir.join("sled");
    std::fs::File::open(sled_dir.join("conf"))?.sync_all()?;
    // Directories: their entries (db, conf, blobs) are metadata of their own.
    for d in [&sled_dir, dir] {
        std::fs::File::open(d)?.sync_all()?;
    }
    let data_file = std::fs::File::open(sled_dir.join("db"))?;
    data_file.sync_data()?;
    Ok(data_file)
}

/// Exit code after a failed disk write or fsync (BSD `EX_IOERR`).
pub const EXIT_DISK_FAILED: i32 = 74;

/// A write or fsync that failed (a full disk, an IO error) leaves Raft
/// unable to go on, and a node that lingers answers 503 forever while
/// looking healthy. Stop the process at once, without flushing anything
/// more, so a supervisor restarts it once the disk is fixed; what was
/// acknowledged is already on disk.
pub(crate) fn disk_failed(what: &str, e: &dyn std::fmt::Display) -> ! {
    tracing::error!(error = %e, "cannot {what}: the disk failed; exiting so a supervisor restarts this node");
    eprintln!("locker-node: FATAL: cannot {what}: {e}; exiting (code {EXIT_DISK_FAILED})");
    std::process::exit(EXIT_DISK_FAILED)
}

/// Unwraps a sled write, stopping the process on failure (see [`disk_failed`]).
pub(crate) fn must_write<T>(what: &str, r: sled::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => disk_failed(what, &e),
    }
}

pub(crate) fn to_io(e: sled::Error) -> io::Error {
    match e {
        sled::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    bincode::serialize(v).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    bincode::deserialize(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
