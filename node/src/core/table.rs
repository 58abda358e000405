//! [`LockTable`]: the replicated state and the pure `apply` over it.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::hashes::parse_owner_hash;
use super::lock_set::LockSet;
use super::model::{Caller, Change, Command, Lock, Op, Outcome, Process, Status};
use super::retired::{Retired, RetiredChange, RetiredOwners};
use crate::mutation::Mutation;

/// Processes and locks at a log time.
///
/// `now` is the log clock: the largest command time applied so far. Liveness is
/// always judged against a time passed in (the log clock for writes, the
/// leader's read time for reads), never against a clock of this machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockTable {
    now: u64,
    /// Lock records by key, each boxed and holding its key once (see
    /// [`LockSet`]: what a live lock costs in memory is mostly this).
    locks: LockSet,
    processes: BTreeMap<String, Process>,
    /// Derived index: process hash -> keys of the locks bound to it. Rebuilt on
    /// load, never persisted, so it cannot disagree with `locks` on disk.
    /// Keys as `Box<str>`: 16 bytes a slot instead of a `String`'s 24.
    by_process: BTreeMap<String, BTreeSet<Box<str>>>,
    /// Derived count: token name -> lock records granted to it (live or not
    /// yet swept), for the token's `max_locks`. Rebuilt on load.
    by_token: BTreeMap<String, u64>,
    /// Derived index: (expires_at, key) of every lock, so the sweep and
    /// its "anything expired?" check cost O(expired) and O(log n), never a
    /// scan of the table (etcd's lessor keeps such a deadline heap).
    /// One entry per lock record: `Box<str>` keeps it at 24 bytes a slot.
    lock_deadlines: BTreeSet<(u64, Box<str>)>,
    /// Derived index: (alive_until, process hash) of every process.
    process_deadlines: BTreeSet<(u64, String)>,
    /// Owner hashes whose run has ended: never granted again (see
    /// [`super::retired`]).
    retired: RetiredOwners,
    /// The test mutation this table applies: none unless the `mutations`
    /// feature is built in (see [`Switch`]).
    mutation: Switch,
}

/// Which test mutation ([`crate::mutation`]) a table applies.
///
/// Taken from the process-wide choice when the table is made, so every table
/// of a node (and every replica started alike) applies the same rules; the
/// core's own tests set it per table, as the process-wide choice is read once
/// per process. Without the `mutations` feature it holds nothing and
/// [`Switch::on`] is the constant `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Switch {
    #[cfg(feature = "mutations")]
    chosen: Option<Mutation>,
}

// Derivable only when the feature is off and the struct is empty.
#[allow(clippy::derivable_impls)]
impl Default for Switch {
    fn default() -> Self {
        Switch {
            #[cfg(feature = "mutations")]
            chosen: Mutation::ALL
                .into_iter()
                .find(|m| crate::mutation::active(*m)),
        }
    }
}

impl Switch {
    #[inline]
    fn on(self, m: Mutation) -> bool {
        #[cfg(feature = "mutations")]
        {
            self.chosen == Some(m)
        }
        #[cfg(not(feature = "mutations"))]
        {
            let _ = m;
            false
        }
    }
}

/// The persisted form of a table, in key order, for snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableImage {
    /// The log clock.
    pub now: u64,
    /// Every lock record, live or not yet swept.
    pub locks: Vec<Lock>,
    /// Every process record, live or not yet swept.
    pub processes: Vec<Process>,
    /// Every retired-runs record.
    pub retired: Vec<Retired>,
    /// `(key, token name)` of every lock granted to a token, in key order
    /// ([`Lock::token`]; snapshot format 2 on).
    pub lock_tokens: Vec<(String, String)>,
    /// `(process hash, token name)` of every process registered by a token,
    /// in hash order ([`Process::token`]; snapshot format 2 on).
    pub process_tokens: Vec<(String, String)>,
}

/// The answer to an owner-hash query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerStatus {
    /// RUNNING, SOMEONE_ELSE_HOLDS_LOCK, NO_KEY, NO_RUNNING_PROCESS or
    /// MALFORMED_OWNER_HASH.
    pub status: Status,
    /// The key the hash names (none when it does not parse).
    pub key: Option<String>,
    /// The lock on that key, when the status carries one.
    pub lock: Option<Lock>,
}

impl LockTable {
    /// An empty table at log time 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// TEST ONLY: this table applies mutation `m` (or none), whatever the
    /// process-wide choice, so one test binary can exercise every mutation.
    #[cfg(feature = "mutations")]
    pub fn with_mutation(mut self, m: Option<Mutation>) -> Self {
        self.mutation = Switch { chosen: m };
        self
    }

    /// Rebuilds a table from records read back from storage or a snapshot.
    pub fn from_parts(
        now: u64,
        locks: impl IntoIterator<Item = Lock>,
        processes: impl IntoIterator<Item = Process>,
        retired: impl IntoIterator<Item = Retired>,
    ) -> Self {
        let mut table = LockTable {
            now,
            retired: RetiredOwners::from_records(retired),
            ..Default::default()
        };
        for p in processes {
            table
                .process_deadlines
                .insert((p.alive_until, p.process_hash.clone()));
            table.processes.insert(p.process_hash.clone(), p);
        }
        // Indexed one by one (two records of one key leave a stale index
        // entry, which `check_invariants` refuses, as before), stored in one
        // bottom-up build (full B-tree nodes).
        let locks: Vec<Lock> = locks.into_iter().collect();
        for l in &locks {
            table.index_lock(l);
        }
        table.locks = LockSet::from_records(locks);
        table
    }

