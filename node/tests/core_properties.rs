//! Property tests of the pure lock table: determinism, snapshots, fencing,
//! mutual exclusion and the leader-takeover rule, against a naive reference
//! model; and a simulated cluster in real time (leaders with skewed clocks,
//! leaderless gaps, idle ticks) where no lease may end before its holder's
//! own deadline, and a leader change grants no more than its gap.

use std::collections::{HashMap, HashSet};

use locker_node::core::{Change, Command, Lock, LockTable, Op, Status};
use proptest::prelude::*;

mod common;
use common::{arb_client_op, owner, KEYS};

/// Any op but a batch: the five client ops weigh as five choices, so each
/// of the eight kinds is as likely as the others.
fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => arb_client_op(),
        1 => Just(Op::Sweep),
        1 => Just(Op::LeaderTakeover),
        1 => Just(Op::Tick),
    ]
}

/// Commands with times that mostly advance, sometimes jump back (a new leader
/// whose clock is behind) or far ahead (one whose clock is ahead).
fn arb_log() -> impl Strategy<Value = Vec<Command>> {
    prop::collection::vec((arb_op(), -300i64..800), 1..120).prop_map(|steps| {
        let mut t: i64 = 1_000_000;
        steps
            .into_iter()
            .map(|(op, dt)| {
                t = (t + dt).max(0);
                Command {
                    time_ms: t as u64,
                    op,
                }
            })
            .collect()
    })
}

fn run(table: &mut LockTable, log: &[Command], first_index: u64) -> Vec<Status> {
    log.iter()
        .enumerate()
        .map(|(i, c)| table.apply(first_index + i as u64, c).0.status)
        .collect()
}

/// A naive model: the same rules written as plainly as possible.
#[derive(Default)]
struct Model {
    now: u64,
    locks: HashMap<String, Lock>,
    /// process -> (alive_until, since, ttl)
    procs: HashMap<String, (u64, u64, u64)>,
    /// Owner hashes whose run has ended: released (whatever the answer), or
    /// whose lock record went (process ended, swept, replaced).
    ended: HashSet<String>,
}

impl Model {
    fn live(&self, l: &Lock, t: u64) -> bool {
        if t >= l.expires_at {
            return false;
        }
        match &l.process_hash {
            None => true,
            Some(p) => {
                matches!(self.procs.get(p), Some(&(until, since, _)) if t < until && since <= l.acquired_at)
            }
        }
    }

    fn apply(&mut self, index: u64, c: &Command) -> Status {
        let before = self.now;
        self.now = self.now.max(c.time_ms);
        let now = self.now;
        match &c.op {
            Op::Keepalive {
                process_hash,
                ttl_ms,
                ..
            } => self.keepalive(process_hash, *ttl_ms, now),
            Op::EndProcess { process_hash } => self.end_process(process_hash, now),
            Op::Acquire {
                key,
                owner_hash,
                process_hash,
                trace,
                ttl_ms,
            } => {
                if let Some(p) = process_hash {
                    if !matches!(self.procs.get(p), Some(&(u, _, _)) if now < u) {
                        return Status::NoRunningProcess;
                    }
                }
                let new = Lock {
                    key: key.clone(),
                    owner_hash: owner_hash.clone(),
                    process_hash: process_hash.clone(),
                    trace: trace.clone(),
                    acquired_at: now,
                    extended_at: now,
                    expires_at: now + ttl_ms,
                    ttl_ms: *ttl_ms,
                    fencing_token: index,
                    token: None,
                };
                self.acquire(new, now)
            }
            Op::Extend {
                key,
                owner_hash,
                ttl_ms,
            } => match self.locks.get(key).filter(|l| self.live(l, now)).cloned() {
                None => Status::NoKey,
                Some(l) if &l.owner_hash != owner_hash => Status::SomeoneElseHoldsLock,
                Some(l) => self.prolong(l, *ttl_ms, now),
            },
            Op::Release { key, owner_hash } => self.release(key, owner_hash, now),
            Op::Sweep => self.sweep(now),
            Op::LeaderTakeover => self.leader_takeover(before, now),
            Op::Tick => Status::Success,
            // Tokens and limits are checked by their own tests; the
            // generator makes no `As`, nor batches (`core_batch.rs`).
            Op::As { .. } | Op::Batch(_) => unreachable!("the reference model has no callers"),
        }
    }

    fn keepalive(&mut self, process_hash: &str, ttl_ms: u64, now: u64) -> Status {
        let since = match self.procs.get(process_hash) {
            Some(&(until, since, _)) if now < until => since,
            _ => now,
        };
        self.procs
            .insert(process_hash.to_string(), (now + ttl_ms, since, ttl_ms));
        Status::Success
    }

    fn end_process(&mut self, process_hash: &str, now: u64) -> Status {
        let live = matches!(self.procs.get(process_hash), Some(&(u, _, _)) if now < u);
        self.procs.remove(process_hash);
        let ended = &mut self.ended;
        self.locks.retain(|_, l| {
            let keep = l.process_hash.as_deref() != Some(process_hash);
            if !keep {
                ended.insert(l.owner_hash.clone());
            }
            keep
        });
        if live {
            Status::Success
        } else {
            Status::NoKey
        }
    }

