//! The state machine adapter: feeds committed entries to the pure
//! [`LockTable`] and persists what it changed, one atomic sled batch per
//! apply call; builds and installs snapshots.

use std::io;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use futures::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::watch;

use super::crash::hit;
use super::lock_shift::LockShift;
use super::record::{decode_at, encode};
use super::snapshot_record::SnapshotRecords;
use super::{must_write, to_io, Flusher};
use crate::core::{Change, LockTable, Outcome, Process, Retired, Status, TableImage};
use crate::types::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};

const SM: &str = "state_machine";
const LOCK_PREFIX: u8 = b'L';
const PROCESS_PREFIX: u8 = b'P';
const RETIRED_PREFIX: u8 = b'R';
/// The token of the lock (`l`) or process (`p`) record of the same id, kept
/// apart so `L` and `P` records stay as they were before tokens.
const LOCK_TOKEN_PREFIX: u8 = b'l';
const PROCESS_TOKEN_PREFIX: u8 = b'p';
const META_APPLIED: &[u8] = b"M:applied";
const META_MEMBERSHIP: &[u8] = b"M:membership";
const META_NOW: &[u8] = b"M:now";
/// The table-wide shift of stored lock deadlines (`store::lock_shift`);
/// absent: 0.
const META_LOCK_SHIFT: &[u8] = b"M:lock_shift";

/// The applied state every reader sees.
#[derive(Debug, Clone, Default)]
pub struct Replica {
    /// The lock table.
    pub table: LockTable,
    /// The last entry applied to it; `None` before any.
    pub last_applied: Option<LogId>,
    /// The last membership applied.
    pub membership: StoredMembership,
}

/// The applied state shared between the state machine (the only writer) and
/// the HTTP handlers, with a signal that fires after every apply.
pub struct ReplicaCell {
    state: RwLock<Replica>,
    applied: watch::Sender<u64>,
    /// The watch stream's events, recorded at apply (`crate::watch`).
    pub events: crate::watch::History,
}

/// The replica as the node and the state machine share it.
pub type SharedReplica = Arc<ReplicaCell>;

impl ReplicaCell {
    /// Read access. Never hold it across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, Replica> {
        // A poisoned lock means a panic in apply, which already aborted
        // consistency; keep serving what is there rather than panic again.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that changes whenever the applied index does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Replica> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// openraft's state machine: applies committed entries to the lock table and
/// writes the records they change to sled, and builds and installs snapshots.
pub struct StateMachine {
    sm: sled::Tree,
    snapshots: SnapshotRecords,
    flusher: Flusher,
    replica: SharedReplica,
    /// The shift of the lock records on disk: every lock record is written
    /// and read through it (`store::lock_shift`).
    lock_shift: LockShift,
    /// Applied indexes must be contiguous (always, except under openraft's
    /// generic conformance suite, which applies synthetic entries with holes).
    contiguous: bool,
}

fn record_key(prefix: u8, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1);
    k.push(prefix);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Writes (or removes) the token record beside a lock or process record.
fn put_token(batch: &mut sled::Batch, prefix: u8, id: &str, token: Option<&str>) -> io::Result<()> {
    match token {
        Some(t) => batch.insert(record_key(prefix, id), encode(&t)?),
        None => batch.remove(record_key(prefix, id)),
    }
    Ok(())
}

/// Stages `changes` in `batch`, in order: a lock record is encoded with
/// the shift as the changes before it left it in `shift`.
fn put_changes(
    batch: &mut sled::Batch,
    changes: Vec<Change>,
    shift: &mut LockShift,
) -> io::Result<()> {
    for change in changes {
        match change {
            Change::ShiftLocks { gap } => {
                // The core sends none for a marker that moves nothing.
                assert!(gap > 0, "a lock shift of 0 ms");
                *shift = shift.moved_by(gap);
                batch.insert(META_LOCK_SHIFT, encode(&shift.get())?)
            }
            Change::PutLock(l) => {
                put_token(batch, LOCK_TOKEN_PREFIX, &l.key, l.token.as_deref())?;
                batch.insert(record_key(LOCK_PREFIX, &l.key), shift.encode(&l)?)
            }
            Change::DeleteLock(k) => {
                batch.remove(record_key(LOCK_TOKEN_PREFIX, &k));
                batch.remove(record_key(LOCK_PREFIX, &k))
            }
            Change::PutProcess(p) => {
                put_token(
                    batch,
                    PROCESS_TOKEN_PREFIX,
                    &p.process_hash,
                    p.token.as_deref(),
                )?;
                batch.insert(record_key(PROCESS_PREFIX, &p.process_hash), encode(&p)?)
            }
            Change::DeleteProcess(h) => {
                batch.remove(record_key(PROCESS_TOKEN_PREFIX, &h));
                batch.remove(record_key(PROCESS_PREFIX, &h))
            }
            Change::PutRetired(r) => {
                batch.insert(record_key(RETIRED_PREFIX, &r.process_hash), encode(&r)?)
            }
            Change::DeleteRetired(h) => batch.remove(record_key(RETIRED_PREFIX, &h)),
        }
    }
    Ok(())
}

fn put_meta(batch: &mut sled::Batch, r: &Replica) -> io::Result<()> {
    batch.insert(META_APPLIED, encode(&r.last_applied)?);
    batch.insert(META_MEMBERSHIP, encode(&r.membership)?);
    batch.insert(META_NOW, encode(&r.table.now())?);
    Ok(())
}

impl StateMachine {
    /// Loads the applied state from `db`, refusing a table that contradicts
    /// itself.
    pub fn open(db: &sled::Db, flusher: Flusher) -> io::Result<StateMachine> {
        let sm = db.open_tree(SM).map_err(to_io)?;
        let snapshots = SnapshotRecords::new(db.open_tree("snapshots").map_err(to_io)?);
        let (replica, lock_shift) = load(&sm)?;
        check_table(&replica, "loading the state machine")?;
        let applied = replica.last_applied.as_ref().map_or(0, |l| l.index);
        Ok(StateMachine {
            sm,
            snapshots,
            flusher,
            lock_shift,
            contiguous: true,
            replica: Arc::new(ReplicaCell {
                state: RwLock::new(replica),
                applied: watch::channel(applied).0,
                events: crate::watch::History::new(applied),
            }),
        })
    }