    /// Rebuilds a table from a snapshot image.
    pub fn from_image(image: TableImage) -> Self {
        let TableImage {
            now,
            mut locks,
            mut processes,
            retired,
            lock_tokens,
            process_tokens,
        } = image;
        let lock_tokens: BTreeMap<String, String> = lock_tokens.into_iter().collect();
        for l in &mut locks {
            l.token = lock_tokens.get(&l.key).cloned();
        }
        let process_tokens: BTreeMap<String, String> = process_tokens.into_iter().collect();
        for p in &mut processes {
            p.token = process_tokens.get(&p.process_hash).cloned();
        }
        Self::from_parts(now, locks, processes, retired)
    }

    /// The table as a snapshot image, every record in key order.
    pub fn to_image(&self) -> TableImage {
        TableImage {
            now: self.now,
            locks: self.locks.iter().cloned().collect(),
            processes: self.processes.values().cloned().collect(),
            retired: self.retired.records().cloned().collect(),
            lock_tokens: tokens_of(self.locks.iter().map(|l| (&l.key, l)), |l| {
                l.token.as_deref()
            }),
            process_tokens: tokens_of(self.processes.iter(), |p| p.token.as_deref()),
        }
    }

    /// The log clock: the latest command time applied.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Number of lock records, live or not yet swept.
    pub fn lock_records(&self) -> usize {
        self.locks.len()
    }

    /// Number of process records, live or not yet swept.
    pub fn process_records(&self) -> usize {
        self.processes.len()
    }

    /// Number of lock records granted to token `name` (live or not yet swept).
    pub fn token_lock_records(&self, name: &str) -> u64 {
        self.by_token.get(name).copied().unwrap_or(0)
    }

    /// The token that registered a process record, if any.
    pub fn process_token(&self, process_hash: &str) -> Option<&str> {
        self.processes.get(process_hash)?.token.as_deref()
    }

    /// Number of retired-owner records (see [`super::retired`]).
    pub fn retired_records(&self) -> usize {
        self.retired.len()
    }

    /// Whether the run named by `owner_hash` has ended: an acquire by it is
    /// refused.
    pub fn is_retired(&self, owner_hash: &str) -> bool {
        run_of(owner_hash).is_some_and(|(key, p, seq)| self.retired.contains(p, seq, key))
    }