    /// An acquire whose process (if any) is alive: `new` is the lock it
    /// creates when the key is free.
    fn acquire(&mut self, new: Lock, now: u64) -> Status {
        let (key, owner_hash) = (&new.key, &new.owner_hash);
        match self.locks.get(key).filter(|l| self.live(l, now)).cloned() {
            Some(l) if &l.owner_hash != owner_hash => Status::SomeoneElseHoldsLock,
            Some(l) => self.prolong(l, new.ttl_ms, now),
            None if self.ended.contains(owner_hash)
                || self
                    .locks
                    .get(key)
                    .is_some_and(|d| &d.owner_hash == owner_hash) =>
            {
                Status::OwnerHashRetired
            }
            None => {
                if let Some(old) = self.locks.get(key) {
                    self.ended.insert(old.owner_hash.clone());
                }
                self.locks.insert(key.clone(), new);
                Status::Success
            }
        }
    }

    /// The holder's re-acquire or extend: a new ttl from now.
    fn prolong(&mut self, mut l: Lock, ttl_ms: u64, now: u64) -> Status {
        l.extended_at = now;
        l.expires_at = now + ttl_ms;
        l.ttl_ms = ttl_ms;
        self.locks.insert(l.key.clone(), l);
        Status::Success
    }

    fn release(&mut self, key: &str, owner_hash: &str, now: u64) -> Status {
        self.ended.insert(owner_hash.to_string());
        match self.locks.get(key).filter(|l| self.live(l, now)).cloned() {
            None => Status::NoKey,
            Some(l) if l.owner_hash != owner_hash => Status::SomeoneElseHoldsLock,
            Some(_) => {
                self.locks.remove(key);
                Status::Success
            }
        }
    }

    fn sweep(&mut self, now: u64) -> Status {
        let ended = &mut self.ended;
        self.locks.retain(|_, l| {
            if now >= l.expires_at {
                ended.insert(l.owner_hash.clone());
            }
            now < l.expires_at
        });
        self.procs.retain(|_, p| now < p.0);
        Status::Success
    }

