//! `Op::Batch`: several client ops in one entry are applied exactly as if
//! each were its own entry at the same index and log time (the same
//! outcomes, the same table, the same watch events in the same order), and
//! a batch no proposer may build is refused alike by every replica.

use locker_node::core::{Caller, Command, LockTable, Op, Outcome, Status};
use locker_node::watch::History;
use proptest::prelude::*;

mod common;
use common::owner;

/// Client ops only (what the proposer batches), some under a caller with a
/// lock limit and a token.
fn arb_client_op() -> impl Strategy<Value = Op> {
    (common::arb_client_op(), any::<bool>()).prop_map(|(op, wrapped)| {
        if !wrapped {
            return op;
        }
        let caller = Caller {
            token: Some("t".into()),
            max_locks: Some(2),
            ..Caller::default()
        };
        Op::As {
            caller,
            op: Box::new(op),
        }
    })
}

/// Groups of 1..6 client ops with at most one acquire each (what the
/// proposer builds), at mostly advancing times.
fn arb_groups() -> impl Strategy<Value = Vec<(u64, Vec<Op>)>> {
    let group = prop::collection::vec(arb_client_op(), 1..6).prop_map(|ops| {
        let mut seen_acquire = false;
        ops.into_iter()
            .filter(|op| !(op.is_acquire() && std::mem::replace(&mut seen_acquire, true)))
            .collect::<Vec<_>>()
    });
    prop::collection::vec((group, 0u64..700), 1..40).prop_map(|steps| {
        let mut t = 1_000_000u64;
        steps
            .into_iter()
            .map(|(ops, dt)| {
                t += dt;
                (t, ops)
            })
            .collect()
    })
}

/// `(kind, key, process)` of each event: what a watcher reads, less ids.
fn events_after(h: &History, from: u64) -> Vec<(String, Option<String>, Option<String>)> {
    let cursor = locker_proto::EventId::entry(from);
    let batch = h.after(cursor, &[String::new()], usize::MAX).expect("kept");
    batch
        .events
        .iter()
        .map(|e| {
            let e = &e.event;
            (e.kind.to_string(), e.key.clone(), e.process_hash.clone())
        })
        .collect()
}

proptest! {
    #[test]
    fn a_batch_applies_as_its_ops_one_by_one(groups in arb_groups()) {
        let (mut batched, mut single) = (LockTable::new(), LockTable::new());
        let (hb, hs) = (History::new(0), History::new(0));
        for (i, (time_ms, ops)) in groups.iter().enumerate() {
            let index = i as u64 + 1;
            let cmd = Command { time_ms: *time_ms, op: Op::Batch(ops.clone()) };
            let (outcome, changes) = hb.apply(&mut batched, index, &cmd);
            prop_assert_eq!(outcome.status, Status::Success);
            let mut one_by_one: Vec<Outcome> = Vec::new();
            let mut one_by_one_changes = Vec::new();
            for op in ops {
                let cmd = Command { time_ms: *time_ms, op: op.clone() };
                let (o, c) = hs.apply(&mut single, index, &cmd);
                one_by_one.push(o);
                one_by_one_changes.extend(c);
            }
            prop_assert_eq!(&outcome.batch, &one_by_one);
            // What storage writes, too: a replica restarted from disk must
            // hold the table the batch left in memory.
            prop_assert_eq!(&changes, &one_by_one_changes);
            prop_assert_eq!(&batched, &single);
        }
        prop_assert_eq!(events_after(&hb, 0), events_after(&hs, 0));
        batched.check_invariants(groups.len() as u64);
    }
}

/// A keep-alive of process h1 and an acquire of `a` bound to it.
fn register_and_acquire_a() -> Vec<Op> {
    vec![
        Op::Keepalive {
            process_hash: "h1/1.100".into(),
            ttl_ms: 5_000,
            info: None,
        },
        Op::Acquire {
            key: "a".into(),
            owner_hash: owner("a", 0),
            process_hash: Some("h1/1.100".into()),
            trace: None,
            ttl_ms: 5_000,
        },
    ]
}

