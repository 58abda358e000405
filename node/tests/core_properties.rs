//! Property tests of the pure lock table: determinism, snapshots, fencing,
//! mutual exclusion and the leader-takeover rule, against a naive reference model.

use std::collections::HashMap;

use locker_node::core::{Command, Lock, LockTable, Op, Status};
use proptest::prelude::*;

const KEYS: [&str; 3] = ["a", "b", "jobs/c"];
const PROCESSES: [&str; 2] = ["h1/1.100", "h2/2.200"];

fn owner(key: &str, n: u8) -> String {
    format!("{key}@{}.{n}", PROCESSES[(n % 2) as usize])
}

fn arb_op() -> impl Strategy<Value = Op> {
    let key = prop::sample::select(KEYS.to_vec()).prop_map(str::to_string);
    let proc_ = prop::sample::select(PROCESSES.to_vec()).prop_map(str::to_string);
    let ttl = prop_oneof![Just(100u64), Just(1_000), Just(5_000)];
    prop_oneof![
        (proc_.clone(), ttl.clone()).prop_map(|(p, t)| Op::Keepalive {
            process_hash: p,
            ttl_ms: t,
            info: None
        }),
        proc_
            .clone()
            .prop_map(|p| Op::EndProcess { process_hash: p }),
        (key.clone(), 0u8..4, any::<bool>(), ttl.clone()).prop_map(|(k, o, bound, t)| {
            let owner_hash = owner(&k, o);
            Op::Acquire {
                key: k,
                owner_hash,
                process_hash: bound.then(|| PROCESSES[(o % 2) as usize].to_string()),
                trace: None,
                ttl_ms: t,
            }
        }),
        (key.clone(), 0u8..4, ttl).prop_map(|(k, o, t)| Op::Extend {
            owner_hash: owner(&k, o),
            key: k,
            ttl_ms: t
        }),
        (key, 0u8..4).prop_map(|(k, o)| Op::Release {
            owner_hash: owner(&k, o),
            key: k
        }),
        Just(Op::Sweep),
        Just(Op::LeaderTakeover),
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
            } => {
                let since = match self.procs.get(process_hash) {
                    Some(&(until, since, _)) if now < until => since,
                    _ => now,
                };
                self.procs
                    .insert(process_hash.clone(), (now + ttl_ms, since, *ttl_ms));
                Status::Success
            }
            Op::EndProcess { process_hash } => {
                let live = matches!(self.procs.get(process_hash), Some(&(u, _, _)) if now < u);
                self.procs.remove(process_hash);
                self.locks
                    .retain(|_, l| l.process_hash.as_ref() != Some(process_hash));
                if live {
                    Status::Success
                } else {
                    Status::NoKey
                }
            }
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
                match self.locks.get(key).filter(|l| self.live(l, now)).cloned() {
                    Some(l) if &l.owner_hash != owner_hash => Status::SomeoneElseHoldsLock,
                    Some(mut l) => {
                        l.extended_at = now;
                        l.expires_at = now + ttl_ms;
                        l.ttl_ms = *ttl_ms;
                        self.locks.insert(key.clone(), l);
                        Status::Success
                    }
                    None => {
                        self.locks.insert(
                            key.clone(),
                            Lock {
                                key: key.clone(),
                                owner_hash: owner_hash.clone(),
                                process_hash: process_hash.clone(),
                                trace: trace.clone(),
                                acquired_at: now,
                                extended_at: now,
                                expires_at: now + ttl_ms,
                                ttl_ms: *ttl_ms,
                                fencing_token: index,
                            },
                        );
                        Status::Success
                    }
                }
            }
            Op::Extend {
                key,
                owner_hash,
                ttl_ms,
            } => match self.locks.get(key).filter(|l| self.live(l, now)).cloned() {
                None => Status::NoKey,
                Some(l) if &l.owner_hash != owner_hash => Status::SomeoneElseHoldsLock,
                Some(mut l) => {
                    l.extended_at = now;
                    l.expires_at = now + ttl_ms;
                    l.ttl_ms = *ttl_ms;
                    self.locks.insert(key.clone(), l);
                    Status::Success
                }
            },
            Op::Release { key, owner_hash } => {
                match self.locks.get(key).filter(|l| self.live(l, now)).cloned() {
                    None => Status::NoKey,
                    Some(l) if &l.owner_hash != owner_hash => Status::SomeoneElseHoldsLock,
                    Some(_) => {
                        self.locks.remove(key);
                        Status::Success
                    }
                }
            }
            Op::Sweep => {
                self.locks.retain(|_, l| now < l.expires_at);
                self.procs.retain(|_, p| now < p.0);
                Status::Success
            }
            Op::LeaderTakeover => {
                let live: Vec<String> = self
                    .locks
                    .values()
                    .filter(|l| self.live(l, before))
                    .map(|l| l.key.clone())
                    .collect();
                for p in self.procs.values_mut() {
                    if before < p.0 {
                        p.0 = p.0.max(now + p.2);
                    }
                }
                for k in live {
                    if let Some(l) = self.locks.get_mut(&k) {
                        l.expires_at = l.expires_at.max(now + l.ttl_ms);
                    }
                }
                Status::Success
            }
        }
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
        // What storage persists (the change list) must reproduce the table.
        let mut table = LockTable::new();
        let mut locks: HashMap<String, Lock> = HashMap::new();
        let mut procs = HashMap::new();
        for (i, c) in log.iter().enumerate() {
            for change in table.apply(i as u64 + 1, c).1 {
                match change {
                    locker_node::core::Change::PutLock(l) => { locks.insert(l.key.clone(), l); }
                    locker_node::core::Change::DeleteLock(k) => { locks.remove(&k); }
                    locker_node::core::Change::PutProcess(p) => { procs.insert(p.process_hash.clone(), p); }
                    locker_node::core::Change::DeleteProcess(p) => { procs.remove(&p); }
                }
            }
        }
        let rebuilt = LockTable::from_parts(table.now(), locks.into_values(), procs.into_values());
        prop_assert_eq!(rebuilt, table);
    }

    #[test]
    fn fencing_and_mutual_exclusion(log in arb_log()) {
        let mut table = LockTable::new();
        let mut last_token: HashMap<String, u64> = HashMap::new();
        let mut global = 0u64;
        for (i, c) in log.iter().enumerate() {
            let index = i as u64 + 1;
            let before = table.clone();
            let (out, _) = table.apply(index, c);
            if let (Op::Acquire { key, owner_hash, .. }, Status::Success) = (&c.op, out.status) {
                let lock = out.lock.clone().unwrap();
                let prior = before.live_lock(key, table.now());
                match prior {
                    // Re-acquire by the same owner keeps the token.
                    Some(p) => {
                        prop_assert_eq!(&p.owner_hash, owner_hash);
                        prop_assert_eq!(p.fencing_token, lock.fencing_token);
                    }
                    // A new grant: nobody else was live at this log time, and
                    // the token beats every earlier one, on this key and overall.
                    None => {
                        prop_assert_eq!(lock.fencing_token, index);
                        prop_assert!(lock.fencing_token > *last_token.get(key).unwrap_or(&0));
                        prop_assert!(lock.fencing_token > global);
                        last_token.insert(key.clone(), lock.fencing_token);
                        global = lock.fencing_token;
                    }
                }
            }
            prop_assert!(table.now() >= before.now(), "log time went backwards");
        }
    }

    #[test]
    fn takeover_with_a_clock_ahead_never_shortens_a_lease(log in arb_log(), ahead in 0u64..1_000_000) {
        let mut table = LockTable::new();
        run(&mut table, &log, 1);
        let before = table.now();
        let live: Vec<Lock> = KEYS.iter().filter_map(|k| table.live_lock(k, before).cloned()).collect();
        let marker = Command { time_ms: before + ahead, op: Op::LeaderTakeover };
        table.apply(log.len() as u64 + 1, &marker);
        for l in live {
            let now_lock = table.live_lock(&l.key, table.now());
            prop_assert!(now_lock.is_some(), "lease on {} ended by a takeover", l.key);
            let now_lock = now_lock.unwrap();
            prop_assert_eq!(&now_lock.owner_hash, &l.owner_hash);
            prop_assert!(now_lock.expires_at >= table.now() + l.ttl_ms);
        }
    }
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