    /// Judge at `before`, then shift what was live by the gap.
    fn leader_takeover(&mut self, before: u64, now: u64) -> Status {
        let gap = now - before;
        let live: Vec<String> = self
            .locks
            .values()
            .filter(|l| self.live(l, before))
            .map(|l| l.key.clone())
            .collect();
        for p in self.procs.values_mut() {
            if before < p.0 {
                p.0 += gap;
            }
        }
        for k in live {
            if let Some(l) = self.locks.get_mut(&k) {
                l.expires_at += gap;
            }
        }
        Status::Success
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_the_reference_model(log in arb_log()) {
        let mut table = LockTable::new();
        let mut model = Model::default();
        for (i, c) in log.iter().enumerate() {
            let index = i as u64 + 1;
            let (got, _) = table.apply(index, c);
            let want = model.apply(index, c);
            prop_assert_eq!(got.status, want, "entry {} {}", index, c);
            for key in KEYS {
                let a = table.live_lock(key, table.now()).cloned();
                let b = model.locks.get(key).filter(|l| model.live(l, model.now)).cloned();
                prop_assert_eq!(a, b, "live lock on {} after entry {}", key, index);
            }
        }
    }

    /// The deadline indexes answer as a scan of every record would, at any
    /// time around the log clock (before, at and past every deadline).
    #[test]
    fn deadline_indexes_answer_as_a_scan_would(log in arb_log(), probes in prop::collection::vec(0u64..200_000, 1..8)) {
        let mut table = LockTable::new();
        for (i, c) in log.iter().enumerate() {
            table.apply(i as u64 + 1, c);
            let image = table.to_image();
            for at in probes.iter().map(|d| table.now().saturating_sub(100_000) + d) {
                let expired = image.locks.iter().any(|l| l.expires_at <= at)
                    || image.processes.iter().any(|p| p.alive_until <= at);
                let retired_only = !expired && table.has_expired(at);
                prop_assert!(expired == table.has_expired(at) || retired_only, "has_expired({}) after entry {}", at, i + 1);
                let live = image.locks.iter().any(|l| table.live_lock(&l.key, at).is_some())
                    || image.processes.iter().any(|p| at < p.alive_until);
                prop_assert_eq!(live, table.has_live(at), "has_live({}) after entry {}", at, i + 1);
            }
        }
    }

    #[test]
    fn replay_is_deterministic(log in arb_log()) {
        let (mut a, mut b) = (LockTable::new(), LockTable::new());
        let ra = run(&mut a, &log, 1);
        let rb = run(&mut b, &log, 1);
        prop_assert_eq!(ra, rb);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(bincode::serialize(&a.to_image()).unwrap(), bincode::serialize(&b.to_image()).unwrap());
    }

    #[test]
    fn snapshot_plus_rest_equals_full_log(log in arb_log(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(log.len() + 1);
        let mut full = LockTable::new();
        let full_out = run(&mut full, &log, 1);

        let mut first = LockTable::new();
        let mut out = run(&mut first, &log[..cut], 1);
        let bytes = bincode::serialize(&first.to_image()).unwrap();
        let mut restored = LockTable::from_image(bincode::deserialize(&bytes).unwrap());
        out.extend(run(&mut restored, &log[cut..], cut as u64 + 1));
        prop_assert_eq!(out, full_out);
        prop_assert_eq!(restored, full);
    }

    #[test]
    fn applied_changes_rebuild_the_same_table(log in arb_log()) {
        // What storage persists (the change list) must reproduce the table,
        // lock deadlines kept as storage keeps them: relative to the
        // table-wide shift that `ShiftLocks` moves (`store::lock_shift`).
        let mut table = LockTable::new();
        let mut stored = StoredChanges::default();
        for (i, c) in log.iter().enumerate() {
            stored.apply(table.apply(i as u64 + 1, c).1);
        }
        prop_assert_eq!(stored.rebuild(table.now()), table);
    }

    #[test]
    fn fencing_and_mutual_exclusion(log in arb_log()) {
        check_fencing(LockTable::new(), &log).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn takeover_shifts_exactly_the_live_deadlines_by_the_gap(
        log in arb_log(),
        dt in prop_oneof![-300_000i64..0, 0i64..5_000, 0i64..700_000_000],
    ) {
        let mut table = LockTable::new();
        run(&mut table, &log, 1);
        let before = table.clone();
        let t0 = before.now();
        let marker = Command { time_ms: t0.saturating_add_signed(dt), op: Op::LeaderTakeover };
        table.apply(log.len() as u64 + 1, &marker);
        let gap = table.now() - t0;
        // Never more than the marker's own advance of the log time.
        prop_assert_eq!(gap, dt.max(0) as u64);
        let (old, new) = (before.to_image(), table.to_image());
        prop_assert_eq!(old.locks.len(), new.locks.len());
        for (a, b) in old.locks.iter().zip(&new.locks) {
            let live = before.live_lock(&a.key, t0) == Some(a);
            let shift = if live { gap } else { 0 };
            prop_assert_eq!(b, &Lock { expires_at: a.expires_at + shift, ..a.clone() });
            // Exactly the leases live before the marker are live after it.
            prop_assert_eq!(table.live_lock(&b.key, table.now()).is_some(), live, "{:?}", a);
        }
        prop_assert_eq!(old.processes.len(), new.processes.len());
        for (a, b) in old.processes.iter().zip(&new.processes) {
            let live = t0 < a.alive_until;
            let shift = if live { gap } else { 0 };
            prop_assert_eq!(b.alive_until, a.alive_until + shift);
            prop_assert_eq!(b.since, a.since, "the incarnation must not move");
            prop_assert_eq!(table.live_process(&b.process_hash, table.now()).is_some(), live);
        }
    }

    #[test]
    fn no_lease_ends_before_its_holders_deadline_across_leaders(steps in arb_steps()) {
        Sim::new(LockTable::new()).run(&steps).map_err(TestCaseError::fail)?;
    }
}

/// The records an apply's changes leave in storage, lock deadlines
/// relative to the shift as `store::lock_shift` keeps them.
#[derive(Default)]
struct StoredChanges {
    shift: u64,
    locks: HashMap<String, Lock>,
    procs: HashMap<String, locker_node::core::Process>,
    retired: HashMap<String, locker_node::core::Retired>,
}

impl StoredChanges {
    fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::ShiftLocks { gap } => self.shift = self.shift.wrapping_add(gap),
                Change::PutLock(l) => {
                    let at = l.expires_at.wrapping_sub(self.shift);
                    self.locks.insert(
                        l.key.clone(),
                        Lock {
                            expires_at: at,
                            ..l
                        },
                    );
                }
                Change::DeleteLock(k) => {
                    self.locks.remove(&k);
                }
                Change::PutProcess(p) => {
                    self.procs.insert(p.process_hash.clone(), p);
                }
                Change::DeleteProcess(p) => {
                    self.procs.remove(&p);
                }
                Change::PutRetired(r) => {
                    self.retired.insert(r.process_hash.clone(), r);
                }
                Change::DeleteRetired(p) => {
                    self.retired.remove(&p);
                }
            }
        }
    }

    fn rebuild(&self, now: u64) -> LockTable {
        let locks = self.locks.values().map(|l| Lock {
            expires_at: l.expires_at.wrapping_add(self.shift),
            ..l.clone()
        });
        LockTable::from_parts(
            now,
            locks,
            self.procs.values().cloned(),
            self.retired.values().cloned(),
        )
    }
}

/// A table of `live` locks (an hour long) and `dead` ones (ended before
/// the marker), all granted at 1,000,000, log time 1,001,000, and the
/// last log index.
fn live_and_dead(live: usize, dead: usize) -> (LockTable, u64) {
    let mut t = LockTable::new();
    let mut index = 0;
    for (i, ttl_ms) in (0..live + dead).map(|i| (i, if i < live { 3_600_000 } else { 10 })) {
        let key = format!("k{i:07}");
        let owner_hash = format!("{key}@h/1.1.1");
        let op = Op::Acquire {
            key,
            owner_hash,
            process_hash: None,
            trace: None,
            ttl_ms,
        };
        index += 1;
        t.apply(
            index,
            &Command {
                time_ms: 1_000_000,
                op,
            },
        );
    }
    // Log time past the dead ones' end, so the marker judges them dead.
    index += 1;
    t.apply(
        index,
        &Command {
            time_ms: 1_001_000,
            op: Op::Tick,
        },
    );
    (t, index)
}