    /// Applies one committed command at log index `index`.
    ///
    /// Pure: the result depends only on `self`, `index` and `cmd`. Returns the
    /// answer for the client and the records storage must write.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> (Outcome, Vec<Change>) {
        self.apply_each(cmd, |table, op| table.apply_op(index, cmd.time_ms, op))
    }

    /// How `cmd` is applied, one op at a time through `one` (which applies
    /// an op to the table with [`LockTable::apply_op`]; the watch history
    /// derives each op's events around it). A lone op is applied once. Each
    /// op of an [`Op::Batch`] is applied in order as if it were its own
    /// entry, one outcome each ([`Outcome::batch`]); a batch that
    /// [`Op::batch_refusal`] refuses is applied as the empty batch: the log
    /// time moves, nothing else, `Forbidden`. The one place that says what
    /// a batch means, for the table alone and for the watch history alike.
    pub fn apply_each(
        &mut self,
        cmd: &Command,
        mut one: impl FnMut(&mut LockTable, &Op) -> (Outcome, Vec<Change>),
    ) -> (Outcome, Vec<Change>) {
        let Op::Batch(ops) = &cmd.op else {
            return one(self, &cmd.op);
        };
        if Op::batch_refusal(ops).is_some() {
            return one(self, &Op::Batch(Vec::new()));
        }
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut changes = Vec::new();
        for op in ops {
            let (outcome, more) = one(self, op);
            outcomes.push(outcome);
            changes.extend(more);
        }
        let mut outcome = Outcome::status_only(Status::Success);
        outcome.batch = outcomes;
        (outcome, changes)
    }

    /// Applies one op (an [`Op::Batch`] here is refused: see
    /// [`LockTable::apply`]) at log index `index` and time `time_ms`.
    pub fn apply_op(&mut self, index: u64, time_ms: u64, op: &Op) -> (Outcome, Vec<Change>) {
        let before = self.now;
        self.now = self.now.max(time_ms);
        let mut tx = Tx {
            table: self,
            changes: Vec::new(),
            retired: BTreeMap::new(),
        };
        let outcome = tx.run(index, op, before, &Caller::default());
        let mut changes = tx.changes;
        changes.extend(tx.retired.into_values());
        #[cfg(debug_assertions)]
        self.check_invariants(index);
        (outcome, changes)
    }

    /// The lock record on `key`, live or not (the watch stream compares
    /// records before and after an apply).
    pub fn lock_record(&self, key: &str) -> Option<&Lock> {
        self.locks.get(key)
    }

    /// The process record of `process_hash`, live or not.
    pub fn process_record(&self, process_hash: &str) -> Option<&Process> {
        self.processes.get(process_hash)
    }

    /// The lock records bound to `process_hash`, in key order.
    pub fn locks_of(&self, process_hash: &str) -> Vec<&Lock> {
        self.by_process
            .get(process_hash)
            .map(|keys| keys.iter().filter_map(|k| self.locks.get(k)).collect())
            .unwrap_or_default()
    }

    /// Lock records whose own TTL has ended at `at` (what a sweep at `at`
    /// removes), in key order.
    pub fn lock_records_ended(&self, at: u64) -> Vec<&Lock> {
        self.expired_locks(at)
            .iter()
            .filter_map(|k| self.locks.get(k))
            .collect()
    }

    /// Process records whose keep-alive has lapsed at `at` (what a sweep at
    /// `at` removes), in hash order.
    pub fn process_records_ended(&self, at: u64) -> Vec<&Process> {
        self.expired_processes(at)
            .iter()
            .filter_map(|h| self.processes.get(h))
            .collect()
    }

    /// A live process at `at`.
    pub fn live_process(&self, process_hash: &str, at: u64) -> Option<&Process> {
        self.processes
            .get(process_hash)
            .filter(|p| at < p.alive_until)
    }

    /// Whether the lock's process (if it has one) is alive for this lock at `at`.
    fn process_alive_for(&self, lock: &Lock, at: u64) -> bool {
        match &lock.process_hash {
            None => true,
            Some(p) => self
                .live_process(p, at)
                .is_some_and(|p| p.since <= lock.acquired_at),
        }
    }

    /// When `lock`'s own ttl runs out: its `expires_at`, except under the
    /// `EarlyLease` test mutation, which judges every lease a quarter of its
    /// ttl early.
    fn lock_end(&self, lock: &Lock) -> u64 {
        if self.mutation.on(Mutation::EarlyLease) {
            lock.expires_at.saturating_sub(lock.ttl_ms / 4)
        } else {
            lock.expires_at
        }
    }

    fn is_live(&self, lock: &Lock, at: u64) -> bool {
        at < self.lock_end(lock) && self.process_alive_for(lock, at)
    }

    /// The live lock on `key` at `at`, if any.
    pub fn live_lock(&self, key: &str, at: u64) -> Option<&Lock> {
        self.locks.get(key).filter(|l| self.is_live(l, at))
    }

    /// Live locks whose key starts with `prefix`, in key order, at most `limit`.
    pub fn list(&self, prefix: &str, limit: usize, at: u64) -> Vec<&Lock> {
        self.locks_under(prefix)
            .filter(|l| self.is_live(l, at))
            .take(limit)
            .collect()
    }

    /// Live locks at `at` among the next `budget` lock records after key
    /// `after`, and the last key looked at (`None` at the end). Counting in
    /// slices lets the metrics page release the table between them.
    pub fn live_locks_in_slice(
        &self,
        after: Option<&str>,
        budget: usize,
        at: u64,
    ) -> (usize, Option<String>) {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let records = self.locks.range_from(start).map(|l| (l.key.as_str(), l));
        count_slice(records, budget, |l| self.is_live(l, at))
    }

    /// Live processes at `at`, in slices as [`Self::live_locks_in_slice`].
    pub fn live_processes_in_slice(
        &self,
        after: Option<&str>,
        budget: usize,
        at: u64,
    ) -> (usize, Option<String>) {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let records = self
            .processes
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(k, p)| (k.as_str(), p));
        count_slice(records, budget, |p| at < p.alive_until)
    }

    /// The seed's owner-hash status, judged at `at`.
    pub fn owner_status(&self, owner_hash: &str, at: u64) -> OwnerStatus {
        let Some(parts) = parse_owner_hash(owner_hash) else {
            return OwnerStatus {
                status: Status::MalformedOwnerHash,
                key: None,
                lock: None,
            };
        };
        let key = Some(parts.key.to_string());
        let Some(lock) = self.locks.get(parts.key).filter(|l| at < self.lock_end(l)) else {
            return OwnerStatus {
                status: Status::NoKey,
                key,
                lock: None,
            };
        };
        let status = if !self.process_alive_for(lock, at) {
            Status::NoRunningProcess
        } else if lock.owner_hash != owner_hash {
            Status::SomeoneElseHoldsLock
        } else {
            Status::Running
        };
        OwnerStatus {
            status,
            key,
            lock: Some(lock.clone()),
        }
    }

    /// Whether `lock`'s liveness can change in the window `(from, to]`: its
    /// TTL or its process's keep-alive runs out in it. A linearizable read
    /// that would judge at `to` what the log has only reached at `from` must
    /// first get that time into the log (see the API's read path).
    fn lock_changes_between(&self, lock: &Lock, from: u64, to: u64) -> bool {
        let within = |deadline: u64| from < deadline && deadline <= to;
        within(self.lock_end(lock))
            || lock
                .process_hash
                .as_deref()
                .and_then(|p| self.processes.get(p))
                .is_some_and(|p| within(p.alive_until))
    }

    /// [`Self::lock_changes_between`] for the lock on `key`, if any.
    pub fn key_changes_between(&self, key: &str, from: u64, to: u64) -> bool {
        self.locks
            .get(key)
            .is_some_and(|l| self.lock_changes_between(l, from, to))
    }

    /// [`Self::lock_changes_between`] for any lock whose key starts with `prefix`.
    pub fn prefix_changes_between(&self, prefix: &str, from: u64, to: u64) -> bool {
        self.locks_under(prefix)
            .any(|l| self.lock_changes_between(l, from, to))
    }

    /// Lock records whose key starts with `prefix`, in key order.
    fn locks_under<'a, 'p>(
        &'a self,
        prefix: &'p str,
    ) -> impl Iterator<Item = &'a Lock> + use<'a, 'p> {
        self.locks
            .range_from(Bound::Included(prefix))
            .take_while(move |l| l.key.starts_with(prefix))
    }

    /// Live processes whose hash starts with `prefix` and that `keep`
    /// accepts, in hash order, at most `limit`.
    pub fn list_processes(
        &self,
        prefix: &str,
        limit: usize,
        at: u64,
        keep: impl Fn(&Process) -> bool,
    ) -> Vec<&Process> {
        self.processes_under(prefix)
            .filter(|p| at < p.alive_until && keep(p))
            .take(limit)
            .collect()
    }

    /// Whether a process whose hash starts with `prefix` dies after `from`
    /// and no later than `to`.
    pub fn process_prefix_changes_between(&self, prefix: &str, from: u64, to: u64) -> bool {
        self.processes_under(prefix)
            .any(|p| from < p.alive_until && p.alive_until <= to)
    }

    fn processes_under<'a>(&'a self, prefix: &str) -> impl Iterator<Item = &'a Process> + use<'a> {
        let under = prefix.to_string();
        self.processes
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(under.as_str()))
            .map(|(_, p)| p)
    }

    /// Whether any lock or process is live at `at`: what a takeover marker
    /// judging at `at` would shift.
    ///
    /// A live process answers at once; otherwise only locks whose deadline
    /// is still ahead are looked at, latest first (with no process alive,
    /// the first one without a process is live).
    pub fn has_live(&self, at: u64) -> bool {
        if self
            .process_deadlines
            .last()
            .is_some_and(|(end, _)| at < *end)
        {
            return true;
        }
        self.lock_deadlines
            .iter()
            .rev()
            .take_while(|(end, _)| at < *end)
            .filter_map(|(_, key)| self.locks.get(key))
            .any(|l| self.is_live(l, at))
    }

    /// Whether a sweep at `at` would remove anything: O(log n).
    pub fn has_expired(&self, at: u64) -> bool {
        self.lock_deadlines
            .first()
            .is_some_and(|(end, _)| *end <= at)
            || self
                .process_deadlines
                .first()
                .is_some_and(|(end, _)| *end <= at)
            || self.retired.has_expired(at)
    }

    /// The keys of locks whose ttl ran out at `at`, in key order: the order
    /// a sweep has always removed them in (it decides which ended runs a
    /// process part keeps when more than its bound end at once), so every
    /// replica of every release sweeps alike.
    fn expired_locks(&self, at: u64) -> Vec<String> {
        let mut keys: Vec<String> = self
            .lock_deadlines
            .iter()
            .take_while(|(end, _)| *end <= at)
            .map(|(_, key)| key.to_string())
            .collect();
        keys.sort_unstable();
        keys
    }

    /// The hashes of processes whose ttl ran out at `at`, in hash order.
    fn expired_processes(&self, at: u64) -> Vec<String> {
        let mut hashes: Vec<String> = self
            .process_deadlines
            .iter()
            .take_while(|(end, _)| *end <= at)
            .map(|(_, hash)| hash.clone())
            .collect();
        hashes.sort_unstable();
        hashes
    }

    /// The earliest time at which `key`'s current holder stops being live, if
    /// it is live at `at`: when a waiter may try again without being told.
    pub fn holder_deadline(&self, key: &str, at: u64) -> Option<u64> {
        let lock = self.live_lock(key, at)?;
        let process_end = lock
            .process_hash
            .as_deref()
            .and_then(|p| self.processes.get(p))
            .map_or(u64::MAX, |p| p.alive_until);
        Some(self.lock_end(lock).min(process_end))
    }

    fn index_lock(&mut self, lock: &Lock) {
        if let Some(t) = &lock.token {
            *self.by_token.entry(t.clone()).or_default() += 1;
        }
        self.lock_deadlines
            .insert((lock.expires_at, lock.key.as_str().into()));
        if let Some(p) = &lock.process_hash {
            self.by_process
                .entry(p.clone())
                .or_default()
                .insert(lock.key.as_str().into());
        }
    }

    fn unindex_lock(&mut self, lock: &Lock) {
        if let Some(t) = &lock.token {
            if let Some(n) = self.by_token.get_mut(t) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.by_token.remove(t);
                }
            }
        }
        self.lock_deadlines
            .remove(&(lock.expires_at, lock.key.as_str().into()));
        if let Some(p) = &lock.process_hash {
            if let Some(keys) = self.by_process.get_mut(p) {
                keys.remove(lock.key.as_str());
                if keys.is_empty() {
                    self.by_process.remove(p);
                }
            }
        }
    }

    /// Asserts the structural invariants. Mutual exclusion itself is
    /// structural (one record per key); these catch a broken index or a token
    /// from the future.
    pub fn check_invariants(&self, last_index: u64) {
        let mut indexed = 0usize;
        // No "stored under the wrong key" check: the set finds a record by
        // its own key, so there is no second key to disagree (lock_set.rs).
        for lock in self.locks.iter() {
            let key = &lock.key;
            assert!(
                lock.fencing_token <= last_index,
                "fencing token {} beyond applied index {last_index}",
                lock.fencing_token
            );
            assert!(
                lock.acquired_at <= lock.extended_at,
                "extended before acquired"
            );
            if let Some(p) = &lock.process_hash {
                indexed += 1;
                assert!(
                    self.by_process
                        .get(p)
                        .is_some_and(|k| k.contains(key.as_str())),
                    "lock {key:?} missing from the process index"
                );
            }
        }
        let index_size: usize = self.by_process.values().map(BTreeSet::len).sum();
        assert_eq!(indexed, index_size, "process index has stale entries");
        let mut by_token: BTreeMap<&str, u64> = BTreeMap::new();
        for t in self.locks.iter().filter_map(|l| l.token.as_deref()) {
            *by_token.entry(t).or_default() += 1;
        }
        assert!(
            by_token
                .iter()
                .map(|(t, n)| (*t, *n))
                .eq(self.by_token.iter().map(|(t, n)| (t.as_str(), *n))),
            "token lock counts disagree with the lock records"
        );
        for (hash, p) in &self.processes {
            assert_eq!(hash, &p.process_hash, "process stored under the wrong hash");
            assert!(
                self.process_deadlines
                    .contains(&(p.alive_until, hash.clone())),
                "process {hash:?} missing from the deadline index"
            );
        }
        for l in self.locks.iter() {
            assert!(
                self.lock_deadlines
                    .contains(&(l.expires_at, l.key.as_str().into())),
                "lock {:?} missing from the deadline index",
                l.key
            );
        }
        assert_eq!(
            self.lock_deadlines.len(),
            self.locks.len(),
            "stale lock deadlines"
        );
        assert_eq!(
            self.process_deadlines.len(),
            self.processes.len(),
            "stale process deadlines"
        );
        self.retired.check_invariants();
    }
}

