//! The stored Raft snapshot, kept in pieces small enough that sled never
//! moves one of them out of its log.
//!
//! Why: sled 0.34 writes a tree node bigger than a quarter of its segment
//! (~128 KiB with 512 KiB segments) to a file of its own under `blobs/`,
//! and nothing orders that file's sync before the sync of the log that
//! points at it: sled's own fsyncs (its periodic flush thread, a segment
//! truncation) sync the log alone. A power cut between the two left a log
//! entry pointing at an empty blob; sled then refused to open the store
//! ("Read corrupted data at file offset ...") on every node of a cluster
//! cut at once. A snapshot of a big table was such a node. Stored as
//! chunks of [`CHUNK_BYTES`], the biggest tree node of this tree (sled
//! splits leaves past 16 items) stays far below the blob threshold, and
//! everything lives in the one log file whose fsyncs are ordered.
//!
//! Layout in the `snapshots` tree, written in one atomic batch:
//! - `header`: [`Header`] (the snapshot's meta, its length, its chunk count);
//! - `chunk/` + chunk number (u32, big-endian): the data, in order.
//!
//! A store written before chunking has the single record `current`
//! (`StoredSnapshot`: meta and data in one value); it is still read, and
//! the next snapshot stored replaces it.

use std::io;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::record::{body, decode_at, encode, frame};
use super::{must_write, to_io};
use crate::types::SnapshotMeta;

/// The size of one stored chunk. sled splits a leaf past 16 items, so a
/// leaf of chunks is at most ~17 × 4 KiB: under the blob threshold even of
/// a store created with sled's default 512 KiB segments.
pub const CHUNK_BYTES: usize = 4 * 1024;

const TREE: &str = "snapshots";
const LEGACY: &[u8] = b"current";
const HEADER: &[u8] = b"header";
const CHUNK_PREFIX: &[u8] = b"chunk/";

/// The record before chunking: meta and data in one value.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// What `header` holds.
#[derive(Serialize, Deserialize)]
struct Header {
    meta: SnapshotMeta,
    len: u64,
    chunks: u32,
}

/// The stored snapshot. Clones share one mutex, so a reader never sees a
/// header of one snapshot with the chunks of another (the builder and the
/// state machine run on different tasks).
#[derive(Clone)]
pub struct SnapshotRecords {
    tree: sled::Tree,
    mu: Arc<Mutex<()>>,
}

fn chunk_key(i: u32) -> Vec<u8> {
    let mut k = CHUNK_PREFIX.to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the stored snapshot is damaged: {what}"),
    )
}