/// The takeover marker tells storage one change for all the locks it
/// moves, whatever their number, and rewrites only those it does not
/// move (here: the dead ones), each with its deadline as it was. Before
/// the table-wide shift it wrote every live lock: 1,000,000 records in
/// one sled batch for a node with a million locks.
#[test]
fn a_marker_writes_one_change_for_every_live_lock_and_one_per_dead_lock() {
    for live in [1, 10, 10_000] {
        let (mut t, index) = live_and_dead(live, 0);
        let marker = Command {
            time_ms: 1_005_000,
            op: Op::LeaderTakeover,
        };
        let (_, changes) = t.apply(index + 1, &marker);
        assert_eq!(
            changes,
            vec![Change::ShiftLocks { gap: 4_000 }],
            "{live} live locks"
        );
        // ... and the table moved every one of them.
        assert!(t
            .lock_records_ended(1_000_000 + 3_600_000 + 3_999)
            .is_empty());
        assert_eq!(
            t.lock_records_ended(1_000_000 + 3_600_000 + 4_000).len(),
            live
        );
    }
    let (mut t, index) = live_and_dead(100, 3);
    let dead: Vec<Lock> = t
        .lock_records_ended(1_000_010)
        .into_iter()
        .cloned()
        .collect();
    let marker = Command {
        time_ms: 1_005_000,
        op: Op::LeaderTakeover,
    };
    let (_, changes) = t.apply(index + 1, &marker);
    let mut want = vec![Change::ShiftLocks { gap: 4_000 }];
    want.extend(dead.into_iter().map(Change::PutLock));
    assert_eq!(changes, want, "the dead locks rewritten as they were");
    // Nothing live: nothing moves and nothing is written, as before.
    let (mut t, index) = live_and_dead(0, 3);
    let (_, changes) = t.apply(index + 1, &marker);
    assert_eq!(changes, vec![]);
}

/// Fencing and mutual exclusion over `log` applied to `table`: a new grant
/// only when nobody else is live at that log time, with the granting index as
/// token, above every earlier token on the key and overall; a re-acquire by
/// the holder keeps its token; log time never goes back.
fn check_fencing(mut table: LockTable, log: &[Command]) -> Result<(), String> {
    let mut last_token: HashMap<String, u64> = HashMap::new();
    let mut global = 0u64;
    for (i, c) in log.iter().enumerate() {
        let index = i as u64 + 1;
        let before = table.clone();
        let (out, _) = table.apply(index, c);
        if let (
            Op::Acquire {
                key, owner_hash, ..
            },
            Status::Success,
        ) = (&c.op, out.status)
        {
            let lock = out.lock.clone().ok_or("SUCCESS without a lock")?;
            match before.live_lock(key, table.now()) {
                Some(p) if &p.owner_hash != owner_hash => {
                    return Err(format!("{key:?} granted at {index} while {p:?} was live"))
                }
                Some(p) if p.fencing_token != lock.fencing_token => {
                    return Err(format!("re-acquire changed the token: {p:?} -> {lock:?}"))
                }
                Some(_) => {}
                None => {
                    let prior = (*last_token.get(key).unwrap_or(&0)).max(global);
                    if lock.fencing_token != index || lock.fencing_token <= prior {
                        return Err(format!(
                            "grant at index {index} on {key:?} has token {} (earlier: {prior})",
                            lock.fencing_token
                        ));
                    }
                    last_token.insert(key.clone(), lock.fencing_token);
                    global = lock.fencing_token;
                }
            }
        }
        if table.now() < before.now() {
            return Err(format!("log time went back at entry {index}"));
        }
    }
    Ok(())
}

#[test]
fn a_process_that_comes_back_does_not_revive_old_locks() {
    let mut t = LockTable::new();
    let p = "h/1.2".to_string();
    let ka = |time, ttl| Command {
        time_ms: time,
        op: Op::Keepalive {
            process_hash: p.clone(),
            ttl_ms: ttl,
            info: None,
        },
    };
    t.apply(1, &ka(1000, 100));
    let acq = Command {
        time_ms: 1010,
        op: Op::Acquire {
            key: "k".into(),
            owner_hash: "k@h/1.2.0".into(),
            process_hash: Some(p.clone()),
            trace: None,
            ttl_ms: 60_000,
        },
    };
    assert_eq!(t.apply(2, &acq).0.status, Status::Success);
    // The process lapses at 1100; keep-alives resume at 1200.
    t.apply(3, &ka(1200, 100));
    assert!(t.live_lock("k", t.now()).is_none());
    let st = t.owner_status("k@h/1.2.0", t.now());
    assert_eq!(st.status, Status::NoRunningProcess);
}

#[test]
fn a_takeover_keeps_the_incarnation_rule() {
    let p = "h/1.2".to_string();
    let at = |time_ms, op| Command { time_ms, op };
    let ka = |ttl_ms| Op::Keepalive {
        process_hash: p.clone(),
        ttl_ms,
        info: None,
    };
    let acquire = Op::Acquire {
        key: "k".into(),
        owner_hash: "k@h/1.2.0".into(),
        process_hash: Some(p.clone()),
        trace: None,
        ttl_ms: 60_000,
    };
    // Live at the log time before the marker: both deadlines shift by 190.
    let mut t = LockTable::new();
    t.apply(1, &at(1000, ka(100)));
    t.apply(2, &at(1010, acquire.clone()));
    t.apply(3, &at(1200, Op::LeaderTakeover));
    assert_eq!(t.live_process(&p, 1200).map(|p| p.alive_until), Some(1290));
    assert_eq!(t.live_lock("k", 1289).map(|l| l.expires_at), Some(61_200));
    // It lapses at 1290 and comes back: a new incarnation, the lock stays dead.
    t.apply(4, &at(1400, ka(100)));
    assert!(t.live_lock("k", t.now()).is_none());

    // Lapsed before the marker: nothing shifts, nothing comes back.
    let mut t = LockTable::new();
    t.apply(1, &at(1000, ka(100)));
    t.apply(2, &at(1010, acquire));
    t.apply(3, &at(1150, Op::Tick));
    t.apply(4, &at(5000, Op::LeaderTakeover));
    assert!(t.live_process(&p, t.now()).is_none());
    t.apply(5, &at(5001, ka(100)));
    assert!(t.live_lock("k", t.now()).is_none());
    let st = t.owner_status("k@h/1.2.0", t.now());
    assert_eq!(st.status, Status::NoRunningProcess);
}

