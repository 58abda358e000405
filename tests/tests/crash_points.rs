//! One crash-and-restart test per crash point (node built with
//! `--features locker-node/failpoints`): real 3-node clusters, the point
//! armed on one node, the traffic that reaches it, the node's abort, a
//! restart without the point, then: it opens, every acknowledged write is
//! there, and replicas agree.
//!
//! How each point is reached:
//! * most: armed at runtime on a running node, then plain writes (small
//!   `--snapshot-every` / `--keep-logs`, so snapshots and purges happen);
//! * purge and snapshot install: a follower stopped while the leader
//!   snapshots and purges past its log, restarted with `FAILPOINTS`, so it
//!   catches up by snapshot and crashes in the install or the purge after it
//!   (this used to brick the follower);
//! * truncation: an old leader with uncommitted entries rejoins a newer
//!   leader and must truncate them;
//! * vote: armed on a follower, then the leader is killed;
//! * purge on a leader purging after its own snapshot: armed at runtime on
//!   the leader (the same points as the catch-up purge, other path);
//! * the identity file: armed at runtime, reached when its high-water mark
//!   follows the flushed log (every 200 ms while writes go on);
//! * the lock shift: armed on a follower, then leadership moved to the
//!   other follower, whose takeover marker moves the hour-long locks.
//!
//! Error points (a read that fails instead of a crash) have their own test:
//! the node must exit non-zero, not linger with its Raft core stopped.

use std::time::{Duration, Instant};

use locker_tests::crash::{self, Acked};
use locker_tests::{api, http, Cluster, SECRET};

const FLAGS: &[&str] = &["--snapshot-every", "20", "--keep-logs", "5"];
const CRASH_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
enum Target {
    Leader,
    Follower,
}

fn cluster() -> (Cluster, Acked) {
    cluster_with(FLAGS)
}

fn cluster_with(flags: &[&str]) -> (Cluster, Acked) {
    let c = Cluster::start_with(3, flags);
    let mut acked = Acked::default();
    for _ in 0..3 {
        acked.write_one(&c, "before");
    }
    (c, acked)
}

fn pick(c: &Cluster, t: Target) -> u64 {
    match t {
        Target::Leader => c.leader().expect("a leader"),
        Target::Follower => c.followers()[0],
    }
}

/// Asserts node `id` died by abort at `point`.
fn assert_crashed_at(c: &mut Cluster, id: u64, point: &str, st: Option<std::process::ExitStatus>) {
    let log = c.node(id).log_text();
    let st = st.unwrap_or_else(|| panic!("node {id} never reached crash point {point}"));
    assert!(
        crash::aborted(&st),
        "node {id} ended with {st:?}, not an abort"
    );
    assert!(
        log.contains(&format!("CRASH POINT {point} reached")),
        "node {id} aborted, but not at {point}"
    );
}

/// Restarts `id` without crash points; it must open and serve, every
/// acknowledged write must be there, replicas must agree.
fn restart_and_check(c: &mut Cluster, id: u64, acked: &mut Acked) {
    let before = c.node(id).log_text().len();
    c.node_mut(id).start();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Some(st) = c.node_mut(id).exited() {
            let log = c.node(id).log_text();
            panic!(
                "node {id} did not reopen after the crash ({st:?}):\n{}",
                &log[before..]
            );
        }
        if locker_tests::get(&format!("{}/healthz", c.url(id))).code == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    crash::wait_healthy(c.node(id), Duration::from_secs(5));
    // More writes after the restart, through every node.
    c.wait_ready(Duration::from_secs(60));
    for _ in 0..3 {
        acked.write_one(c, "after");
    }
    crash::assert_acked_and_agreeing(c, acked);
}

/// Armed at runtime on one node, reached by writes.
fn runtime(point: &str, target: Target) {
    runtime_then(point, target, |_| {});
}

