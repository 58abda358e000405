//! From one applied command to its watch events: what the records the
//! command could touch were before ([`Before::capture`]) and the core's
//! [`Change`]s after, classified by the command. Pure, like the core: every
//! replica derives the same events from the same log.
//!
//! Each end of a lock is reported once. A lock dies by time (its TTL, or its
//! process's keep-alives) without an entry; the log records it later, and
//! that entry reports it: a sweep (`expired`, or `process_expired` with its
//! locks `freed`), a keep-alive that starts a new incarnation of its process
//! (`process_expired`, `freed`), or another owner's grant of the key
//! (`taken_over`). A lock whose process's end was already reported is not
//! reported again when its record is finally removed.

use std::collections::BTreeMap;

use locker_proto::{EndReason, EventId, WatchCause, WatchEvent, WatchKind, WatchProcess};

use crate::api::wire_lock;
#[cfg(test)]
use crate::core::Command;
use crate::core::{Change, Lock, LockTable, Op, Process};

/// A process record and the lock records bound to it.
type ProcessBefore = (Option<Process>, Vec<Lock>);

/// The records a command may change, as they were before it was applied.
#[derive(Debug, Default)]
pub struct Before {
    /// The log time before the entry.
    now: u64,
    /// Lock records by key (`None`: no record).
    locks: BTreeMap<String, Option<Lock>>,
    /// Process records (and their locks) by hash.
    processes: BTreeMap<String, ProcessBefore>,
}

impl Before {
    /// Reads what `op`, stamped `time_ms`, may change from `table`, before
    /// it is applied (an op of an [`Op::Batch`] is captured on its own,
    /// right before its own apply).
    pub fn capture(table: &LockTable, time_ms: u64, op: &Op) -> Before {
        let mut b = Before {
            now: table.now(),
            ..Before::default()
        };
        match bare(op) {
            Op::Acquire { key, .. } | Op::Extend { key, .. } | Op::Release { key, .. } => {
                b.add_lock(table, key, table.lock_record(key).cloned());
            }
            Op::Keepalive { process_hash, .. } | Op::EndProcess { process_hash } => {
                b.add_process(table, process_hash);
            }
            Op::Sweep => {
                let at = b.now.max(time_ms);
                for l in table.lock_records_ended(at) {
                    b.add_lock(table, &l.key, Some(l.clone()));
                }
                for p in table.process_records_ended(at) {
                    b.add_process(table, &p.process_hash);
                }
            }
            Op::LeaderTakeover | Op::Tick | Op::As { .. } | Op::Batch(_) => {}
        }
        b
    }

    fn add_lock(&mut self, table: &LockTable, key: &str, lock: Option<Lock>) {
        if let Some(p) = lock.as_ref().and_then(|l| l.process_hash.as_deref()) {
            self.add_process(table, p);
        }
        self.locks.insert(key.to_string(), lock);
    }

    fn add_process(&mut self, table: &LockTable, hash: &str) {
        if self.processes.contains_key(hash) {
            return;
        }
        let record = table.process_record(hash).cloned();
        let locks = table.locks_of(hash).into_iter().cloned().collect();
        self.processes.insert(hash.to_string(), (record, locks));
    }

    fn lock(&self, key: &str) -> Option<&Lock> {
        self.locks.get(key).and_then(Option::as_ref)
    }

    fn process(&self, hash: &str) -> Option<&Process> {
        self.processes.get(hash).and_then(|(p, _)| p.as_ref())
    }

    /// Whether this lock's end was already reported: its process's record
    /// is gone, or a later incarnation of it began (both reported their
    /// locks as `freed`).
    fn reported(&self, lock: &Lock) -> bool {
        lock.process_hash
            .as_deref()
            .is_some_and(|p| self.process(p).is_none_or(|p| p.since > lock.acquired_at))
    }

    /// Why a lock that is no longer live ended, judged at `now`.
    fn why_dead(&self, lock: &Lock, now: u64) -> EndReason {
        if lock.expires_at <= now {
            EndReason::Ttl
        } else {
            EndReason::ProcessExpired
        }
    }
}

/// One event before its id is known.
struct Draft {
    kind: WatchKind,
    reason: Option<EndReason>,
    key: Option<String>,
    lock: Option<Lock>,
    previous: Option<Lock>,
    process_hash: Option<String>,
    process: Option<WatchProcess>,
    keys: Option<Vec<String>>,
    gap_ms: Option<u64>,
}

