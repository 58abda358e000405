//! Retired owner hashes: runs that ended and must never be granted again.
//!
//! An owner hash `{key}@{process_hash}.{seq}` names one run of one job. Once
//! that run's lock has ended (released, expired, its process died or ended),
//! a copy of its acquire that arrives late must not take the key again: the
//! owner believes the run is over, so the grant would hold the key for
//! nobody, and in the fault suite's words an acknowledged acquire would be
//! applied twice. Late copies are real: a client whose try timed out retries
//! elsewhere, while the first copy still sits in a socket buffer, a frozen
//! node or a forwarding hop; the fault suite saw one re-grant a key to its
//! finished owner 4 s after the release.
//!
//! The table therefore remembers, per process part of the owner hash, its
//! ended runs (sequence number and key: the seed does not say whether a
//! client numbers runs per process or per key), and refuses an acquire by
//! any of them (`OWNER_HASH_RETIRED`). The trace suffix is not part of a
//! run's identity. Memory is bounded three ways, oldest first:
//! at most [`RUNS_PER_PROCESS`] runs per process, records untouched for
//! [`KEEP_MS`] of log time are dropped by the sweep, and at most
//! [`MAX_RECORDS`] records in all. A late copy older than all three bounds
//! (a request frozen for an hour, or older than the process's last 64 runs)
//! is no longer recognised; docs/protocol.md says so.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Ended runs remembered per process part (the highest numbers are kept).
pub const RUNS_PER_PROCESS: usize = 64;
/// Log time a record is kept after its last change.
pub const KEEP_MS: u64 = 60 * 60 * 1000;
/// Records kept in all; beyond it the least recently changed goes first.
pub const MAX_RECORDS: usize = 100_000;

/// The ended runs of one process part, as persisted and replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    /// The `{hostname}/{pid}.{nanoseconds}` part of the owner hashes.
    pub process_hash: String,
    /// Ended runs as `(seq, key_hash(key))`, ascending, at most
    /// [`RUNS_PER_PROCESS`]. A hash, not the key, so a record stays small
    /// whatever the keys; a collision could only refuse one acquire whose
    /// process and sequence number also match an ended run's.
    pub runs: Vec<(u64, u64)>,
    /// Log time of the last change: the record is dropped [`KEEP_MS`] later.
    pub at: u64,
}

/// What a change to the retired set asks storage to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetiredChange {
    /// Write this record.
    Put(Retired),
    /// Remove the record of this process part.
    Delete(String),
}

/// The retired set with its age index (derived, rebuilt on load).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetiredOwners {
    by_process: BTreeMap<String, Retired>,
    /// `(at, process_hash)` of every record: the oldest is first.
    by_age: BTreeSet<(u64, String)>,
}

impl RetiredOwners {
    /// Rebuilds the set from persisted records.
    pub fn from_records(records: impl IntoIterator<Item = Retired>) -> Self {
        let mut set = RetiredOwners::default();
        for r in records {
            set.by_age.insert((r.at, r.process_hash.clone()));
            set.by_process.insert(r.process_hash.clone(), r);
        }
        set
    }

    /// Every record, in process order (snapshots, digests).
    pub fn records(&self) -> impl Iterator<Item = &Retired> {
        self.by_process.values()
    }

    /// Number of records (process parts).
    pub fn len(&self) -> usize {
        self.by_process.len()
    }

    /// Whether no run has ended (or all were forgotten).
    pub fn is_empty(&self) -> bool {
        self.by_process.is_empty()
    }

    /// Whether run `seq` of `process_hash` on `key` has ended.
    pub fn contains(&self, process_hash: &str, seq: u64, key: &str) -> bool {
        let run = (seq, key_hash(key));
        self.by_process
            .get(process_hash)
            .is_some_and(|r| r.runs.binary_search(&run).is_ok())
    }

    /// Records run `seq` of `process_hash` on `key` as ended at log time `now`.
    pub fn retire(
        &mut self,
        process_hash: &str,
        seq: u64,
        key: &str,
        now: u64,
    ) -> Vec<RetiredChange> {
        let run = (seq, key_hash(key));
        let mut record = match self.by_process.remove(process_hash) {
            Some(r) => {
                self.by_age.remove(&(r.at, r.process_hash.clone()));
                r
            }
            None => Retired {
                process_hash: process_hash.to_string(),
                runs: Vec::new(),
                at: now,
            },
        };
        if let Err(pos) = record.runs.binary_search(&run) {
            record.runs.insert(pos, run);
        }
        if record.runs.len() > RUNS_PER_PROCESS {
            let extra = record.runs.len() - RUNS_PER_PROCESS;
            record.runs.drain(..extra);
        }
        record.at = record.at.max(now);
        self.by_age.insert((record.at, record.process_hash.clone()));
        self.by_process
            .insert(record.process_hash.clone(), record.clone());
        let mut changes = vec![RetiredChange::Put(record)];
        while self.by_process.len() > MAX_RECORDS {
            changes.extend(self.drop_oldest());
        }
        changes
    }

