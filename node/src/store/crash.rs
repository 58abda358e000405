//! Crash points: named places between durable steps where a test can make
//! the process die at once (`abort`, no unwinding, no flush), as a power cut
//! or `kill -9` would at the worst moment.
//!
//! Built with the `failpoints` cargo feature only (tests and the fault suite);
//! without it [`hit`] is an empty inline function. Armed with the `fail`
//! crate's action syntax, either at start (`FAILPOINTS=name=action;...`, read
//! by [`setup`]) or at runtime on the peer port (`PUT /internal/failpoints/{name}`).
//! Any action that "returns" (`return`, `1*off->return`, `20%return`) crashes.

/// Every crash point, in one place: the peer route lists and accepts exactly
/// these names, and the crash tests run one test per name.
pub const CRASH_POINTS: &[&str] = &[
    // The flusher thread, around every `Db::flush`.
    "store::flush::before",
    "store::flush::after",
    // Log appends: records written, flush not yet asked for.
    "store::append::after_write",
    // Vote.
    "store::vote::after_write",
    "store::vote::after_flush",
    // Commit index (never flushed on its own).
    "store::committed::after_write",
    // truncate_after: deletions written, then flushed.
    "store::truncate::after_write",
    "store::truncate::after_flush",
    // purge: mark written, mark flushed, entries deleted.
    "store::purge::after_mark",
    "store::purge::after_mark_flush",
    "store::purge::after_delete",
    // The state-machine batch of one apply call.
    "store::apply::before_batch",
    "store::apply::after_batch",
    // ... of an apply call whose takeover marker moved the lock shift
    // (reached after `after_batch`, only then).
    "store::apply::after_lock_shift",
    // Snapshot build: record written, then flushed.
    "store::snapshot_build::before_record",
    "store::snapshot_build::after_record",
    "store::snapshot_build::after_flush",
    // Snapshot install: record, state, flush.
    "store::snapshot_install::after_record",
    "store::snapshot_install::after_state",
    "store::snapshot_install::after_flush",
    // The identity file's replacement: the new file written and fsynced
    // under its temporary name; renamed, the directory not yet fsynced.
    "store::identity::after_tmp",
    "store::identity::after_rename",
];

/// Error points: named disk operations that, when armed, fail with an IO
/// error instead of crashing (a failing disk read, a corrupt page, an fsync
/// the disk refuses). The node must then exit, not linger (see
/// `store::watchdog` and `store::disk_failed`). Listed apart so the crash
/// tests stay one per crash point.
pub const ERROR_POINTS: &[&str] = &[
    // Every read of log entries (replication, apply, re-apply at start).
    "store::read::entries",
    // The flusher's fdatasync of sled's data file, after `Db::flush`.
    "store::flush::sync",
];

/// Dies here if the crash point `name` is armed.
#[cfg(feature = "failpoints")]
#[inline]
pub fn hit(name: &'static str) {
    debug_assert!(CRASH_POINTS.contains(&name), "unlisted crash point {name}");
    if fail::eval(name, |_| ()).is_some() {
        // stderr directly: the tracing writer may buffer, and abort flushes nothing.
        eprintln!("locker-node: CRASH POINT {name} reached: aborting");
        std::process::abort();
    }
}

/// Crash points are compiled out without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}

/// Fails with an IO error here if the error point `name` is armed.
#[cfg(feature = "failpoints")]
#[inline]
pub fn io_error(name: &'static str) -> std::io::Result<()> {
    debug_assert!(ERROR_POINTS.contains(&name), "unlisted error point {name}");
    match fail::eval(name, |_| ()) {
        Some(()) => Err(std::io::Error::other(format!("error point {name} armed"))),
        None => Ok(()),
    }
}

/// Error points are compiled out without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn io_error(_name: &'static str) -> std::io::Result<()> {
    Ok(())
}

/// Fault points: named places outside the store where an armed point makes
/// the node misbehave the way a network fault would, without crashing it.
/// Listed apart (neither the crash tests nor the `crash-point` nemesis arm
/// them). Each is tested where it is used.
pub const FAULT_POINTS: &[&str] = &[
    // A follower's forward to the leader: the leader answered (the write
    // was applied there), and the follower loses that answer, answering
    // 503 TIMEOUT as it does when the answer is cut off
    // (`api::forward`). `tests/tests/release_unknown.rs`.
    "api::forward::lose_answer",
    // The peer port answers every `/raft/append` 503 (nothing appended):
    // a leader's entries stay uncommitted while its followers refuse them.
    // `tests/tests/batch_leader_change.rs`.
    "network::append::refuse",
];

/// Whether the fault point `name` is armed (any action that "returns").
#[cfg(feature = "failpoints")]
#[inline]
pub fn fault(name: &'static str) -> bool {
    debug_assert!(FAULT_POINTS.contains(&name), "unlisted fault point {name}");
    fail::eval(name, |_| ()).is_some()
}

/// Fault points are compiled out without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn fault(_name: &'static str) -> bool {
    false
}

#[cfg(feature = "failpoints")]
fn known(name: &str) -> bool {
    CRASH_POINTS.contains(&name) || ERROR_POINTS.contains(&name) || FAULT_POINTS.contains(&name)
}

/// Arms (or with `off` disarms) crash, error or fault point `name` with a
/// `fail` action.
#[cfg(feature = "failpoints")]
pub fn arm(name: &str, action: &str) -> Result<(), String> {
    if !known(name) {
        return Err(format!("unknown crash point {name:?}"));
    }
    let action = action.trim();
    if action.is_empty() {
        return Err("empty action: use e.g. `return`, `1*off->return` or `off`".into());
    }
    fail::cfg(name, action)
}

/// Reads `FAILPOINTS` once at start. Keep the returned guard alive for the
/// whole process. Refuses unknown names, so a typo cannot silently run a
/// test without its crash.
#[cfg(feature = "failpoints")]
pub fn setup() -> Result<fail::FailScenario<'static>, String> {
    if let Ok(spec) = std::env::var("FAILPOINTS") {
        for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let name = part.split('=').next().unwrap_or_default().trim();
            if !known(name) {
                return Err(format!("FAILPOINTS names an unknown crash point {name:?}"));
            }
        }
    }
    // `setup` panics on a malformed action: turn that into an error.
    std::panic::catch_unwind(fail::FailScenario::setup).map_err(|_| {
        format!(
            "FAILPOINTS has a malformed action: {:?}",
            std::env::var("FAILPOINTS")
        )
    })
}