impl Draft {
    fn lock(kind: WatchKind, key: &str, lock: Option<&Lock>, previous: Option<&Lock>) -> Draft {
        Draft {
            kind,
            reason: None,
            key: Some(key.to_string()),
            lock: lock.cloned(),
            previous: previous.cloned(),
            process_hash: previous.or(lock).and_then(|l| l.process_hash.clone()),
            process: None,
            keys: None,
            gap_ms: None,
        }
    }

    fn because(mut self, reason: EndReason) -> Draft {
        self.reason = Some(reason);
        self
    }

    fn process(kind: WatchKind, hash: &str, record: Option<&Process>, keys: &[Lock]) -> Draft {
        Draft {
            kind,
            reason: None,
            key: None,
            lock: None,
            previous: None,
            process_hash: Some(hash.to_string()),
            process: record.map(wire_process),
            keys: Some(keys.iter().map(|l| l.key.clone()).collect()),
            gap_ms: None,
        }
    }
}

fn wire_process(p: &Process) -> WatchProcess {
    WatchProcess {
        process_hash: p.process_hash.clone(),
        ttl_ms: p.ttl_ms,
        alive_until: p.alive_until,
        since: p.since,
        info: p.info.as_deref().and_then(|t| serde_json::from_str(t).ok()),
    }
}

/// The events of `op` of the entry at `index`, applied to `after` with
/// `changes`, numbered as the entry's only op ([`number`] renumbers the
/// events of a batch's ops together).
pub fn events(
    before: &Before,
    after: &LockTable,
    index: u64,
    op: &Op,
    changes: &[Change],
) -> Vec<WatchEvent> {
    let op = bare(op);
    let cause = cause_of(op);
    let drafts = match (op, cause) {
        (_, None) => Vec::new(),
        (Op::LeaderTakeover, _) => shifted(before, after, changes),
        (Op::Keepalive { process_hash, .. }, _) => keepalive(before, after, process_hash),
        (Op::EndProcess { process_hash }, _) => end_process(before, process_hash, changes),
        (Op::Sweep, _) => sweep(before, after.now(), changes),
        (op, _) => lock_ops(
            before,
            after.now(),
            changes,
            matches!(op, Op::Extend { .. }),
        ),
    };
    let Some(cause) = cause else {
        return Vec::new();
    };
    let mut out: Vec<WatchEvent> = drafts
        .into_iter()
        .map(|d| WatchEvent {
            id: EventId::entry(index),
            index,
            time_ms: after.now(),
            kind: d.kind,
            cause,
            reason: d.reason,
            key: d.key,
            lock: d.lock.map(wire_lock),
            previous: d.previous.map(wire_lock),
            process_hash: d.process_hash,
            process: d.process,
            keys: d.keys,
            gap_ms: d.gap_ms,
        })
        .collect();
    number(&mut out, index);
    out
}

/// Numbers the events of the entry at `index`, in order: a lone event is
/// the entry itself (`<index>`), several are `<index>.1`, `<index>.2`, ...
/// Several ops of one [`Op::Batch`] share the entry, so their events are
/// numbered together, in op order: a watch resumed after any of them gets
/// exactly the ones after it.
pub fn number(events: &mut [WatchEvent], index: u64) {
    let n = events.len();
    for (i, e) in events.iter_mut().enumerate() {
        e.id = if n == 1 {
            EventId::entry(index)
        } else {
            EventId::sub_event(index, u32::try_from(i + 1).unwrap_or(u32::MAX - 1))
        };
    }
}

fn cause_of(op: &Op) -> Option<WatchCause> {
    Some(match op {
        Op::Acquire { .. } => WatchCause::Acquire,
        Op::Extend { .. } => WatchCause::Extend,
        Op::Release { .. } => WatchCause::Release,
        Op::Keepalive { .. } => WatchCause::Keepalive,
        Op::EndProcess { .. } => WatchCause::EndProcess,
        Op::Sweep => WatchCause::Sweep,
        Op::LeaderTakeover => WatchCause::LeaderTakeover,
        Op::Tick | Op::As { .. } | Op::Batch(_) => return None,
    })
}

/// The operation itself, out of any [`Op::As`] wrapping.
fn bare(mut op: &Op) -> &Op {
    while let Op::As { op: inner, .. } = op {
        op = inner;
    }
    op
}