/// `(record key, token name)` of every record that has a token, in key order.
fn tokens_of<'a, V: 'a>(
    records: impl Iterator<Item = (&'a String, &'a V)>,
    token: impl Fn(&V) -> Option<&str>,
) -> Vec<(String, String)> {
    records
        .filter_map(|(k, v)| Some((k.clone(), token(v)?.to_string())))
        .collect()
}

/// The key, process part and sequence number of the run an owner hash
/// names, or `None` for a hash without a usable one (the API refuses those).
fn run_of(owner_hash: &str) -> Option<(&str, &str, u64)> {
    let parts = parse_owner_hash(owner_hash)?;
    Some((parts.key, parts.process_hash, parts.seq_number()?))
}

/// What an acquire asks for.
#[derive(Clone, Copy)]
struct Grant<'a> {
    key: &'a str,
    owner_hash: &'a str,
    process_hash: Option<&'a str>,
    trace: Option<&'a str>,
    ttl_ms: u64,
}

/// One apply in progress: mutates the table and records what changed.
struct Tx<'a> {
    table: &'a mut LockTable,
    changes: Vec<Change>,
    /// The last write of each retired-runs record in this apply, keyed by
    /// process part: one apply may retire many runs of one process (ending
    /// it, a sweep), and storage needs only the final record, once.
    retired: BTreeMap<String, Change>,
}

