//! Storage adapters: the Raft log and the state machine, both on one sled `Db`.
//!
//! One `Db` means one write-ahead log: a single `flush()` makes the vote, the
//! log entries and the state-machine records written before it durable, in
//! order. Keep every tree of a node in this one `Db`.

mod flusher;
mod log_store;
mod state_machine;

use std::io;
use std::path::Path;

pub use flusher::{FlushStats, Flusher};
pub use log_store::LogStore;
pub use state_machine::{Replica, SharedReplica, StateMachine};

/// Opens (or creates) a node's database and its two stores.
pub fn open(
    dir: &Path,
    cache_bytes: u64,
) -> io::Result<(LogStore, StateMachine, SharedReplica, Flusher)> {
    std::fs::create_dir_all(dir)?;
    let db = sled::Config::new()
        .path(dir.join("sled"))
        .cache_capacity(cache_bytes)
        // Our own flushes make writes durable; the background flusher only
        // bounds how much unflushed state-machine data a crash can cost.
        .flush_every_ms(Some(1000))
        .open()
        .map_err(to_io)?;
    let flusher = Flusher::start(db.clone());
    let log = LogStore::open(&db, flusher.clone())?;
    let sm = StateMachine::open(&db, flusher.clone())?;
    let replica = sm.replica();
    Ok((log, sm, replica, flusher))
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