#[test]
fn changes_between_sees_ttl_and_process_deadlines() {
    let mut t = LockTable::new();
    let p = "h/1.2".to_string();
    t.apply(
        1,
        &Command {
            time_ms: 1000,
            op: Op::Keepalive {
                process_hash: p.clone(),
                ttl_ms: 500,
                info: None,
            },
        },
    );
    let acquire = |key: &str, process: Option<String>, ttl_ms| Command {
        time_ms: 1000,
        op: Op::Acquire {
            key: key.into(),
            owner_hash: format!("{key}@h/1.2.0"),
            process_hash: process,
            trace: None,
            ttl_ms,
        },
    };
    t.apply(2, &acquire("ttl", None, 300));
    t.apply(3, &acquire("proc", Some(p), 60_000));
    // "ttl" ends at 1300, "proc" with its process at 1500.
    assert!(t.key_changes_between("ttl", 1000, 1300));
    assert!(!t.key_changes_between("ttl", 1300, 9999));
    assert!(!t.key_changes_between("ttl", 1000, 1299));
    assert!(t.key_changes_between("proc", 1000, 1500));
    assert!(!t.key_changes_between("proc", 1000, 1499));
    assert!(!t.key_changes_between("absent", 0, u64::MAX));
    assert!(t.prefix_changes_between("p", 1000, 1600));
    assert!(!t.prefix_changes_between("q", 0, u64::MAX));
}

// ---------------------------------------------------------------------------
// A simulated cluster in real time.
//
// Real time is the test's own counter (ms). Each leader's clock is real time
// plus its offset (ahead or behind), started no lower than the log time it
// has applied when it is caught up, as `LeaderClock` does. Clients send a
// request at real time `sent`; the leader stamps it `delay` ms later. A
// holder's own deadline is `sent + ttl` (and its process's `sent + ttl` of the
// last keep-alive answered before the previous one ran out). Reads and writes
// judge at `max(log time, leader's clock)`, as the node does.
// ---------------------------------------------------------------------------

const SIM_KEYS: usize = 2;
const SIM_PROCESS: &str = "sim-host/1.100";
/// The node's rule: an idle leader ticks when the log lags its clock this much.
const SIM_TICK_IDLE_MS: u64 = 1_000;
/// How often the simulated leader looks (the node's loop period).
const SIM_TICK_CHECK_MS: u64 = 200;

/// One thing that happens to the simulated cluster.
#[derive(Debug, Clone)]
enum Step {
    /// Real time passes; the leader ticks when idle.
    Wait(u64),
    Acquire {
        key: usize,
        owner: u8,
        ttl: u64,
        bound: bool,
        delay: u64,
    },
    /// By the key's holder, if any.
    Extend {
        key: usize,
        ttl: u64,
        delay: u64,
    },
    /// By the key's holder, if any.
    Release {
        key: usize,
    },
    Keepalive {
        ttl: u64,
        delay: u64,
    },
    /// The leader dies; `leaderless` ms later a leader whose clock is `offset`
    /// ms off real time commits its marker. `caught_up`: it had applied the
    /// whole log when its term began (so its clock starts no lower than it).
    Failover {
        leaderless: u64,
        offset: i64,
        caught_up: bool,
    },
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    let key = 0..SIM_KEYS;
    let delay = 0u64..50;
    let lock_ttl = prop_oneof![Just(300u64), Just(2_000), Just(10_000)];
    let offset = prop_oneof![
        -20_000i64..20_000,
        Just(0),
        // A week ahead or behind: a fresh ttl would be a fresh week.
        Just(604_800_000),
        Just(-604_800_000),
    ];
    let step = prop_oneof![
        4 => (0u64..3_000).prop_map(Step::Wait),
        3 => (key.clone(), 0u8..3, lock_ttl.clone(), any::<bool>(), delay.clone()).prop_map(
            |(key, owner, ttl, bound, delay)| Step::Acquire { key, owner, ttl, bound, delay }
        ),
        1 => (key.clone(), lock_ttl, delay.clone())
            .prop_map(|(key, ttl, delay)| Step::Extend { key, ttl, delay }),
        1 => key.prop_map(|key| Step::Release { key }),
        2 => (prop_oneof![Just(1_000u64), Just(4_000)], delay)
            .prop_map(|(ttl, delay)| Step::Keepalive { ttl, delay }),
        1 => (0u64..6_000, offset, any::<bool>()).prop_map(|(leaderless, offset, caught_up)| {
            Step::Failover { leaderless, offset, caught_up }
        }),
    ];
    prop::collection::vec(step, 1..60)
}