/// Acquire, extend and release: at most one lock record changes.
fn lock_ops(before: &Before, now: u64, changes: &[Change], extend: bool) -> Vec<Draft> {
    let mut out = Vec::new();
    for c in changes {
        match c {
            Change::PutLock(l) => {
                let old = before.lock(&l.key);
                let d = match old {
                    // The owner's own live lock (the core refuses a dead one).
                    Some(o) if o.owner_hash == l.owner_hash => {
                        let kind = if extend {
                            WatchKind::Extended
                        } else {
                            WatchKind::Reacquired
                        };
                        Draft::lock(kind, &l.key, Some(l), None)
                    }
                    Some(o) if !before.reported(o) => {
                        Draft::lock(WatchKind::TakenOver, &l.key, Some(l), Some(o))
                            .because(before.why_dead(o, now))
                    }
                    _ => Draft::lock(WatchKind::Acquired, &l.key, Some(l), None),
                };
                out.push(d);
            }
            Change::DeleteLock(k) => {
                out.push(Draft::lock(WatchKind::Released, k, None, before.lock(k)));
            }
            _ => {}
        }
    }
    out
}

/// A keep-alive: a refresh, or a new incarnation (ending an unreported
/// dead one first).
fn keepalive(before: &Before, after: &LockTable, hash: &str) -> Vec<Draft> {
    let (old, old_locks) = before.processes.get(hash).cloned().unwrap_or_default();
    let new = after.process_record(hash);
    let keys: Vec<Lock> = after.locks_of(hash).into_iter().cloned().collect();
    let mut out = Vec::new();
    match (&old, new) {
        (Some(o), Some(n)) if o.since == n.since => {
            out.push(Draft::process(
                WatchKind::ProcessKeptAlive,
                hash,
                Some(n),
                &keys,
            ));
        }
        _ => {
            if let Some(o) = &old {
                out.push(
                    Draft::process(WatchKind::ProcessExpired, hash, None, &old_locks)
                        .because(EndReason::ProcessExpired),
                );
                out.extend(freed(before, o, &old_locks, EndReason::ProcessExpired));
            }
            out.push(Draft::process(
                WatchKind::ProcessRegistered,
                hash,
                new,
                &keys,
            ));
        }
    }
    out
}

/// The locks of an incarnation that ended, not reported before: `freed`.
fn freed(before: &Before, p: &Process, locks: &[Lock], reason: EndReason) -> Vec<Draft> {
    locks
        .iter()
        .filter(|l| l.acquired_at >= p.since && !before.reported(l))
        .map(|l| Draft::lock(WatchKind::Freed, &l.key, None, Some(l)).because(reason))
        .collect()
}

fn end_process(before: &Before, hash: &str, changes: &[Change]) -> Vec<Draft> {
    let Some((Some(p), locks)) = before.processes.get(hash) else {
        return Vec::new();
    };
    if !changes
        .iter()
        .any(|c| matches!(c, Change::DeleteProcess(h) if h == hash))
    {
        return Vec::new();
    }
    let mut out =
        vec![Draft::process(WatchKind::ProcessEnded, hash, None, locks)
            .because(EndReason::ProcessEnded)];
    out.extend(freed(before, p, locks, EndReason::ProcessEnded));
    out
}

fn sweep(before: &Before, now: u64, changes: &[Change]) -> Vec<Draft> {
    let mut out = Vec::new();
    let mut deleted = std::collections::BTreeSet::new();
    for c in changes {
        match c {
            Change::DeleteLock(k) => {
                deleted.insert(k.as_str());
                if let Some(old) = before.lock(k).filter(|l| !before.reported(l)) {
                    out.push(
                        Draft::lock(WatchKind::Expired, k, None, Some(old))
                            .because(before.why_dead(old, now)),
                    );
                }
            }
            Change::DeleteProcess(h) => {
                let Some((Some(p), locks)) = before.processes.get(h) else {
                    continue;
                };
                let left: Vec<Lock> = locks
                    .iter()
                    .filter(|l| !deleted.contains(l.key.as_str()))
                    .cloned()
                    .collect();
                out.push(
                    Draft::process(WatchKind::ProcessExpired, h, None, &left)
                        .because(EndReason::ProcessExpired),
                );
                out.extend(freed(before, p, &left, EndReason::ProcessExpired));
            }
            _ => {}
        }
    }
    out
}

