//! [`LockSet`]: the lock records of a table, one per key, in key order.
//!
//! Why not a `BTreeMap<String, Lock>`: memory. A table is sized by its live
//! locks (a node holds a million of them), and the map stored every key
//! twice (map key and `Lock::key`, each its own heap string) and kept the
//! 160-byte `Lock` inline in B-tree nodes that are half empty when keys
//! arrive in order (a node split leaves 6 of 11 slots used). Here each
//! record is boxed once and found by its own `key`, so a node slot is one
//! pointer and the key exists once. Bytes per lock of the benchmark's table
//! (`examples/table_memory.rs`): about 550 before, about 370 after.
//!
//! A record's key never changes while it is in the set: the set hands out
//! shared references only, and [`LockSet::set_expiries`], the one in-place
//! update, moves deadlines, never keys.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Bound;

use super::model::Lock;

/// Lock records by key. Equality compares whole records.
#[derive(Debug, Clone, Default)]
pub(crate) struct LockSet(BTreeSet<ByKey>);

/// One record, ordered (and equal) by its key alone, so the set can be
/// searched with a `&str` ([`Borrow`] requires `Eq` and `Ord` to agree with
/// those of the borrowed key).
#[derive(Debug, Clone)]
struct ByKey(Box<Lock>);

impl Borrow<str> for ByKey {
    fn borrow(&self) -> &str {
        &self.0.key
    }
}

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for ByKey {}

impl PartialOrd for ByKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.key.cmp(&other.0.key)
    }
}

impl PartialEq for LockSet {
    /// Same records, field by field (a table compared with its replay).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for LockSet {}

impl LockSet {
    /// A set of `records`; of two with one key, the later is kept (as map
    /// inserts did). Built in one pass from the sorted records, so its
    /// nodes are full: a table loaded at start takes less than one grown
    /// record by record.
    pub(crate) fn from_records(records: impl IntoIterator<Item = Lock>) -> Self {
        let mut boxed: Vec<ByKey> = records.into_iter().map(|l| ByKey(Box::new(l))).collect();
        // Reversed, a stable sort puts the later of equal keys first, and
        // `dedup` keeps the first of each run (which record `from_iter`
        // keeps is not documented).
        boxed.reverse();
        boxed.sort();
        boxed.dedup();
        // From sorted unique elements `from_iter` builds the tree bottom-up.
        LockSet(boxed.into_iter().collect())
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Lock> {
        self.0.get(key).map(|b| &*b.0)
    }

    /// Stores `lock` under its key, returning the record it replaces.
    pub(crate) fn insert(&mut self, lock: Lock) -> Option<Lock> {
        self.0.replace(ByKey(Box::new(lock))).map(|old| *old.0)
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<Lock> {
        self.0.take(key).map(|old| *old.0)
    }

    /// Every record, in key order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &Lock> + '_ {
        self.0.iter().map(|b| &*b.0)
    }

    /// The records from `start` on (`Included` / `Excluded` / `Unbounded`),
    /// in key order.
    pub(crate) fn range_from<'a>(
        &'a self,
        start: Bound<&str>,
    ) -> impl Iterator<Item = &'a Lock> + use<'a> {
        self.0
            .range::<str, _>((start, Bound::Unbounded))
            .map(|b| &*b.0)
    }

    /// Gives each record for which `shift` answers `Some(t)` the deadline
    /// `expires_at = t`, without moving or copying any record.
    ///
    /// The set is rebuilt from its own sorted entries (a B-tree hands out
    /// no mutable access to its elements): O(n), a vector of pointers as
    /// the only extra memory, and full nodes afterwards.
    pub(crate) fn set_expiries(&mut self, mut shift: impl FnMut(&Lock) -> Option<u64>) {
        let old = std::mem::take(&mut self.0);
        self.0 = old
            .into_iter()
            .map(|mut b| {
                if let Some(t) = shift(&b.0) {
                    b.0.expires_at = t;
                }
                b
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(key: &str, owner: &str, expires_at: u64) -> Lock {
        Lock {
            key: key.into(),
            owner_hash: owner.into(),
            process_hash: None,
            trace: None,
            acquired_at: 1,
            extended_at: 1,
            expires_at,
            ttl_ms: 10,
            fencing_token: 1,
            token: None,
        }
    }

    #[test]
    fn records_are_found_by_their_own_key_in_key_order() {
        let mut s = LockSet::default();
        assert!(s.insert(lock("b", "b@p.1", 5)).is_none());
        assert!(s.insert(lock("a", "a@p.1", 5)).is_none());
        let old = s.insert(lock("b", "b@q.1", 7));
        assert_eq!(old.map(|l| l.owner_hash), Some("b@p.1".to_string()));
        assert_eq!(s.len(), 2);
        assert_eq!(s.get("b").map(|l| l.expires_at), Some(7));
        let keys: Vec<&str> = s.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        let from_b: Vec<&str> = s
            .range_from(Bound::Excluded("a"))
            .map(|l| l.key.as_str())
            .collect();
        assert_eq!(from_b, ["b"]);
        assert_eq!(s.remove("a").map(|l| l.key), Some("a".to_string()));
        assert!(s.get("a").is_none() && s.remove("a").is_none());
    }

    #[test]
    fn equality_compares_whole_records_not_keys() {
        let a = LockSet::from_records([lock("k", "k@p.1", 5)]);
        let b = LockSet::from_records([lock("k", "k@p.1", 6)]);
        assert_ne!(a, b);
        assert_eq!(a, a.clone());
    }

    #[test]
    fn building_keeps_the_later_of_two_records_with_one_key() {
        let s = LockSet::from_records([
            lock("b", "b@p.1", 1),
            lock("a", "a@p.1", 1),
            lock("b", "b@p.2", 1),
            lock("b", "b@p.3", 1),
        ]);
        let owners: Vec<&str> = s.iter().map(|l| l.owner_hash.as_str()).collect();
        assert_eq!(owners, ["a@p.1", "b@p.3"]);
    }

    #[test]
    fn set_expiries_moves_deadlines_only() {
        let mut s = LockSet::from_records((0..100).map(|i| lock(&format!("k{i:03}"), "o", i)));
        let before = s.clone();
        s.set_expiries(|l| (l.expires_at % 2 == 0).then_some(l.expires_at + 1000));
        assert_eq!(s.len(), 100);
        for (old, new) in before.iter().zip(s.iter()) {
            let want = if old.expires_at % 2 == 0 {
                old.expires_at + 1000
            } else {
                old.expires_at
            };
            assert_eq!(
                new,
                &Lock {
                    expires_at: want,
                    ..old.clone()
                }
            );
            assert_eq!(s.get(&old.key), Some(new));
        }
    }
}
