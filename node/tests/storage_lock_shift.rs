//! Lock deadlines on disk are kept relative to one table-wide lock shift
//! (`store::lock_shift`, data directory format 5), which a takeover marker
//! moves instead of rewriting every live lock. What a store loads back is
//! the table it applied, deadlines included, across markers, restarts and
//! snapshot installs; and a marker leaves the stored records of the locks
//! it moved byte for byte as they were.

use std::collections::BTreeMap;
use std::path::Path;

use locker_node::core::{Command, LockTable, Op};
use locker_node::store::{self, StateMachine};
use locker_node::types::{Entry, TypeConfig};
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::RaftSnapshotBuilder;
use proptest::prelude::*;

mod common;
use common::{arb_client_op, open_store};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Applies `cmds` as entries `first..`, `per_call` entries per apply call
/// (one call's entries share one sled batch, so a call may hold several
/// markers: the shift moves more than once within a batch).
fn apply(sm: &mut StateMachine, first: u64, cmds: &[Command], per_call: usize) {
    let rt = rt();
    let entries: Vec<Entry> = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| Entry::new_normal(log_id::<TypeConfig>(1, 1, first + i as u64), c.clone()))
        .collect();
    for chunk in entries.chunks(per_call.max(1)) {
        let stream = futures::stream::iter(chunk.iter().cloned().map(|e| Ok((e, None))));
        rt.block_on(sm.apply(stream)).expect("apply");
    }
}

/// The table `dir`'s store loads, once every handle on it is dropped.
fn reloaded(dir: &Path) -> LockTable {
    let (_log, _sm, replica, _flusher) = open_store(dir).expect("reopen");
    let table = replica.read().table.clone();
    table
}

/// Client ops, sweeps, markers and ticks; markers weigh more than in the
/// core's own tests.
fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => arb_client_op(),
        1 => Just(Op::Sweep),
        3 => Just(Op::LeaderTakeover),
        1 => Just(Op::Tick),
    ]
}

/// Times that mostly advance, sometimes go back or leap (skewed leaders).
fn arb_log() -> impl Strategy<Value = Vec<Command>> {
    prop::collection::vec((arb_op(), -300i64..3_000), 1..80).prop_map(|steps| {
        let mut t: i64 = 1_000_000;
        let to_cmd = |(op, dt): (Op, i64)| {
            t = (t + dt).max(0);
            Command {
                time_ms: t as u64,
                op,
            }
        };
        steps.into_iter().map(to_cmd).collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Applied in two runs of the store with a restart between, in apply
    /// calls of any size: the table loaded back after each run equals the
    /// table the core computes from the log, deadlines included.
    #[test]
    fn the_store_loads_back_the_table_it_applied(
        log in arb_log(),
        cut in any::<prop::sample::Index>(),
        per_call in 1usize..6,
    ) {
        let cut = cut.index(log.len() + 1);
        let mut want = LockTable::new();
        for (i, c) in log.iter().enumerate() {
            want.apply(i as u64 + 1, c);
        }
        let dir = tempfile::tempdir().expect("dir");
        {
            let (_log, mut sm, _replica, _flusher) = open_store(dir.path()).expect("open");
            apply(&mut sm, 1, &log[..cut], per_call);
        }
        let mut half = LockTable::new();
        for (i, c) in log[..cut].iter().enumerate() {
            half.apply(i as u64 + 1, c);
        }
        prop_assert_eq!(reloaded(dir.path()), half);
        {
            let (_log, mut sm, replica, _flusher) = open_store(dir.path()).expect("open");
            apply(&mut sm, cut as u64 + 1, &log[cut..], per_call);
            prop_assert_eq!(&replica.read().table, &want);
        }
        prop_assert_eq!(reloaded(dir.path()), want);
    }
}

/// Acquires of `live` hour-long locks and `dead` 10 ms ones at 1,000,000,
/// then a tick at 1,001,000 (the dead ones have ended).
fn live_and_dead(live: usize, dead: usize) -> Vec<Command> {
    let mut cmds: Vec<Command> = (0..live + dead)
        .map(|i| {
            let key = format!("k{i:04}");
            Command {
                time_ms: 1_000_000,
                op: Op::Acquire {
                    owner_hash: format!("{key}@h/1.1.1"),
                    key,
                    process_hash: None,
                    trace: None,
                    ttl_ms: if i < live { 3_600_000 } else { 10 },
                },
            }
        })
        .collect();
    cmds.push(Command {
        time_ms: 1_001_000,
        op: Op::Tick,
    });
    cmds
}

fn marker(time_ms: u64) -> Command {
    Command {
        time_ms,
        op: Op::LeaderTakeover,
    }
}

/// sled without its periodic flush thread, opened once the store let go
/// of the directory's file lock (released a moment after its last handle).
fn open_sled(dir: &Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .segment_size(store::SEGMENT_BYTES)
            .flush_every_ms(None)
            .open();
        match db {
            Ok(db) => return db,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("sled: {e}"),
        }
    }
}

/// The stored lock records (key -> bytes) and the stored lock shift.
fn on_disk(dir: &Path) -> (BTreeMap<Vec<u8>, Vec<u8>>, Option<u64>) {
    let db = open_sled(dir);
    let sm = db.open_tree("state_machine").expect("tree");
    let locks = sm
        .scan_prefix(b"L")
        .map(|kv| kv.expect("record"))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    let shift = sm
        .get(b"M:lock_shift")
        .expect("get")
        .map(|b| store::record::decode::<u64>(&b).expect("shift record"));
    (locks, shift)
}

/// The marker of a table of 200 live and 3 dead locks writes the shift
/// and the 3 dead records: every live lock's stored record is untouched
/// (before the shift it rewrote all 200), and the restarted store reads
/// each deadline moved once, by the gap.
#[test]
fn a_marker_writes_the_shift_and_the_dead_records_only() {
    let dir = tempfile::tempdir().expect("dir");
    let cmds = live_and_dead(200, 3);
    {
        let (_log, mut sm, _replica, _flusher) = open_store(dir.path()).expect("open");
        apply(&mut sm, 1, &cmds, 64);
    }
    let (before, shift) = on_disk(dir.path());
    assert_eq!((before.len(), shift), (203, None));
    let want = {
        let (_log, mut sm, replica, _flusher) = open_store(dir.path()).expect("open");
        apply(&mut sm, cmds.len() as u64 + 1, &[marker(1_005_000)], 1);
        let table = replica.read().table.clone();
        table
    };
    let (after, shift) = on_disk(dir.path());
    assert_eq!(shift, Some(4_000));
    let rewritten: Vec<&[u8]> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k.as_slice())
        .collect();
    assert_eq!(rewritten, [&b"Lk0200"[..], b"Lk0201", b"Lk0202"]);
    let loaded = reloaded(dir.path());
    assert_eq!(loaded, want);
    let held = loaded.live_lock("k0000", 1_005_000).expect("live");
    assert_eq!(held.expires_at, 1_000_000 + 3_600_000 + 4_000);
    assert_eq!(
        loaded.lock_record("k0201").map(|l| l.expires_at),
        Some(1_000_010)
    );
}