impl SnapshotRecords {
    /// The records in `tree`.
    pub fn new(tree: sled::Tree) -> SnapshotRecords {
        SnapshotRecords {
            tree,
            mu: Arc::new(Mutex::new(())),
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.mu.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the stored snapshot with `meta` and `data`, in one atomic
    /// sled batch (not yet durable: the caller flushes). A failed write
    /// stops the process (see [`must_write`]).
    pub fn put(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let (batch, count) = Self::batch(meta, data)?;
        let _g = self.guard();
        self.store(batch, count)
    }

    /// [`SnapshotRecords::put`], unless a snapshot further along the log is
    /// stored (checked and stored under one lock, so a concurrent install
    /// of a newer snapshot is never overwritten). Whether it stored.
    pub fn put_unless_newer(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<bool> {
        let (batch, count) = Self::batch(meta, data)?;
        let _g = self.guard();
        if self
            .stored_meta()?
            .is_some_and(|m| m.last_log_id > meta.last_log_id)
        {
            return Ok(false);
        }
        self.store(batch, count)?;
        Ok(true)
    }

    /// The batch writing `meta` and `data`'s chunks, and the chunk count.
    fn batch(meta: &SnapshotMeta, data: &[u8]) -> io::Result<(sled::Batch, u32)> {
        let chunks = data.chunks(CHUNK_BYTES);
        let count = u32::try_from(chunks.len())
            .map_err(|_| io::Error::other("a snapshot of over 16 TiB cannot be stored"))?;
        let mut batch = sled::Batch::default();
        batch.remove(LEGACY);
        for (i, c) in (0..count).zip(chunks) {
            batch.insert(chunk_key(i), frame(c));
        }
        let header = Header {
            meta: meta.clone(),
            len: data.len() as u64,
            chunks: count,
        };
        batch.insert(HEADER, encode(&header)?);
        Ok((batch, count))
    }

    /// Applies `batch` (of `count` chunks), removing the chunks of a bigger
    /// earlier snapshot. Called with the lock held.
    fn store(&self, mut batch: sled::Batch, count: u32) -> io::Result<()> {
        // Chunks of a bigger earlier snapshot would otherwise stay forever.
        for old in self.tree.range(chunk_key(count)..).keys() {
            let old = old.map_err(to_io)?;
            if !old.starts_with(CHUNK_PREFIX) {
                break;
            }
            batch.remove(old);
        }
        must_write("store the snapshot", self.tree.apply_batch(batch));
        Ok(())
    }

    /// The stored snapshot's meta, without reading its data (called with
    /// the lock held).
    fn stored_meta(&self) -> io::Result<Option<SnapshotMeta>> {
        #[derive(Deserialize)]
        struct MetaOnly {
            meta: SnapshotMeta,
        }
        // Both records start with the meta: bincode reads it and stops.
        match self.tree.get(HEADER).map_err(to_io)? {
            Some(b) => Ok(Some(decode_at::<MetaOnly>(TREE, HEADER, &b)?.meta)),
            None => match self.tree.get(LEGACY).map_err(to_io)? {
                Some(b) => Ok(Some(decode_at::<MetaOnly>(TREE, LEGACY, &b)?.meta)),
                None => Ok(None),
            },
        }
    }

    /// The stored snapshot, checked whole: every chunk present, in order,
    /// adding up to the length its header names.
    pub fn get(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let _g = self.guard();
        let Some(h) = self.tree.get(HEADER).map_err(to_io)? else {
            return match self.tree.get(LEGACY).map_err(to_io)? {
                Some(b) => {
                    let s: StoredSnapshot = decode_at(TREE, LEGACY, &b)?;
                    Ok(Some((s.meta, s.data)))
                }
                None => Ok(None),
            };
        };
        let h: Header = decode_at(TREE, HEADER, &h)?;
        let len = usize::try_from(h.len).map_err(|_| corrupt(format!("length {}", h.len)))?;
        let mut data = Vec::with_capacity(len);
        for i in 0..h.chunks {
            let c = self
                .tree
                .get(chunk_key(i))
                .map_err(to_io)?
                .ok_or_else(|| corrupt(format!("chunk {i} of {} is missing", h.chunks)))?;
            let c = body(&c).map_err(|e| {
                let key = super::record::key_name(TREE, &chunk_key(i));
                io::Error::new(e.kind(), format!("{key} {e}"))
            })?;
            data.extend_from_slice(c);
        }
        if data.len() != len {
            return Err(corrupt(format!(
                "{} bytes in {} chunks, the header says {len}",
                data.len(),
                h.chunks
            )));
        }
        Ok(Some((h.meta, data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> (tempfile::TempDir, SnapshotRecords) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path())
            .open()
            .expect("open sled");
        let tree = db.open_tree("snapshots").expect("tree");
        (dir, SnapshotRecords::new(tree))
    }

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(crate::types::LogId::new(
                openraft::impls::leader_id_adv::LeaderId {
                    term: 1,
                    node_id: 1,
                },
                index,
            )),
            last_membership: Default::default(),
        }
    }

    #[test]
    fn a_big_snapshot_round_trips_and_a_smaller_one_replaces_it() {
        let (_d, r) = records();
        assert!(r.get().expect("get").is_none());
        let big: Vec<u8> = (0..(CHUNK_BYTES * 7 + 5)).map(|i| i as u8).collect();
        r.put(&meta(10), &big).expect("put");
        let (m, data) = r.get().expect("get").expect("stored");
        assert_eq!((m, data), (meta(10), big));
        r.put(&meta(20), b"small").expect("put");
        assert_eq!(r.get().expect("get"), Some((meta(20), b"small".to_vec())));
        assert_eq!(r.stored_meta().expect("meta"), Some(meta(20)));
        // The 7 chunks past the first are gone, not left behind.
        assert_eq!(r.tree.scan_prefix(CHUNK_PREFIX).count(), 1);
        r.put(&meta(30), b"").expect("put");
        assert_eq!(r.get().expect("get"), Some((meta(30), Vec::new())));
        assert_eq!(r.tree.scan_prefix(CHUNK_PREFIX).count(), 0);
    }

    #[test]
    fn the_single_record_of_older_stores_is_read_and_replaced() {
        let (_d, r) = records();
        let legacy = encode(&StoredSnapshot {
            meta: meta(5),
            data: b"old".to_vec(),
        })
        .expect("encode");
        r.tree.insert(LEGACY, legacy).expect("insert");
        assert_eq!(r.stored_meta().expect("meta"), Some(meta(5)));
        assert_eq!(r.get().expect("get"), Some((meta(5), b"old".to_vec())));
        r.put(&meta(6), b"new").expect("put");
        assert!(r.tree.get(LEGACY).expect("get").is_none());
        assert_eq!(r.get().expect("get"), Some((meta(6), b"new".to_vec())));
    }

    #[test]
    fn a_missing_chunk_is_an_error_not_a_shorter_snapshot() {
        let (_d, r) = records();
        r.put(&meta(1), &vec![7u8; CHUNK_BYTES * 3]).expect("put");
        r.tree.remove(chunk_key(1)).expect("remove");
        let e = r.get().expect_err("must refuse");
        assert!(e.to_string().contains("chunk 1 of 3 is missing"), "{e}");
    }
}