/// A takeover marker that moved deadlines: one event, whatever it moved.
/// It moved some when it shifted the locks (one [`Change::ShiftLocks`],
/// however many locks) or a process; a `PutLock` of a marker only ever
/// follows a `ShiftLocks` (a record storage must not move).
fn shifted(before: &Before, after: &LockTable, changes: &[Change]) -> Vec<Draft> {
    let moved = changes
        .iter()
        .any(|c| matches!(c, Change::ShiftLocks { .. } | Change::PutProcess(_)));
    if !moved {
        return Vec::new();
    }
    vec![Draft {
        kind: WatchKind::DeadlinesShifted,
        reason: None,
        key: None,
        lock: None,
        previous: None,
        process_hash: None,
        process: None,
        keys: None,
        gap_ms: Some(after.now().saturating_sub(before.now)),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut LockTable, index: u64, time_ms: u64, op: Op) -> Vec<String> {
        let cmd = Command { time_ms, op };
        let before = Before::capture(t, time_ms, &cmd.op);
        let (_, changes) = t.apply(index, &cmd);
        events(&before, t, index, &cmd.op, &changes)
            .into_iter()
            .map(|e| format!("{} {}", e.id, e.kind))
            .collect()
    }

    fn keepalive(ttl_ms: u64) -> Op {
        Op::Keepalive {
            process_hash: "h/1.2".into(),
            ttl_ms,
            info: None,
        }
    }

    #[test]
    fn a_lapsed_process_lock_is_reported_once_whatever_records_it() {
        let mut t = LockTable::new();
        assert_eq!(
            run(&mut t, 1, 1000, keepalive(1000)),
            ["1 process_registered"]
        );
        let acquire = Op::Acquire {
            key: "k".into(),
            owner_hash: "k@h/1.2.1".into(),
            process_hash: Some("h/1.2".into()),
            trace: None,
            ttl_ms: 10_000,
        };
        assert_eq!(run(&mut t, 2, 1100, acquire), ["2 acquired"]);
        // The process lapsed at 2000; a keep-alive at 3000 starts a new
        // incarnation: the old one ends, and its lock with it.
        assert_eq!(
            run(&mut t, 3, 3000, keepalive(60_000)),
            ["3.1 process_expired", "3.2 freed", "3.3 process_registered"]
        );
        // The dead record is swept once its own TTL ends: already reported.
        assert_eq!(run(&mut t, 4, 20_000, Op::Sweep), Vec::<String>::new());
        assert_eq!(run(&mut t, 5, 20_001, Op::Tick), Vec::<String>::new());
    }

    #[test]
    fn a_sweep_reports_expiry_then_the_process_and_its_other_locks() {
        let mut t = LockTable::new();
        run(&mut t, 1, 1000, keepalive(1000));
        for (i, (key, ttl)) in [("a", 500u64), ("b", 60_000)].into_iter().enumerate() {
            let op = Op::Acquire {
                key: key.into(),
                owner_hash: format!("{key}@h/1.2.{i}"),
                process_hash: Some("h/1.2".into()),
                trace: None,
                ttl_ms: ttl,
            };
            run(&mut t, 2 + i as u64, 1000, op);
        }
        assert_eq!(
            run(&mut t, 4, 5000, Op::Sweep),
            ["4.1 expired", "4.2 process_expired", "4.3 freed"]
        );
        // b's record lives on until its TTL: its removal says nothing new.
        assert_eq!(run(&mut t, 5, 70_000, Op::Sweep), Vec::<String>::new());
    }

    fn acquire(key: &str, ttl_ms: u64) -> Op {
        Op::Acquire {
            key: key.into(),
            owner_hash: format!("{key}@g/1.1.1"),
            process_hash: None,
            trace: None,
            ttl_ms,
        }
    }

    /// One `deadlines_shifted` for a marker that moves anything (locks,
    /// now told to storage as one `ShiftLocks`, or a process), none for
    /// one that moves nothing, whatever dead records it rewrites.
    #[test]
    fn a_marker_reports_one_shift_when_it_moves_anything() {
        let mut t = LockTable::new();
        run(&mut t, 1, 1000, acquire("dead", 10));
        run(&mut t, 2, 1000, acquire("live", 60_000));
        assert_eq!(
            run(&mut t, 3, 2000, Op::LeaderTakeover),
            ["3 deadlines_shifted"]
        );
        // Only the dead lock and a dead process left: nothing moves.
        run(
            &mut t,
            4,
            2000,
            Op::Release {
                key: "live".into(),
                owner_hash: "live@g/1.1.1".into(),
            },
        );
        run(&mut t, 5, 2000, keepalive(10));
        run(&mut t, 6, 2500, Op::Tick);
        assert_eq!(
            run(&mut t, 7, 3000, Op::LeaderTakeover),
            Vec::<String>::new()
        );
        // A live process alone moves.
        run(&mut t, 8, 3000, keepalive(60_000));
        assert_eq!(
            run(&mut t, 9, 4000, Op::LeaderTakeover),
            ["9 deadlines_shifted"]
        );
    }
}