/// [`runtime`], then `check` on the crashed node's whole log (after its restart).
fn runtime_then(point: &str, target: Target, check: impl Fn(&str)) {
    let (mut c, mut acked) = cluster();
    let id = pick(&c, target);
    let a = crash::arm(c.node(id), point, "return");
    assert_eq!(a.code, 200, "arming {point}: {:?}", a.body);
    let deadline = Instant::now() + CRASH_WAIT;
    let st = loop {
        if let Some(st) = c.node_mut(id).exited() {
            break Some(st);
        }
        if Instant::now() > deadline {
            break None;
        }
        acked.write_one(&c, "during");
    };
    assert_crashed_at(&mut c, id, point, st);
    restart_and_check(&mut c, id, &mut acked);
    check(&c.node(id).log_text());
}

/// A follower catching up by snapshot, started with the point armed.
fn catch_up(point: &str) {
    let (mut c, mut acked) = cluster();
    let id = pick(&c, Target::Follower);
    c.kill(id);
    // Enough for several snapshots and purges past the follower's log.
    let leader = c.leader().expect("a leader");
    while acked.keys.len() < 60 {
        acked.write_one(&c, "behind");
    }
    locker_tests::eventually(Duration::from_secs(20), "the leader to purge", || {
        let b = api::cluster(&c.url(leader)).body;
        (b["purged_index"].as_u64()? > 20).then_some(())
    });
    let spec = format!("{point}=return");
    c.node_mut(id).start_with_env(&[("FAILPOINTS", &spec)]);
    let st = c.node_mut(id).wait_exit(CRASH_WAIT);
    assert_crashed_at(&mut c, id, point, st);
    restart_and_check(&mut c, id, &mut acked);
}

/// An old leader with uncommitted entries rejoins and truncates them.
fn truncate(point: &str) {
    // No snapshots: with FLAGS' small interval the new leader's idle ticks
    // could purge past the conflict, and the old leader would then catch up
    // by installing a snapshot and never truncate (seen once in CI).
    let (mut c, mut acked) = cluster_with(&["--snapshot-every", "100000"]);
    let old = c.leader().expect("a leader");
    let others = c.followers();
    for &f in &others {
        c.kill(f);
    }
    // Proposals the lone leader appends but can never commit (not acknowledged).
    let url = c.url(old);
    let pending = std::thread::spawn(move || {
        for i in 0..3 {
            let key = format!("doomed/{i}");
            crash::try_acquire(&url, &key, &crash::owner_of(&key));
        }
    });
    locker_tests::eventually(Duration::from_secs(10), "uncommitted entries", || {
        let b = api::cluster(&c.url(old)).body;
        (b["last_log_index"].as_u64()? > b["committed_index"].as_u64()?).then_some(())
    });
    c.kill(old);
    let _ = pending.join();
    for &f in &others {
        c.node_mut(f).start();
    }
    c.wait_ready(Duration::from_secs(60));
    for _ in 0..3 {
        acked.write_one(&c, "newer");
    }
    let spec = format!("{point}=return");
    c.node_mut(old).start_with_env(&[("FAILPOINTS", &spec)]);
    let st = c.node_mut(old).wait_exit(CRASH_WAIT);
    assert_crashed_at(&mut c, old, point, st);
    restart_and_check(&mut c, old, &mut acked);
}

/// Armed on a follower; killing the leader makes it vote.
fn vote(point: &str) {
    let (mut c, mut acked) = cluster();
    let leader = c.leader().expect("a leader");
    let id = pick(&c, Target::Follower);
    let a = crash::arm(c.node(id), point, "return");
    assert_eq!(a.code, 200, "arming {point}: {:?}", a.body);
    c.kill(leader);
    let st = c.node_mut(id).wait_exit(CRASH_WAIT);
    assert_crashed_at(&mut c, id, point, st);
    c.node_mut(leader).start();
    restart_and_check(&mut c, id, &mut acked);
}