    /// Whether a sweep at `now` would drop a record.
    pub fn has_expired(&self, now: u64) -> bool {
        self.by_age
            .first()
            .is_some_and(|(at, _)| at.saturating_add(KEEP_MS) <= now)
    }

    /// Drops the records untouched for [`KEEP_MS`] at `now`.
    pub fn sweep(&mut self, now: u64) -> Vec<RetiredChange> {
        let mut changes = Vec::new();
        while self.has_expired(now) {
            changes.extend(self.drop_oldest());
        }
        changes
    }

    fn drop_oldest(&mut self) -> Option<RetiredChange> {
        let (_, process_hash) = self.by_age.pop_first()?;
        self.by_process.remove(&process_hash);
        Some(RetiredChange::Delete(process_hash))
    }

    /// Structural checks (after loading, before installing a snapshot).
    pub fn check_invariants(&self) {
        assert_eq!(
            self.by_process.len(),
            self.by_age.len(),
            "retired-owner age index out of step"
        );
        assert!(
            self.by_process.len() <= MAX_RECORDS,
            "too many retired records"
        );
        for (hash, r) in &self.by_process {
            assert_eq!(hash, &r.process_hash, "retired record under the wrong hash");
            assert!(
                self.by_age.contains(&(r.at, hash.clone())),
                "retired record {hash:?} missing from the age index"
            );
            assert!(
                r.runs.len() <= RUNS_PER_PROCESS && r.runs.windows(2).all(|w| w[0] < w[1]),
                "retired runs of {hash:?} not ascending or over the cap"
            );
        }
    }
}

/// A stable 64-bit hash of a key: the first 8 bytes of its SHA-256, so every
/// replica and every release computes the same value.
pub fn key_hash(key: &str) -> u64 {
    let d = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_exactly_the_retired_runs() {
        let mut s = RetiredOwners::default();
        s.retire("h/1.2", 5, "k", 10);
        s.retire("h/1.2", 3, "k", 11);
        assert!(s.contains("h/1.2", 5, "k") && s.contains("h/1.2", 3, "k"));
        assert!(
            !s.contains("h/1.2", 4, "k"),
            "a run still in flight is not retired"
        );
        assert!(!s.contains("h/1.3", 5, "k"));
        assert!(
            !s.contains("h/1.2", 5, "other"),
            "runs are numbered per key too"
        );
        s.check_invariants();
    }

    #[test]
    fn keeps_the_newest_seqs_per_process() {
        let mut s = RetiredOwners::default();
        for seq in 0..(RUNS_PER_PROCESS as u64 + 10) {
            s.retire("h/1.2", seq, "k", seq);
        }
        assert!(!s.contains("h/1.2", 9, "k"));
        assert!(s.contains("h/1.2", 10, "k"));
        assert!(s.contains("h/1.2", RUNS_PER_PROCESS as u64 + 9, "k"));
        s.check_invariants();
    }

    #[test]
    fn sweep_drops_records_after_keep_ms() {
        let mut s = RetiredOwners::default();
        s.retire("a/1.1", 1, "k", 100);
        s.retire("b/1.1", 1, "k", 200);
        assert!(!s.has_expired(100 + KEEP_MS - 1));
        assert_eq!(
            s.sweep(100 + KEEP_MS),
            vec![RetiredChange::Delete("a/1.1".into())]
        );
        assert!(s.contains("b/1.1", 1, "k") && !s.contains("a/1.1", 1, "k"));
        s.check_invariants();
    }

    #[test]
    fn at_most_max_records_the_least_recently_changed_go_first() {
        let mut s = RetiredOwners::default();
        for i in 0..(MAX_RECORDS as u64 + 2) {
            s.retire(&format!("h/{i}.1"), 1, "k", i);
        }
        assert_eq!(s.len(), MAX_RECORDS);
        assert!(!s.contains("h/0.1", 1, "k") && !s.contains("h/1.1", 1, "k"));
        assert!(s.contains("h/2.1", 1, "k"));
        s.check_invariants();
    }
}