impl Tx<'_> {
    fn now(&self) -> u64 {
        self.table.now
    }

    /// Applies `op` for `caller` (no token, no limits unless inside
    /// [`Op::As`]).
    fn run(&mut self, index: u64, op: &Op, before: u64, caller: &Caller) -> Outcome {
        match op {
            Op::Keepalive {
                process_hash,
                ttl_ms,
                info,
            } => self.keepalive(process_hash, *ttl_ms, info.as_deref(), caller),
            Op::EndProcess { process_hash } => self.end_process(process_hash, caller),
            Op::Acquire {
                key,
                owner_hash,
                process_hash,
                trace,
                ttl_ms,
            } => {
                let grant = Grant {
                    key,
                    owner_hash,
                    process_hash: process_hash.as_deref(),
                    trace: trace.as_deref(),
                    ttl_ms: *ttl_ms,
                };
                self.acquire(index, &grant, caller)
            }
            Op::Extend {
                key,
                owner_hash,
                ttl_ms,
            } => self.extend(key, owner_hash, *ttl_ms),
            Op::Release { key, owner_hash } => self.release(key, owner_hash),
            Op::Sweep => self.sweep(),
            Op::LeaderTakeover => self.leader_takeover(before),
            // The log time moved; nothing else changes.
            Op::Tick => Outcome::status_only(Status::Success),
            Op::As { caller, op } => self.run(index, op, before, caller),
            // Reached only for a batch that may not be applied (nested, in
            // an `As`, or refused by `LockTable::apply_each`): nothing changes.
            Op::Batch(_) => Outcome::status_only(Status::Forbidden),
        }
    }

    /// Whether `caller` may act on the process record of `process_hash`:
    /// not when another token registered it. A request without a token
    /// (tokens off on the proposing leader) is not judged.
    fn may_touch_process(&self, process_hash: &str, caller: &Caller) -> bool {
        match (self.table.process_token(process_hash), &caller.token) {
            (Some(owner), Some(asking)) => owner == asking,
            _ => true,
        }
    }

    /// Whether a new lock record for `key` would break a limit of `caller`:
    /// the table's lock records, or the token's.
    fn over_lock_limits(&self, key: &str, caller: &Caller) -> bool {
        let existing = self.table.locks.get(key);
        // Replacing a dead record adds none to the table.
        let adds = u64::from(existing.is_none());
        let total = self.table.locks.len() as u64;
        if caller.max_locks.is_some_and(|max| total + adds > max) {
            return true;
        }
        let (Some(token), Some(max)) = (&caller.token, caller.token_max_locks) else {
            return false;
        };
        let already_its = existing.is_some_and(|l| l.token.as_ref() == Some(token));
        let held = self.table.token_lock_records(token);
        held + u64::from(!already_its) > max
    }

    fn put_lock(&mut self, lock: Lock) {
        // Out first, so the old record's index entries go before the new
        // one's come (they may be equal: a renew to the same deadline).
        if let Some(old) = self.table.locks.remove(&lock.key) {
            self.table.unindex_lock(&old);
            if old.owner_hash != lock.owner_hash {
                // A dead lock replaced by another owner's: that run is over.
                self.retire(&old.owner_hash);
            }
        }
        self.table.index_lock(&lock);
        self.changes.push(Change::PutLock(lock.clone()));
        self.table.locks.insert(lock);
    }

    fn delete_lock(&mut self, key: &str) {
        if let Some(old) = self.table.locks.remove(key) {
            self.table.unindex_lock(&old);
            self.retire(&old.owner_hash);
            self.changes.push(Change::DeleteLock(old.key));
        }
    }

    /// Marks the run named by `owner_hash` as ended (see [`super::retired`]).
    fn retire(&mut self, owner_hash: &str) {
        if let Some((key, process, seq)) = run_of(owner_hash) {
            let now = self.now();
            let changes = self.table.retired.retire(process, seq, key, now);
            self.push_retired(changes);
        }
    }

    fn push_retired(&mut self, changes: Vec<RetiredChange>) {
        for c in changes {
            let (process, change) = match c {
                RetiredChange::Put(r) => (r.process_hash.clone(), Change::PutRetired(r)),
                RetiredChange::Delete(h) => (h.clone(), Change::DeleteRetired(h)),
            };
            self.retired.insert(process, change);
        }
    }

    fn put_process(&mut self, process: Process) {
        self.changes.push(Change::PutProcess(process.clone()));
        let key = (process.alive_until, process.process_hash.clone());
        let old = self
            .table
            .processes
            .insert(process.process_hash.clone(), process);
        if let Some(old) = old {
            self.table
                .process_deadlines
                .remove(&(old.alive_until, old.process_hash));
        }
        self.table.process_deadlines.insert(key);
    }

    fn delete_process(&mut self, process_hash: &str) {
        if let Some(old) = self.table.processes.remove(process_hash) {
            self.table
                .process_deadlines
                .remove(&(old.alive_until, old.process_hash));
            self.changes
                .push(Change::DeleteProcess(process_hash.to_string()));
        }
    }

    fn keepalive(
        &mut self,
        process_hash: &str,
        ttl_ms: u64,
        info: Option<&str>,
        caller: &Caller,
    ) -> Outcome {
        if !self.may_touch_process(process_hash, caller) {
            return Outcome::status_only(Status::Forbidden);
        }
        let is_new = !self.table.processes.contains_key(process_hash);
        let count = self.table.processes.len() as u64;
        if is_new && caller.max_processes.is_some_and(|max| count >= max) {
            return Outcome::status_only(Status::LimitExceeded);
        }
        // The token that registered it stays; an unowned record is claimed.
        let token = self
            .table
            .process_token(process_hash)
            .map(str::to_string)
            .or_else(|| caller.token.clone());
        let now = self.now();
        let alive_until = now.saturating_add(ttl_ms);
        let process = match self.table.live_process(process_hash, now) {
            Some(p) => Process {
                ttl_ms,
                alive_until,
                info: info.map(str::to_string).or_else(|| p.info.clone()),
                token,
                ..p.clone()
            },
            // A new incarnation: locks of an earlier one stay dead (see `since`).
            None => Process {
                process_hash: process_hash.to_string(),
                ttl_ms,
                alive_until,
                since: now,
                info: info.map(str::to_string),
                token,
            },
        };
        self.put_process(process);
        Outcome {
            status: Status::Success,
            lock: None,
            alive_until: Some(alive_until),
            batch: Vec::new(),
        }
    }

    fn end_process(&mut self, process_hash: &str, caller: &Caller) -> Outcome {
        if !self.may_touch_process(process_hash, caller) {
            return Outcome::status_only(Status::Forbidden);
        }
        let was_live = self.table.live_process(process_hash, self.now()).is_some();
        let keys: Vec<Box<str>> = self
            .table
            .by_process
            .get(process_hash)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            self.delete_lock(&key);
        }
        self.delete_process(process_hash);
        Outcome::status_only(if was_live {
            Status::Success
        } else {
            Status::NoKey
        })
    }

    fn acquire(&mut self, index: u64, g: &Grant<'_>, caller: &Caller) -> Outcome {
        let Grant {
            key,
            owner_hash,
            process_hash,
            trace,
            ttl_ms,
        } = *g;
        let now = self.now();
        if let Some(p) = process_hash {
            if self.table.live_process(p, now).is_none() {
                return Outcome::status_only(Status::NoRunningProcess);
            }
        }
        match self.held_by(key, owner_hash) {
            // Re-acquire by the same owner: an extend that keeps the token.
            Ok(held) => return self.renew(held, ttl_ms),
            Err(refusal) if refusal.status == Status::SomeoneElseHoldsLock => return refusal,
            Err(_) => {}
        }
        // A late copy of an acquire whose run already ended (its lock was
        // released, expired or died with its process): granting it would
        // hold the key for an owner that has moved on.
        let ended_here = self
            .table
            .locks
            .get(key)
            .is_some_and(|dead| dead.owner_hash == owner_hash);
        if ended_here || self.table.is_retired(owner_hash) {
            return Outcome::status_only(Status::OwnerHashRetired);
        }
        // Only a grant adds a record: re-acquires and refusals pass above.
        if self.over_lock_limits(key, caller) {
            return Outcome::status_only(Status::LimitExceeded);
        }
        let lock = Lock {
            key: key.to_string(),
            owner_hash: owner_hash.to_string(),
            process_hash: process_hash.map(str::to_string),
            trace: trace.map(str::to_string),
            acquired_at: now,
            extended_at: now,
            expires_at: now.saturating_add(ttl_ms),
            ttl_ms,
            fencing_token: self.token(index),
            token: caller.token.clone(),
        };
        self.put_lock(lock.clone());
        Outcome::with_lock(Status::Success, &lock)
    }

    /// The fencing token of a grant at `index`: the index itself. The
    /// `TokenNotIndex` test mutation takes one plus the number of lock records
    /// instead: deterministic (replicas agree), but it repeats as soon as a
    /// released key is granted again, and across leaders.
    fn token(&self, index: u64) -> u64 {
        if self.table.mutation.on(Mutation::TokenNotIndex) {
            self.table.locks.len() as u64 + 1
        } else {
            index
        }
    }

    /// The live lock on `key` if `owner_hash` holds it, else the refusal
    /// (NO_KEY, or SOMEONE_ELSE_HOLDS_LOCK with the holder).
    // Both sides are moved once per apply; boxing would only add an allocation.
    #[allow(clippy::result_large_err)]
    fn held_by(&self, key: &str, owner_hash: &str) -> Result<Lock, Outcome> {
        match self.table.live_lock(key, self.now()) {
            None => Err(Outcome::status_only(Status::NoKey)),
            Some(h) if h.owner_hash != owner_hash => {
                Err(Outcome::with_lock(Status::SomeoneElseHoldsLock, h))
            }
            Some(h) => Ok(h.clone()),
        }
    }

    fn renew(&mut self, held: Lock, ttl_ms: u64) -> Outcome {
        let now = self.now();
        let lock = Lock {
            extended_at: now,
            expires_at: now.saturating_add(ttl_ms),
            ttl_ms,
            ..held
        };
        self.put_lock(lock.clone());
        Outcome::with_lock(Status::Success, &lock)
    }

    fn extend(&mut self, key: &str, owner_hash: &str, ttl_ms: u64) -> Outcome {
        match self.held_by(key, owner_hash) {
            Ok(held) => self.renew(held, ttl_ms),
            Err(refusal) => refusal,
        }
    }

    fn release(&mut self, key: &str, owner_hash: &str) -> Outcome {
        match self.held_by(key, owner_hash) {
            // Deleting the lock retires its run.
            Ok(_) => {
                self.delete_lock(key);
                Outcome::status_only(Status::Success)
            }
            // Refused, but the owner is done with this run all the same: a
            // copy of its acquire still on the way must not grant it
            // afterwards (a release after an acquire of unknown outcome).
            Err(refusal) => {
                self.retire(owner_hash);
                refusal
            }
        }
    }

    fn sweep(&mut self) -> Outcome {
        let now = self.now();
        for key in self.table.expired_locks(now) {
            self.delete_lock(&key);
        }
        for p in self.table.expired_processes(now) {
            self.delete_process(&p);
        }
        let now = self.now();
        let changes = self.table.retired.sweep(now);
        self.push_retired(changes);
        Outcome::status_only(Status::Success)
    }

    /// The takeover marker (docs/protocol.md, "Time"). Liveness is judged at the log
    /// time *before* it, and every lock and process live then has its deadline
    /// shifted by the gap between that time and the marker's: the time
    /// without a leader plus any difference of clocks. So exactly the leases
    /// live before the marker are live after it (a new leader whose clock runs
    /// ahead ends none early), each keeps the remaining time it had, and a
    /// leader change grants no more than the gap (not a fresh ttl).
    ///
    /// Shifting keeps the incarnation rule: `since` and `acquired_at` are not
    /// moved, so a lock of an earlier incarnation stays dead, and a process
    /// dead before the marker is not shifted and comes back, if ever, as a new
    /// incarnation.
    fn leader_takeover(&mut self, before: u64) -> Outcome {
        // `now = max(before, marker time)`, so the gap is never negative: a
        // new leader whose clock is behind shifts nothing.
        let gap = self.now() - before;
        if gap == 0 || self.table.mutation.on(Mutation::NoTakeoverShift) {
            return Outcome::status_only(Status::Success);
        }
        // Both are judged before anything moves: a lock's liveness reads
        // its process's deadline. One flag per lock record, in key order,
        // instead of a copy of every live lock.
        let live_locks: Vec<bool> = self
            .table
            .locks
            .iter()
            .map(|l| self.table.is_live(l, before))
            .collect();
        let live_processes: Vec<Process> = self
            .table
            .processes
            .values()
            .filter(|p| before < p.alive_until)
            .cloned()
            .collect();
        for mut p in live_processes {
            p.alive_until = p.alive_until.saturating_add(gap);
            self.put_process(p);
        }
        self.shift_locks(&live_locks, gap);
        Outcome::status_only(Status::Success)
    }

    /// Shifts the deadline of every lock record flagged in `live` (one
    /// flag per record, in key order) by `gap`, in place (no copy of the
    /// table). Storage keeps lock deadlines relative to one table-wide
    /// shift, so it is told [`Change::ShiftLocks`] (which moves every
    /// stored deadline by `gap` at once) and then, in key order, a
    /// `PutLock` of each record whose deadline did not move by exactly
    /// `gap`: the unflagged ones (dead at `before`, so as many as the
    /// sweeper has yet to remove) and a flagged one whose shift stopped at
    /// `u64::MAX`. A marker that moves no lock tells storage nothing.
    fn shift_locks(&mut self, live: &[bool], gap: u64) {
        if !live.contains(&true) {
            return;
        }
        let mut flags = live.iter();
        let changes = &mut self.changes;
        changes.push(Change::ShiftLocks { gap });
        self.table.locks.set_expiries(|l| {
            // Records and flags come in the same order, the same number.
            let moves = flags.next().copied().unwrap_or(false);
            let at = if moves {
                l.expires_at.saturating_add(gap)
            } else {
                l.expires_at
            };
            // What storage will read back for this record unless rewritten.
            if at != l.expires_at.wrapping_add(gap) {
                changes.push(Change::PutLock(Lock {
                    expires_at: at,
                    ..l.clone()
                }));
            }
            moves.then_some(at)
        });
        // Rebuilt from the records' deadlines, reusing the index's keys.
        let locks = &self.table.locks;
        let old = std::mem::take(&mut self.table.lock_deadlines);
        self.table.lock_deadlines = old
            .into_iter()
            .map(|(at, key)| (locks.get(&key).map_or(at, |l| l.expires_at), key))
            .collect();
    }
}

