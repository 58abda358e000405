//! The Raft log, vote and commit index in sled.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use super::{decode, encode, to_io, Flusher};
use crate::types::{Entry, LogId, TypeConfig, Vote};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// Entries keyed by big-endian index, so sled's byte order is log order.
#[derive(Clone)]
pub struct LogStore {
    log: sled::Tree,
    meta: sled::Tree,
    flusher: Flusher,
}

impl LogStore {
    pub fn open(db: &sled::Db, flusher: Flusher) -> io::Result<LogStore> {
        Ok(LogStore {
            log: db.open_tree("raft_log").map_err(to_io)?,
            meta: db.open_tree("raft_meta").map_err(to_io)?,
            flusher,
        })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.meta.get(key).map_err(to_io)? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], v: &T) -> io::Result<()> {
        self.meta.insert(key, encode(v)?).map_err(to_io)?;
        Ok(())
    }

    fn last_entry_log_id(&self) -> io::Result<Option<LogId>> {
        match self.log.last().map_err(to_io)? {
            Some((_, v)) => Ok(Some(decode::<Entry>(&v)?.log_id)),
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

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let Some((start, end)) = index_range(&range) else {
            return Ok(Vec::new());
        };
        self.log
            .range(start.to_be_bytes()..=end.to_be_bytes())
            .map(|kv| decode::<Entry>(&kv.map_err(to_io)?.1))
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.get_meta(LAST_PURGED)?;
        let last = self.last_entry_log_id()?.or(last_purged);
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
        // A vote must be on disk before we answer it, or a restart could vote twice.
        self.flusher.flush().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not flushed: losing it only means re-learning the commit index from the leader.
        self.put_meta(COMMITTED, &committed)
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
        for entry in entries {
            batch.insert(&entry.log_id.index.to_be_bytes(), encode(&entry)?);
            n += 1;
        }
        self.log.apply_batch(batch).map_err(to_io)?;
        // Acknowledged only when durable: the flusher calls back after fsync.
        self.flusher
            .after_flush(n, move |r| callback.io_completed(r));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        let mut batch = sled::Batch::default();
        for kv in self.log.range(from.to_be_bytes()..) {
            batch.remove(kv.map_err(to_io)?.0);
        }
        self.log.apply_batch(batch).map_err(to_io)?;
        // Flushed so conflicting entries cannot reappear after a crash.
        self.flusher.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: a crash in between leaves extra
        // entries, never a gap that `get_log_state` cannot explain.
        self.put_meta(LAST_PURGED, &log_id)?;
        self.flusher.flush().await?;
        let mut batch = sled::Batch::default();
        for kv in self.log.range(..=log_id.index.to_be_bytes()) {
            batch.remove(kv.map_err(to_io)?.0);
        }
        self.log.apply_batch(batch).map_err(to_io)?;
        Ok(())
    }
}