/// Armed on a follower that stays one, while leadership moves to the other
/// follower: the new leader's takeover marker moves the deadline of every
/// acknowledged lock (an hour long, so live) by the time since the last
/// entry, and the armed node dies right after writing its new lock shift,
/// flushed or not. Its restart must hold every deadline moved exactly once
/// (the digest covers deadlines): the shift and the applied index are in
/// one atomic batch, so the marker is either in the state or replayed.
fn takeover(point: &str) {
    let (mut c, mut acked) = cluster();
    let followers = c.followers();
    let (target, id) = (followers[0], followers[1]);
    let a = crash::arm(c.node(id), point, "return");
    assert_eq!(a.code, 200, "arming {point}: {:?}", a.body);
    // Log time must lag the new leader's clock for the marker to move anything.
    std::thread::sleep(Duration::from_millis(100));
    let moved = http()
        .post(format!("{}/v1/cluster/leader", c.url(target)))
        .header("x-locker-cluster-secret", SECRET)
        .json(&serde_json::json!({"id": target}))
        .send()
        .expect("transfer request");
    assert!(moved.status().is_success(), "transfer: {}", moved.status());
    let st = c.node_mut(id).wait_exit(CRASH_WAIT);
    assert_crashed_at(&mut c, id, point, st);
    restart_and_check(&mut c, id, &mut acked);
}

macro_rules! crash_tests {
    ($($test:ident: $point:literal => $how:expr;)*) => {
        $(
            #[test]
            fn $test() {
                let run: &dyn Fn(&str) = &$how;
                run($point);
            }
        )*
        const TESTED: &[&str] = &[$($point),*];
    };
}

crash_tests! {
    flush_before: "store::flush::before" => |p| runtime(p, Target::Leader);
    flush_after: "store::flush::after" => |p| runtime(p, Target::Follower);
    append_after_write: "store::append::after_write" => |p| runtime(p, Target::Leader);
    vote_after_write: "store::vote::after_write" => vote;
    vote_after_flush: "store::vote::after_flush" => vote;
    committed_after_write: "store::committed::after_write" => |p| runtime(p, Target::Leader);
    truncate_after_write: "store::truncate::after_write" => truncate;
    truncate_after_flush: "store::truncate::after_flush" => truncate;
    purge_after_mark: "store::purge::after_mark" => catch_up;
    purge_after_mark_flush: "store::purge::after_mark_flush" => catch_up;
    purge_after_delete: "store::purge::after_delete" => catch_up;
    leader_purge_after_mark: "store::purge::after_mark" => |p| runtime(p, Target::Leader);
    leader_purge_after_mark_flush: "store::purge::after_mark_flush" => |p| runtime_then(p, Target::Leader, |log| {
        // The mark is on disk, the entries below it are not deleted: the
        // restart must have dropped them (the path this test is for).
        assert!(log.contains("dropping log entries a crash left behind"), "no reconcile at restart");
    });
    leader_purge_after_delete: "store::purge::after_delete" => |p| runtime(p, Target::Leader);
    apply_before_batch: "store::apply::before_batch" => |p| runtime(p, Target::Leader);
    apply_after_batch: "store::apply::after_batch" => |p| runtime(p, Target::Follower);
    apply_after_lock_shift: "store::apply::after_lock_shift" => takeover;
    snapshot_build_before_record: "store::snapshot_build::before_record" => |p| runtime(p, Target::Follower);
    snapshot_build_after_record: "store::snapshot_build::after_record" => |p| runtime(p, Target::Leader);
    snapshot_build_after_flush: "store::snapshot_build::after_flush" => |p| runtime(p, Target::Follower);
    snapshot_install_after_record: "store::snapshot_install::after_record" => catch_up;
    snapshot_install_after_state: "store::snapshot_install::after_state" => catch_up;
    snapshot_install_after_flush: "store::snapshot_install::after_flush" => catch_up;
    // Reached by the identity file's high-water mark following the writes.
    identity_after_tmp: "store::identity::after_tmp" => |p| runtime(p, Target::Leader);
    identity_after_rename: "store::identity::after_rename" => |p| runtime(p, Target::Follower);
}