/// How many of the next `budget` records of `records` (`(key, value)` in
/// key order, from just after the last slice) pass `live`, and the last key
/// looked at (`None` once the records are exhausted).
fn count_slice<'a, V: 'a>(
    records: impl Iterator<Item = (&'a str, &'a V)>,
    budget: usize,
    live: impl Fn(&V) -> bool,
) -> (usize, Option<String>) {
    let mut count = 0;
    let mut last = None;
    for (seen, (k, v)) in records.enumerate() {
        if seen == budget {
            return (count, last.map(str::to_string));
        }
        count += usize::from(live(v));
        last = Some(k);
    }
    (count, None)
}

#[cfg(test)]
mod slice_tests {
    use super::count_slice;
    use std::collections::BTreeMap;
    use std::ops::Bound;

    fn slice(
        map: &BTreeMap<String, u32>,
        after: Option<&str>,
        budget: usize,
        live: impl Fn(&u32) -> bool,
    ) -> (usize, Option<String>) {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let records = map
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(k, v)| (k.as_str(), v));
        count_slice(records, budget, live)
    }

    #[test]
    fn slices_cover_every_record_once() {
        let map: BTreeMap<String, u32> = (0..10).map(|i| (format!("k{i:02}"), i)).collect();
        let mut after: Option<String> = None;
        let (mut total, mut calls) = (0, 0);
        loop {
            let (n, last) = slice(&map, after.as_deref(), 3, |v| v % 2 == 0);
            total += n;
            calls += 1;
            match last {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        assert_eq!((total, calls), (5, 4));
        assert_eq!(slice(&map, None, 100, |_| true), (10, None));
        assert_eq!(slice(&BTreeMap::new(), None, 3, |_| true), (0, None));
    }
}