    /// The applied state, for readers.
    pub fn replica(&self) -> SharedReplica {
        self.replica.clone()
    }

    /// For openraft's conformance suite only: its synthetic entries skip
    /// indexes, which a real Raft never does. Indexes must still increase.
    pub fn allow_index_gaps_for_conformance_suite(&mut self) {
        self.contiguous = false;
    }
}

/// The table's structural invariants at the disk boundary (after loading,
/// after installing a snapshot): a violation means the bytes on disk or in
/// a snapshot are wrong, and serving them would be serving a lie.
fn check_table(r: &Replica, when: &str) -> io::Result<()> {
    let last = r.last_applied.as_ref().map_or(0, |l| l.index);
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.table.check_invariants(last)
    }));
    checked.map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("lock table invariant broken after {when} (applied index {last}): {why}"),
        )
    })
}

/// Log time only moves forward along the log (apply enforces it), so a
/// snapshot further along the log cannot be earlier in log time: that would
/// be a snapshot from another history or corrupt bytes. Refused before any
/// of it reaches the disk.
fn check_time_forward(current: &Replica, installed: &Replica) -> io::Result<()> {
    if installed.table.now() >= current.table.now() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "snapshot at {:?} has log time {} behind this replica's {} at {:?}: log time never goes back; refusing it",
            installed.last_applied,
            installed.table.now(),
            current.table.now(),
            current.last_applied
        ),
    ))
}

/// A broken invariant while running: stop the node with a clear message
/// rather than serve (or persist) a state that contradicts the log.
fn invariant_broken(msg: String) -> ! {
    tracing::error!(%msg, "storage invariant broken: stopping");
    eprintln!("locker-node: FATAL: storage invariant broken: {msg}");
    std::process::exit(70)
}

/// Every `(id, token)` record under `prefix`.
fn load_tokens(
    sm: &sled::Tree,
    prefix: u8,
) -> io::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for kv in sm.scan_prefix([prefix]) {
        let (k, v) = kv.map_err(to_io)?;
        let id = String::from_utf8_lossy(&k[1..]).into_owned();
        out.insert(id, decode_at::<String>(SM, &k, &v)?);
    }
    Ok(out)
}