/// What a client believes it holds on one key.
#[derive(Debug, Clone)]
struct Holder {
    owner: String,
    /// Its own deadline: send time + ttl, in real time.
    deadline: u64,
    /// For a process-bound lock: the client process's epoch it was taken in.
    epoch: Option<u64>,
    /// For a ttl-only lock while the log time tracks the leaders' clocks: the
    /// real time at which the log must end it (stamp + ttl + the real time
    /// each takeover since then came after the last entry).
    exact_end: Option<u64>,
    token: u64,
}

/// The client process: its own deadline and epoch (a new epoch when a
/// keep-alive is answered only after the previous deadline: the client then
/// counts its old locks as lost).
#[derive(Debug, Clone)]
struct ClientProcess {
    deadline: u64,
    epoch: u64,
    exact_end: Option<u64>,
}

struct Sim {
    table: LockTable,
    index: u64,
    real: u64,
    /// The leader's clock as (value at `since`, `since`), while there is one.
    leader: Option<(u64, u64)>,
    /// Real time of the last entry stamped.
    last_stamp_real: u64,
    holders: Vec<Option<Holder>>,
    process: ClientProcess,
    last_token: u64,
}

impl Sim {
    fn new(table: LockTable) -> Sim {
        let real = 1_700_000_000_000;
        let mut sim = Sim {
            table,
            index: 0,
            real,
            leader: Some((real, real)),
            last_stamp_real: real,
            holders: vec![None; SIM_KEYS],
            process: ClientProcess {
                deadline: 0,
                epoch: 0,
                exact_end: None,
            },
            last_token: 0,
        };
        sim.write(Op::LeaderTakeover);
        sim
    }

    fn key(k: usize) -> String {
        format!("sim/{k}")
    }

    fn clock_at(&self, real: u64) -> u64 {
        let (base, since) = self.leader.unwrap_or((0, real));
        base + (real - since)
    }

    /// The time reads and writes judge at, at real time `real`.
    fn judged_at(&self, real: u64) -> u64 {
        self.table.now().max(self.clock_at(real))
    }

    /// Stamps and applies `op` now; returns the outcome and whether the log
    /// time now equals the leader's clock (so real-time ends are exact).
    fn write(&mut self, op: Op) -> (locker_node::core::Outcome, bool) {
        let stamp = self.clock_at(self.real);
        self.index += 1;
        let (out, _) = self
            .table
            .apply(self.index, &Command { time_ms: stamp, op });
        self.last_stamp_real = self.real;
        (out, self.table.now() == stamp)
    }

    /// The holder's deadline as its client sees it now (0: lost).
    fn holder_deadline(&self, h: &Holder) -> u64 {
        match h.epoch {
            None => h.deadline,
            Some(e) if e == self.process.epoch => h.deadline.min(self.process.deadline),
            Some(_) => 0,
        }
    }

    /// Every promise at real time `at`, with the table as it is now.
    fn check_at(&self, at: u64) -> Result<(), String> {
        let t = self.judged_at(at);
        for (k, h) in self.holders.iter().enumerate() {
            let Some(h) = h else { continue };
            let live = self.table.live_lock(&Self::key(k), t);
            let held = live.is_some_and(|l| l.owner_hash == h.owner);
            if at < self.holder_deadline(h) && !held {
                return Err(format!(
                    "real {at}: {} ended {} ms before its holder's deadline (log {t}: {live:?})",
                    Self::key(k),
                    self.holder_deadline(h) - at
                ));
            }
            if let Some(end) = h.exact_end {
                if held != (at < end) {
                    return Err(format!(
                        "real {at}: {} live={held}, but a takeover may grant only its gap \
                         (lease end {end}, log {t}: {live:?})",
                        Self::key(k)
                    ));
                }
            }
        }
        if let Some(end) = self.process.exact_end {
            let live = self.table.live_process(SIM_PROCESS, t).is_some();
            if live != (at < end) {
                return Err(format!(
                    "real {at}: process live={live}, its end is {end} (log {t})"
                ));
            }
        }
        Ok(())
    }

    /// Checks every instant of `(self.real, until]` where a promise can change
    /// (nothing is applied in between, and liveness only ends as time grows).
    fn check_until(&self, until: u64) -> Result<(), String> {
        let mut points = vec![until];
        for h in self.holders.iter().flatten() {
            let d = self.holder_deadline(h);
            points.extend([d.saturating_sub(1)]);
            if let Some(e) = h.exact_end {
                points.extend([e.saturating_sub(1), e]);
            }
        }
        if let Some(e) = self.process.exact_end {
            points.extend([e.saturating_sub(1), e]);
        }
        for at in points {
            if self.real < at && at <= until {
                self.check_at(at)?;
            }
        }
        Ok(())
    }

    fn wait(&mut self, ms: u64) -> Result<(), String> {
        let target = self.real + ms;
        while self.real < target {
            let next = (self.real + SIM_TICK_CHECK_MS).min(target);
            self.check_until(next)?;
            self.real = next;
            if self.clock_at(self.real) >= self.table.now() + SIM_TICK_IDLE_MS {
                self.write(Op::Tick);
                self.check_at(self.real)?;
            }
        }
        Ok(())
    }