/// Every crash point the node lists has a test above, and the arming route
/// refuses unknown names and malformed actions.
#[test]
fn every_crash_point_has_a_test_and_arming_is_validated() {
    let c = Cluster::start(1);
    let n = c.node(1);
    let mut listed = crash::crash_points(n);
    let mut tested: Vec<String> = TESTED.iter().map(|s| s.to_string()).collect();
    listed.sort();
    tested.sort();
    tested.dedup();
    assert_eq!(
        listed, tested,
        "crash points without a test (or tests without a point)"
    );
    assert_eq!(
        crash::error_points(n),
        vec![
            "store::read::entries".to_string(),
            "store::flush::sync".to_string()
        ],
        "error points (tested by a_failed_read_makes_the_node_exit and \
         disk_full.rs a_failed_fsync_stops_the_node_before_it_acknowledges)"
    );
    assert_eq!(crash::arm(n, "store::no::such", "return").code, 400);
    assert_eq!(crash::arm(n, "store::flush::before", "bogus(").code, 400);
    assert_eq!(crash::arm(n, "store::flush::before", "off").code, 200);
    // Without the secret: refused like every peer route.
    let a = locker_tests::get(&format!("http://{}/internal/failpoints", n.peer_addr));
    assert_eq!(a.code, 401);
}

/// Arms `point` with `action` on a follower, writes until it exits: it must
/// exit with code `code` (not an abort) and the FATAL line, and reopen
/// with every acknowledged write and agreeing replicas.
fn raft_stop_exits(point: &str, action: &str, code: i32) {
    let (mut c, mut acked) = cluster();
    let id = pick(&c, Target::Follower);
    let a = crash::arm(c.node(id), point, action);
    assert_eq!(a.code, 200, "arming: {:?}", a.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        if let Some(st) = c.node_mut(id).exited() {
            break Some(st);
        }
        if Instant::now() > deadline {
            break None;
        }
        acked.write_one(&c, "during");
    };
    let health = locker_tests::get(&format!("{}/healthz", c.url(id))).code;
    let st = st.unwrap_or_else(|| {
        panic!("node {id} still runs 30 s after {point}={action} (its /healthz answers {health})")
    });
    assert_eq!(st.code(), Some(code), "node {id} ended with {st:?}");
    let log = c.node(id).log_text();
    assert!(
        log.contains("FATAL: Raft stopped ("),
        "no clear log line on the way out"
    );
    restart_and_check(&mut c, id, &mut acked);
}

/// A read that fails stops openraft's core for good (the
/// node used to linger, Raft stopped, 503 to everything, /healthz ok). It
/// must exit non-zero at once with a clear line, and reopen cleanly.
#[test]
fn a_failed_read_makes_the_node_exit() {
    raft_stop_exits("store::read::entries", "return", 74);
}

/// A panic inside apply (a bug in the lock table, say) kills openraft's
/// state-machine worker; the core stops ("channel closed", a storage error
/// to openraft) and the node must exit too rather than linger.
#[test]
fn a_panic_in_apply_makes_the_node_exit() {
    raft_stop_exits("store::apply::before_batch", "panic", 74);
}

/// A leader replicates an entry before its own fsync, so the followers'
/// fsyncs can commit an entry the leader never wrote to disk. If the leader
/// then dies and comes back fast, openraft's default "leader restore" made
/// it leader again in the SAME term with a log one entry shorter: its next
/// entry reused the lost entry's log id (term, index), the followers took
/// the ids as matching and kept their entry, and the replicas applied
/// different commands at one index (digests differ at one applied index; a
/// committed write missing on the leader). A restarted leader must win a
/// new election in a higher term instead.
///
/// Forced here: the leader's flusher is held (`pause`), and the leader dies
/// when it records the commit of the write (`committed::after_write`), i.e.
/// after the followers' fsyncs committed it and before its own.
#[test]
fn a_leader_restarted_before_its_own_flush_never_reuses_log_ids() {
    let (mut c, mut acked) = cluster();
    let leader = c.leader().expect("a leader");
    let a = crash::arm(c.node(leader), "store::flush::before", "pause");
    assert_eq!(a.code, 200, "arming: {:?}", a.body);
    let a = crash::arm(c.node(leader), "store::committed::after_write", "return");
    assert_eq!(a.code, 200, "arming: {:?}", a.body);
    let key = "committed-by-the-followers";
    let url = c.url(leader);
    // Not answered: the leader dies first.
    let _ = crash::try_acquire(&url, key, &crash::owner_of(key));
    let st = c.node_mut(leader).wait_exit(CRASH_WAIT);
    assert_crashed_at(&mut c, leader, "store::committed::after_write", st);
    // Back before the followers' election timeout.
    restart_and_check(&mut c, leader, &mut acked);
}
