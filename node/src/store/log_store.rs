//! The Raft log, vote and commit index in sled.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use super::crash::hit;
use super::identity::Marker;
use super::record::{decode_at, encode};
use super::{must_write, to_io, Flusher};
use crate::mutation::{active, Mutation};
use crate::types::{Entry, LogId, TypeConfig, Vote};

const LOG: &str = "raft_log";
const META: &str = "raft_meta";
const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// Entries keyed by big-endian index, so sled's byte order is log order.
#[derive(Clone)]
pub struct LogStore {
    log: sled::Tree,
    meta: sled::Tree,
    flusher: Flusher,
    /// Keeps the identity file's high-water mark and vote (not in tests
    /// that open a bare store).
    marker: Option<Arc<Marker>>,
}

/// What the log holds on disk, as a start finds it.
pub(crate) struct DiskLog {
    /// The vote.
    pub vote: Option<Vote>,
    /// The last log id (the purge mark if no entry is after it).
    pub last: Option<LogId>,
    /// The purge mark.
    pub purged: Option<LogId>,
}

impl LogStore {
    /// Opens the log and reconciles what a crash can leave behind (see
    /// [`LogStore::reconcile`]); refuses a log that contradicts itself.
    pub fn open(db: &sled::Db, flusher: Flusher) -> io::Result<LogStore> {
        let store = LogStore {
            log: db.open_tree(LOG).map_err(to_io)?,
            meta: db.open_tree(META).map_err(to_io)?,
            flusher,
            marker: None,
        };
        store.reconcile()?;
        Ok(store)
    }

    /// A crash inside `purge` can leave the purge mark on disk without some
    /// of the deletions it announced (the mark is flushed first on purpose:
    /// the other order could leave a gap nothing explains). Such entries are
    /// dead: drop them and flush before anyone reads the log state. Then
    /// check what must hold whatever the crash: entries contiguous, each
    /// stored under its own index, terms never decreasing, the first one
    /// right after the purge mark.
    fn reconcile(&self) -> io::Result<()> {
        let purged: Option<LogId> = self.get_meta(LAST_PURGED)?;
        if let Some(p) = &purged {
            let mut batch = sled::Batch::default();
            let mut stale = 0u64;
            for k in self.log.range(..=p.index.to_be_bytes()).keys() {
                batch.remove(k.map_err(to_io)?);
                stale += 1;
            }
            if stale > 0 {
                tracing::warn!(stale, last_purged = %p, "dropping log entries a crash left behind the purge mark");
                self.log.apply_batch(batch).map_err(to_io)?;
                self.log.flush().map_err(to_io)?;
            }
        }
        self.check_log(purged)
    }

    fn check_log(&self, purged: Option<LogId>) -> io::Result<()> {
        let corrupt = |msg: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the Raft log on disk is inconsistent: {msg}; refusing to start (restore this node's data dir or wipe it and re-add the node)"),
            )
        };
        let mut prev: Option<LogId> = purged;
        for kv in self.log.iter() {
            let (k, v) = kv.map_err(to_io)?;
            let entry: Entry = decode_at(LOG, &k, &v)?;
            let id = entry.log_id;
            if k.as_ref() != id.index.to_be_bytes() {
                return Err(corrupt(format!("entry {id} stored under another index")));
            }
            if let Some(p) = &prev {
                if id.index != p.index + 1 {
                    return Err(corrupt(format!("entry {id} follows {p}: a gap")));
                }
                if id.leader_id.term < p.leader_id.term {
                    return Err(corrupt(format!("entry {id} has a lower term than {p}")));
                }
            }
            prev = Some(id);
        }
        Ok(())
    }

    /// From now on, votes, truncations and flushed appends are recorded in
    /// the identity file through `marker`.
    pub(crate) fn set_marker(&mut self, marker: Arc<Marker>) {
        self.marker = Some(marker);
    }

    /// The vote and the log's extent on disk.
    pub(crate) fn disk_log(&self) -> io::Result<DiskLog> {
        let purged: Option<LogId> = self.get_meta(LAST_PURGED)?;
        Ok(DiskLog {
            vote: self.get_meta(VOTE)?,
            last: self.last_log_id(purged)?,
            purged,
        })
    }

    /// The entry at `index`, if the log holds it.
    pub(crate) fn entry(&self, index: u64) -> io::Result<Option<Entry>> {
        let key = index.to_be_bytes();
        match self.log.get(key).map_err(to_io)? {
            Some(v) => Ok(Some(decode_at(LOG, &key, &v)?)),
            None => Ok(None),
        }
    }

    /// The last log id: the last entry after the purge mark, else the mark.
    /// An entry at or below the mark is dead (a crash cut a purge short).
    fn last_log_id(&self, last_purged: Option<LogId>) -> io::Result<Option<LogId>> {
        Ok(self
            .last_entry_log_id()?
            .filter(|l| last_purged.is_none_or(|p| l.index > p.index))
            .or(last_purged))
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.meta.get(key).map_err(to_io)? {
            Some(b) => Ok(Some(decode_at(META, key, &b)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], v: &T) -> io::Result<()> {
        must_write("write Raft metadata", self.meta.insert(key, encode(v)?));
        Ok(())
    }

    fn last_entry_log_id(&self) -> io::Result<Option<LogId>> {
        match self.log.last().map_err(to_io)? {
            Some((k, v)) => Ok(Some(decode_at::<Entry>(LOG, &k, &v)?.log_id)),
            None => Ok(None),
        }
    }
}

fn index_range<RB: RangeBounds<u64>>(range: &RB) -> Option<(u64, u64)> {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => *e,
        Bound::Excluded(e) => e.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    (start <= end).then_some((start, end))
}

impl LogStore {
    /// Entries `start..=end` in index order, stopping before the one that
    /// would take their stored size past `budget` (the first always comes).
    fn read_entries(&self, start: u64, end: u64, budget: usize) -> Result<Vec<Entry>, io::Error> {
        // A read that fails stops Raft; the watchdog then stops the node.
        super::crash::io_error("store::read::entries")?;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for kv in self.log.range(start.to_be_bytes()..=end.to_be_bytes()) {
            let (k, v) = kv.map_err(to_io)?;
            if !entries.is_empty() && bytes.saturating_add(v.len()) > budget {
                break;
            }
            bytes += v.len();
            entries.push(decode_at::<Entry>(LOG, &k, &v)?);
        }
        Ok(entries)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let Some((start, end)) = index_range(&range) else {
            return Ok(Vec::new());
        };
        self.read_entries(start, end, usize::MAX)
    }

    /// What replication sends in one append request: the entries from
    /// `start`, stopping before the one that would take their stored size
    /// past [`APPEND_BYTES`] (at least one entry, never an empty answer for a
    /// non-empty range). openraft asks for up to `max_payload_entries`
    /// (1000) at a time and retries the same range after a timeout of
    /// three quarters of a heartbeat; 1000 batch entries of up to 64 KiB
    /// each could never arrive in that time, and a follower behind by as
    /// many would never catch up.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.read_entries(start, end - 1, APPEND_BYTES)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(VOTE)
    }
}