    fn failover(&mut self, leaderless: u64, offset: i64, caught_up: bool) -> Result<(), String> {
        // Nobody can ask the log anything while there is no leader.
        self.leader = None;
        self.real += leaderless;
        let floor = if caught_up { self.table.now() } else { 0 };
        let wall = self.real.saturating_add_signed(offset);
        self.leader = Some((wall.max(floor), self.real));
        let before = self.table.now();
        let last = self.last_stamp_real;
        let (_, exact) = self.write(Op::LeaderTakeover);
        // A lease live before the marker ends `real - last` later in real
        // time: the time since the last entry, whatever the clocks say.
        let shift = |end: Option<u64>| match end {
            Some(e) if exact && e > last => Some(e + (self.real - last)),
            Some(e) if exact => Some(e),
            _ => None,
        };
        for h in self.holders.iter_mut().flatten() {
            h.exact_end = shift(h.exact_end);
        }
        self.process.exact_end = shift(self.process.exact_end);
        debug_assert!(self.table.now() >= before);
        self.check_at(self.real)
    }

    fn acquire(
        &mut self,
        k: usize,
        owner: u8,
        ttl: u64,
        bound: bool,
        delay: u64,
    ) -> Result<(), String> {
        if bound && self.process.deadline <= self.real {
            return Ok(()); // the client knows its process is gone
        }
        let owner = owner_hash_of(k, owner);
        let sent = self.real.saturating_sub(delay);
        let (out, exact) = self.write(Op::Acquire {
            key: Self::key(k),
            owner_hash: owner.clone(),
            process_hash: bound.then(|| SIM_PROCESS.to_string()),
            trace: None,
            ttl_ms: ttl,
        });
        if out.status != Status::Success {
            return Ok(());
        }
        let lock = out.lock.ok_or("SUCCESS without a lock")?;
        let prior = self.holders[k].take();
        let renewal = prior
            .as_ref()
            .is_some_and(|p| p.owner == owner && p.token == lock.fencing_token);
        if let Some(p) = prior.as_ref().filter(|p| p.owner != owner) {
            if self.holder_deadline(p) > self.real {
                return Err(format!(
                    "{} granted to {owner} while {p:?} holds it",
                    Self::key(k)
                ));
            }
        }
        if !renewal {
            if lock.fencing_token <= self.last_token {
                return Err(format!(
                    "token {} after token {}",
                    lock.fencing_token, self.last_token
                ));
            }
            self.last_token = lock.fencing_token;
        }
        let epoch = match (&prior, renewal) {
            (Some(p), true) => p.epoch,
            _ => lock.process_hash.is_some().then_some(self.process.epoch),
        };
        self.holders[k] = Some(Holder {
            owner,
            deadline: sent + ttl,
            epoch,
            exact_end: (epoch.is_none() && exact).then_some(self.real + ttl),
            token: lock.fencing_token,
        });
        self.check_at(self.real)
    }

    fn extend(&mut self, k: usize, ttl: u64, delay: u64) -> Result<(), String> {
        let Some(h) = self.holders[k].clone() else {
            return Ok(());
        };
        let (out, exact) = self.write(Op::Extend {
            key: Self::key(k),
            owner_hash: h.owner.clone(),
            ttl_ms: ttl,
        });
        if self.real < self.holder_deadline(&h) && out.status != Status::Success {
            return Err(format!(
                "extend by the holder refused: {:?} {h:?}",
                out.status
            ));
        }
        if out.status == Status::Success {
            self.holders[k] = Some(Holder {
                deadline: self.real.saturating_sub(delay) + ttl,
                exact_end: (h.epoch.is_none() && exact).then_some(self.real + ttl),
                ..h
            });
        }
        self.check_at(self.real)
    }

    fn release(&mut self, k: usize) -> Result<(), String> {
        let Some(h) = self.holders[k].take() else {
            return Ok(());
        };
        let (out, _) = self.write(Op::Release {
            key: Self::key(k),
            owner_hash: h.owner.clone(),
        });
        if self.real < self.holder_deadline(&h) && out.status != Status::Success {
            return Err(format!(
                "release by the holder refused: {:?} {h:?}",
                out.status
            ));
        }
        self.check_at(self.real)
    }

    fn keepalive(&mut self, ttl: u64, delay: u64) -> Result<(), String> {
        let (_, exact) = self.write(Op::Keepalive {
            process_hash: SIM_PROCESS.to_string(),
            ttl_ms: ttl,
            info: None,
        });
        if self.real >= self.process.deadline {
            // Answered after the old deadline: the client starts afresh.
            self.process.epoch += 1;
        }
        self.process.deadline = self.real.saturating_sub(delay) + ttl;
        self.process.exact_end = exact.then_some(self.real + ttl);
        self.check_at(self.real)
    }

    fn run(mut self, steps: &[Step]) -> Result<(), String> {
        for s in steps {
            match *s {
                Step::Wait(ms) => self.wait(ms)?,
                Step::Acquire {
                    key,
                    owner,
                    ttl,
                    bound,
                    delay,
                } => self.acquire(key, owner, ttl, bound, delay)?,
                Step::Extend { key, ttl, delay } => self.extend(key, ttl, delay)?,
                Step::Release { key } => self.release(key)?,
                Step::Keepalive { ttl, delay } => self.keepalive(ttl, delay)?,
                Step::Failover {
                    leaderless,
                    offset,
                    caught_up,
                } => self.failover(leaderless, offset, caught_up)?,
            }
        }
        Ok(())
    }
}

fn owner_hash_of(k: usize, n: u8) -> String {
    format!("{}@{SIM_PROCESS}.{n}", Sim::key(k))
}