fn get_meta<T: serde::de::DeserializeOwned>(sm: &sled::Tree, key: &[u8]) -> io::Result<Option<T>> {
    match sm.get(key).map_err(to_io)? {
        Some(b) => Ok(Some(decode_at(SM, key, &b)?)),
        None => Ok(None),
    }
}

/// The state machine as stored, and the shift its lock records are
/// relative to.
fn load(sm: &sled::Tree) -> io::Result<(Replica, LockShift)> {
    let shift = LockShift::new(get_meta(sm, META_LOCK_SHIFT)?.unwrap_or(0));
    let mut locks = Vec::new();
    let mut processes = Vec::new();
    let lock_tokens = load_tokens(sm, LOCK_TOKEN_PREFIX)?;
    let process_tokens = load_tokens(sm, PROCESS_TOKEN_PREFIX)?;
    for kv in sm.scan_prefix([LOCK_PREFIX]) {
        let (k, v) = kv.map_err(to_io)?;
        let mut l = shift.decode(SM, &k, &v)?;
        // The record's key is the lock's: a record under another key
        // would be read as the wrong lock.
        if k[1..] != *l.key.as_bytes() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{SM} lock record {:?} holds the lock of {:?}",
                    String::from_utf8_lossy(&k[1..]),
                    l.key
                ),
            ));
        }
        l.token = lock_tokens.get(&l.key).cloned();
        locks.push(l);
    }
    for kv in sm.scan_prefix([PROCESS_PREFIX]) {
        let (k, v) = kv.map_err(to_io)?;
        let mut p = decode_at::<Process>(SM, &k, &v)?;
        p.token = process_tokens.get(&p.process_hash).cloned();
        processes.push(p);
    }
    let mut retired = Vec::new();
    for kv in sm.scan_prefix([RETIRED_PREFIX]) {
        let (k, v) = kv.map_err(to_io)?;
        retired.push(decode_at::<Retired>(SM, &k, &v)?);
    }
    let last_applied = get_meta::<Option<LogId>>(sm, META_APPLIED)?.flatten();
    let membership: StoredMembership = get_meta(sm, META_MEMBERSHIP)?.unwrap_or_default();
    let now: u64 = get_meta(sm, META_NOW)?.unwrap_or(0);
    let replica = Replica {
        table: LockTable::from_parts(now, locks, processes, retired),
        last_applied,
        membership,
    };
    Ok((replica, shift))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let r = self.replica.read();
        Ok((r.last_applied, r.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        // Collect first: the table lock must not be held across an await.
        let entries: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let mut batch = sled::Batch::default();
        let mut replies = Vec::with_capacity(entries.len());
        let shift_before = self.lock_shift;
        let applied_index = {
            let mut r = self.replica.write();
            let time_before = r.table.now();
            for (entry, responder) in entries {
                let index = entry.log_id.index;
                // Applied indexes are contiguous: a hole or a replay would
                // make replicas diverge silently.
                if let Some(prev) = &r.last_applied {
                    let next = prev.index + 1;
                    if index < next || (self.contiguous && index != next) {
                        invariant_broken(format!(
                            "apply of entry {} right after {prev}",
                            entry.log_id
                        ));
                    }
                }
                let outcome = match entry.payload {
                    EntryPayload::Blank => Outcome::status_only(Status::Success),
                    EntryPayload::Normal(cmd) => {
                        let events = &self.replica.events;
                        let (outcome, changes) = events.apply(&mut r.table, index, &cmd);
                        put_changes(&mut batch, changes, &mut self.lock_shift)?;
                        outcome
                    }
                    EntryPayload::Membership(m) => {
                        r.membership = StoredMembership::new(Some(entry.log_id), m);
                        Outcome::status_only(Status::Success)
                    }
                };
                r.last_applied = Some(entry.log_id);
                if let Some(responder) = responder {
                    replies.push((responder, outcome));
                }
            }
            if r.table.now() < time_before {
                invariant_broken(format!(
                    "log time went back from {time_before} to {} at {:?}",
                    r.table.now(),
                    r.last_applied
                ));
            }
            put_meta(&mut batch, &r)?;
            hit("store::apply::before_batch");
            // Under the lock so a reader never sees memory and disk disagree
            // on order. One atomic batch: a crash keeps all of it or none,
            // and the log (flushed before) can replay it.
            must_write("persist the state machine", self.sm.apply_batch(batch));
            hit("store::apply::after_batch");
            if self.lock_shift != shift_before {
                // A marker's shift and its rewritten records are written,
                // maybe not yet durable: a restart must not shift twice.
                hit("store::apply::after_lock_shift");
            }
            r.last_applied.as_ref().map_or(0, |l| l.index)
        };
        self.replica.applied.send_replace(applied_index);
        for (responder, outcome) in replies {
            responder.send(outcome);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            replica: self.replica.clone(),
            snapshots: self.snapshots.clone(),
            flusher: self.flusher.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        // A snapshot of a newer format is refused here, before any of it is used.
        let image: TableImage = super::format::decode_snapshot(&snapshot)?;
        let table = LockTable::from_image(image);
        let installed = Replica {
            table,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        // Refuse a snapshot that breaks the table's invariants before any
        // of it reaches the disk.
        check_table(&installed, "installing a snapshot")?;
        check_time_forward(&self.replica.read(), &installed)?;
        // Replace the whole state-machine tree in one atomic batch.
        let mut batch = sled::Batch::default();
        for k in self.sm.iter().keys() {
            batch.remove(k.map_err(to_io)?);
        }
        let image = installed.table.to_image();
        // The removal above took the shift record with it: the records are
        // written relative to no shift.
        let shift = LockShift::default();
        for l in &image.locks {
            batch.insert(record_key(LOCK_PREFIX, &l.key), shift.encode(l)?);
        }
        for p in &image.processes {
            batch.insert(record_key(PROCESS_PREFIX, &p.process_hash), encode(p)?);
        }
        for r in &image.retired {
            batch.insert(record_key(RETIRED_PREFIX, &r.process_hash), encode(r)?);
        }
        for (key, token) in &image.lock_tokens {
            batch.insert(record_key(LOCK_TOKEN_PREFIX, key), encode(token)?);
        }
        for (hash, token) in &image.process_tokens {
            batch.insert(record_key(PROCESS_TOKEN_PREFIX, hash), encode(token)?);
        }
        put_meta(&mut batch, &installed)?;
        {
            // Under the write lock: a reader never sees the new record with
            // the old state (a build racing this install stores nothing
            // older than the record: `put_unless_newer`).
            let mut r = self.replica.write();
            // The snapshot record first: if a crash keeps only it, start-up
            // sees a snapshot newer than the state and installs it again
            // (openraft's restore); the other order could leave a state
            // with no snapshot record to serve or purge against.
            self.snapshots.put(meta, &snapshot)?;
            hit("store::snapshot_install::after_record");
            must_write("install the snapshot state", self.sm.apply_batch(batch));
            hit("store::snapshot_install::after_state");
            self.lock_shift = shift;
            *r = installed;
            let at = meta.last_log_id.as_ref().map_or(0, |l| l.index);
            self.replica.events.reset(at);
        }
        self.flusher.flush().await?;
        hit("store::snapshot_install::after_flush");
        let applied = meta.last_log_id.as_ref().map_or(0, |l| l.index);
        self.replica.applied.send_replace(applied);
        tracing::info!(last_log_id = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .snapshots
            .get()?
            .map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

pub struct SnapshotBuilder {
    replica: SharedReplica,
    snapshots: SnapshotRecords,
    flusher: Flusher,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // Only the copy of the table holds the lock: applies (and the
        // readers queued behind them) wait for that, not for the encoding
        // and the storing.
        let (meta, image) = {
            let r = self.replica.read();
            let meta = SnapshotMeta {
                last_log_id: r.last_applied,
                last_membership: r.membership.clone(),
            };
            (meta, r.table.to_image())
        };
        let data = super::format::encode_snapshot(&image)?;
        drop(image);
        hit("store::snapshot_build::before_record");
        // An install of a newer snapshot since the copy is never overwritten.
        if !self.snapshots.put_unless_newer(&meta, &data)? {
            tracing::info!(last_log_id = ?meta.last_log_id, "a newer snapshot is stored: not replacing it");
        }
        hit("store::snapshot_build::after_record");
        // Durable before openraft may purge the log entries it covers; this
        // flush also persists the state-machine records applied so far.
        self.flusher.flush().await?;
        hit("store::snapshot_build::after_flush");
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}