/// Stored bytes of log entries one append request carries at most (see
/// `LogStore::limited_get_log_entries`).
pub const APPEND_BYTES: usize = 1 << 20;

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last = self.last_log_id(last_purged)?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(VOTE, vote)?;
        hit("store::vote::after_write");
        // A vote must be on disk before we answer it, or a restart could vote twice.
        self.flusher.flush().await?;
        hit("store::vote::after_flush");
        // In the identity file before it is answered: a database that later
        // loses it is refused at start instead of voting again.
        if let Some(m) = self.marker.clone() {
            let vote = *vote;
            tokio::task::spawn_blocking(move || m.vote_saved(vote))
                .await
                .map_err(io::Error::other)?;
        }
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed: losing it only means re-learning the commit index from
        // the leader. It is written after the entries it covers, so any
        // surviving prefix of writes that holds it holds them too.
        self.put_meta(COMMITTED, &committed)?;
        hit("store::committed::after_write");
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut n = 0u64;
        let mut last = None;
        for entry in entries {
            batch.insert(&entry.log_id.index.to_be_bytes(), encode(&entry)?);
            n += 1;
            last = Some(entry.log_id);
        }
        must_write("append to the Raft log", self.log.apply_batch(batch));
        hit("store::append::after_write");
        if active(Mutation::AckBeforeFsync) {
            // Test-only mutation: acknowledged before it is durable.
            callback.io_completed(Ok(()));
            return Ok(());
        }
        // Acknowledged only when durable: the flusher calls back after fsync.
        // The identity file's mark may follow once they are durable.
        let marked = self
            .marker
            .clone()
            .zip(last)
            .map(|(m, l)| (m.epoch(), m, l));
        self.flusher.after_flush(n, move |r| {
            if let (Ok(()), Some((epoch, m, last))) = (&r, marked) {
                m.flushed(epoch, last);
            }
            callback.io_completed(r)
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        // The identity file's mark goes down first: a crash anywhere below
        // leaves a mark the log still reaches.
        if let Some(m) = self.marker.clone() {
            tokio::task::spawn_blocking(move || m.before_truncate(last_log_id))
                .await
                .map_err(io::Error::other)?;
        }
        let mut batch = sled::Batch::default();
        for kv in self.log.range(from.to_be_bytes()..) {
            batch.remove(kv.map_err(to_io)?.0);
        }
        must_write("truncate the Raft log", self.log.apply_batch(batch));
        hit("store::truncate::after_write");
        // Flushed so conflicting entries cannot reappear after a crash. Until
        // then a crash brings them back whole (one atomic batch), as if the
        // truncation never began: nothing was acknowledged on top of it.
        self.flusher.flush().await?;
        hit("store::truncate::after_flush");
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: a crash in between leaves extra
        // entries, never a gap that `get_log_state` cannot explain. The
        // extras are ignored by `get_log_state` and dropped by `open`.
        self.put_meta(LAST_PURGED, &log_id)?;
        hit("store::purge::after_mark");
        self.flusher.flush().await?;
        hit("store::purge::after_mark_flush");
        let mut batch = sled::Batch::default();
        for kv in self.log.range(..=log_id.index.to_be_bytes()) {
            batch.remove(kv.map_err(to_io)?.0);
        }
        must_write("purge the Raft log", self.log.apply_batch(batch));
        hit("store::purge::after_delete");
        Ok(())
    }
}