/// The table's own apply of a batch (no watch history) matches too.
#[test]
fn the_table_alone_applies_a_batch_as_its_ops() {
    let mut ops = register_and_acquire_a();
    ops.extend([Op::Release {
        key: "a".into(),
        owner_hash: owner("a", 0),
    }]);
    let (mut batched, mut single) = (LockTable::new(), LockTable::new());
    let (outcome, changes) = batched.apply(
        7,
        &Command {
            time_ms: 1_000,
            op: Op::Batch(ops.clone()),
        },
    );
    let mut want = Vec::new();
    let mut want_changes = Vec::new();
    for op in ops {
        let (o, c) = single.apply(7, &Command { time_ms: 1_000, op });
        want.push(o);
        want_changes.extend(c);
    }
    assert_eq!(outcome.batch, want);
    assert_eq!(batched, single);
    assert_eq!(changes, want_changes);
    assert_eq!(want[1].lock.as_ref().map(|l| l.fencing_token), Some(7));
}

/// Nested batches, batches holding an op that is not a client op (bare or
/// in `As`), two acquires (they would share a fencing token), an empty one
/// and a batch inside `As` are refused whole: nothing applied, `Forbidden`,
/// no per-op outcomes, the log time moved as by any entry.
#[test]
fn a_batch_no_proposer_builds_is_refused_alike_everywhere() {
    let keepalive = Op::Keepalive {
        process_hash: "h1/1.100".into(),
        ttl_ms: 5_000,
        info: None,
    };
    let acquire = |k: &str| Op::Acquire {
        key: k.into(),
        owner_hash: owner(k, 0),
        process_hash: None,
        trace: None,
        ttl_ms: 5_000,
    };
    let as_ = |op: Op| Op::As {
        caller: Caller::default(),
        op: Box::new(op),
    };
    let refused = [
        Op::Batch(vec![]),
        Op::Batch(vec![keepalive.clone(), Op::Batch(vec![acquire("a")])]),
        Op::Batch(vec![keepalive.clone(), Op::Sweep]),
        Op::Batch(vec![Op::LeaderTakeover, keepalive.clone()]),
        Op::Batch(vec![Op::Tick]),
        Op::Batch(vec![keepalive.clone(), as_(Op::Sweep)]),
        Op::Batch(vec![acquire("a"), as_(acquire("b"))]),
        as_(Op::Batch(vec![keepalive.clone()])),
    ];
    for op in refused {
        let mut t = LockTable::new();
        let history = History::new(0);
        let cmd = Command {
            time_ms: 2_000,
            op: op.clone(),
        };
        let (outcome, changes) = history.apply(&mut t, 1, &cmd);
        assert_eq!(outcome.status, Status::Forbidden, "{op:?}");
        assert!(outcome.batch.is_empty(), "{op:?}");
        assert!(changes.is_empty(), "{op:?}");
        assert!(history.is_empty(), "{op:?} made events");
        let mut want = LockTable::new();
        want.apply(
            1,
            &Command {
                time_ms: 2_000,
                op: Op::Tick,
            },
        );
        assert_eq!(t, want, "{op:?}");
    }
}

/// The events of a batch's ops share its index and are numbered together
/// in op order: a watch resumed after any of them gets exactly the rest.
#[test]
fn a_watch_resumed_inside_a_batch_neither_skips_nor_repeats() {
    let mut ops = register_and_acquire_a();
    ops.extend([Op::Keepalive {
        process_hash: "h2/2.200".into(),
        ttl_ms: 5_000,
        info: None,
    }]);
    let mut t = LockTable::new();
    let h = History::new(0);
    let batch = Command {
        time_ms: 1_000,
        op: Op::Batch(ops),
    };
    h.apply(&mut t, 1, &batch);
    let release = Command {
        time_ms: 1_001,
        op: Op::Release {
            key: "a".into(),
            owner_hash: owner("a", 0),
        },
    };
    h.apply(&mut t, 2, &release);
    let ids = |from: &str| -> Vec<String> {
        let cursor = from.parse().expect("event id");
        h.after(cursor, &[String::new()], usize::MAX)
            .expect("kept")
            .events
            .iter()
            .map(|e| format!("{} {}", e.event.id, e.event.kind))
            .collect()
    };
    let all = ids("0");
    assert_eq!(
        all,
        [
            "1.1 process_registered",
            "1.2 acquired",
            "1.3 process_registered",
            "2 released"
        ]
    );
    for (i, from) in ["1.1", "1.2", "1.3", "1"].into_iter().enumerate() {
        let want = &all[(i + 1).min(3)..];
        assert_eq!(ids(from), want, "resumed after {from}");
    }
}