/// Markers in two runs of the store: the shift read back at the second
/// start goes on from where the first left it.
#[test]
fn the_shift_survives_a_restart_and_keeps_adding_up() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cmds = live_and_dead(5, 1);
    cmds.push(marker(1_002_000));
    let mut want = LockTable::new();
    {
        let (_log, mut sm, _replica, _flusher) = open_store(dir.path()).expect("open");
        apply(&mut sm, 1, &cmds, 3);
    }
    assert_eq!(on_disk(dir.path()).1, Some(1_000));
    let more = [marker(1_010_000), marker(1_010_500), marker(1_013_000)];
    {
        let (_log, mut sm, _replica, _flusher) = open_store(dir.path()).expect("open");
        apply(&mut sm, cmds.len() as u64 + 1, &more, 2);
    }
    assert_eq!(on_disk(dir.path()).1, Some(1_000 + 8_000 + 500 + 2_500));
    cmds.extend(more);
    for (i, c) in cmds.iter().enumerate() {
        want.apply(i as u64 + 1, c);
    }
    assert_eq!(reloaded(dir.path()), want);
}

/// A snapshot installed over a store whose records are shifted replaces
/// them with records of no shift and removes the shift record; the store
/// then shifts from 0 again, in memory as on disk.
#[test]
fn a_snapshot_install_resets_the_shift_with_the_records() {
    let rt = rt();
    let src = tempfile::tempdir().expect("dir");
    let mut cmds = live_and_dead(4, 2);
    cmds.extend([marker(1_003_000), marker(1_007_000)]);
    let snapshot = {
        let (_log, mut sm, _replica, _flusher) = open_store(src.path()).expect("open");
        apply(&mut sm, 1, &cmds, 2);
        let mut builder = rt.block_on(sm.get_snapshot_builder());
        rt.block_on(builder.build_snapshot()).expect("build")
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut own = live_and_dead(3, 0);
    own.push(marker(1_002_500));
    let after = [marker(1_009_000)];
    let want = {
        let (_log, mut sm, replica, _flusher) = open_store(dir.path()).expect("open");
        apply(&mut sm, 1, &own, 8);
        rt.block_on(sm.install_snapshot(&snapshot.meta, snapshot.snapshot))
            .expect("install");
        apply(&mut sm, cmds.len() as u64 + 1, &after, 1);
        let table = replica.read().table.clone();
        table
    };
    assert_eq!(on_disk(dir.path()).1, Some(2_000));
    let mut core = LockTable::new();
    for (i, c) in cmds.iter().chain(&after).enumerate() {
        core.apply(i as u64 + 1, c);
    }
    assert_eq!(want, core);
    assert_eq!(reloaded(dir.path()), core);
}