// ---------------------------------------------------------------------------
// Negative controls: each test mutation (`locker_node::mutation`) breaks the
// property meant to catch it. The fault suite picks a mutation per node
// process with LOCKER_TEST_MUTATION; here each table gets its own
// (`LockTable::with_mutation`), so one test binary covers them all. Without
// the `mutations` feature only the unmutated half runs.
// ---------------------------------------------------------------------------

/// A 10 s lease, then at once a new leader whose clock is 5 s ahead.
fn skewed_takeover() -> Vec<Step> {
    vec![
        Step::Acquire {
            key: 0,
            owner: 0,
            ttl: 10_000,
            bound: false,
            delay: 0,
        },
        Step::Failover {
            leaderless: 0,
            offset: 5_000,
            caught_up: true,
        },
        Step::Wait(12_000),
    ]
}

/// A 2 s lease, held to its end.
fn lease_to_its_end() -> Vec<Step> {
    vec![
        Step::Acquire {
            key: 0,
            owner: 0,
            ttl: 2_000,
            bound: false,
            delay: 0,
        },
        Step::Wait(3_000),
    ]
}

/// One key granted, released and granted again.
fn granted_twice() -> Vec<Command> {
    let acquire = |n: u8, time_ms| Command {
        time_ms,
        op: Op::Acquire {
            key: "a".into(),
            owner_hash: owner("a", n),
            process_hash: None,
            trace: None,
            ttl_ms: 5_000,
        },
    };
    vec![
        acquire(0, 1_000),
        Command {
            time_ms: 1_100,
            op: Op::Release {
                key: "a".into(),
                owner_hash: owner("a", 0),
            },
        },
        acquire(1, 1_200),
    ]
}

/// The scenarios pass on a table as the node makes it (no mutation unless
/// LOCKER_TEST_MUTATION is set for this very test run), so each failure
/// below is the mutation's doing.
#[test]
fn the_negative_control_scenarios_pass_unmutated() {
    assert_eq!(Sim::new(LockTable::new()).run(&skewed_takeover()), Ok(()));
    assert_eq!(Sim::new(LockTable::new()).run(&lease_to_its_end()), Ok(()));
    assert_eq!(check_fencing(LockTable::new(), &granted_twice()), Ok(()));
}

#[cfg(feature = "mutations")]
mod mutations {
    use super::*;
    use locker_node::mutation::Mutation;

    fn table(m: Mutation) -> LockTable {
        LockTable::new().with_mutation(Some(m))
    }

    #[test]
    fn no_takeover_shift_lets_a_clock_ahead_end_a_lease_early() {
        let err = Sim::new(table(Mutation::NoTakeoverShift))
            .run(&skewed_takeover())
            .expect_err("the lease checker must catch it");
        assert!(err.contains("before its holder's deadline"), "{err}");
    }

    #[test]
    fn early_lease_ends_a_lease_before_its_deadline() {
        let err = Sim::new(table(Mutation::EarlyLease))
            .run(&lease_to_its_end())
            .expect_err("the lease checker must catch it");
        assert!(err.contains("before its holder's deadline"), "{err}");
    }

    #[test]
    fn token_not_index_repeats_a_token() {
        let err = check_fencing(table(Mutation::TokenNotIndex), &granted_twice())
            .expect_err("the fencing check must catch it");
        assert!(err.contains("has token 1"), "{err}");
        // The mutated tokens are still deterministic and never from the future.
        let (mut a, mut b) = (
            table(Mutation::TokenNotIndex),
            table(Mutation::TokenNotIndex),
        );
        assert_eq!(
            run(&mut a, &granted_twice(), 1),
            run(&mut b, &granted_twice(), 1)
        );
        assert_eq!(a, b);
    }

    #[test]
    fn other_mutations_leave_the_table_alone() {
        let t = table(Mutation::AckBeforeFsync);
        assert_eq!(Sim::new(t.clone()).run(&skewed_takeover()), Ok(()));
        assert_eq!(Sim::new(t.clone()).run(&lease_to_its_end()), Ok(()));
        assert_eq!(check_fencing(t, &granted_twice()), Ok(()));
    }
}

/// Ending a process retires all its runs in one record write: storage gets
/// the final retired-runs record once per apply, not once per lock.
#[test]
fn one_apply_writes_each_retired_record_once() {
    let mut t = LockTable::new();
    let p = "h1/1.100";
    let cmd = |time_ms, op| Command { time_ms, op };
    t.apply(
        1,
        &cmd(
            1_000,
            Op::Keepalive {
                process_hash: p.into(),
                ttl_ms: 60_000,
                info: None,
            },
        ),
    );
    for (i, key) in KEYS.iter().enumerate() {
        let op = Op::Acquire {
            key: key.to_string(),
            owner_hash: format!("{key}@{p}.{i}"),
            process_hash: Some(p.into()),
            trace: None,
            ttl_ms: 60_000,
        };
        assert_eq!(
            t.apply(2 + i as u64, &cmd(1_001, op)).0.status,
            Status::Success
        );
    }
    let (_, changes) = t.apply(
        9,
        &cmd(
            1_002,
            Op::EndProcess {
                process_hash: p.into(),
            },
        ),
    );
    let puts = changes
        .iter()
        .filter(|c| matches!(c, locker_node::core::Change::PutRetired(_)))
        .count();
    assert_eq!(puts, 1, "{changes:?}");
    for (i, key) in KEYS.iter().enumerate() {
        assert!(t.is_retired(&format!("{key}@{p}.{i}")));
    }
}
