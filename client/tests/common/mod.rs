//! Shared helpers of the client's integration tests.

#![allow(dead_code)]

use std::sync::{Condvar, Mutex};

/// At most this many test clusters at once per test binary: starting a
/// dozen debug-build nodes at the same time on a 2-core machine makes
/// elections time out, which tests nothing of ours.
const MAX_CLUSTERS: usize = 3;

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// Holds one of the cluster slots until dropped.
pub struct Slot;

pub fn cluster_slot() -> Slot {
    let mut n = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    while *n >= MAX_CLUSTERS {
        n = FREED.wait(n).unwrap_or_else(|p| p.into_inner());
    }
    *n += 1;
    Slot
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        FREED.notify_one();
    }
}

/// Starts a cluster. Must be called outside any async runtime. (An earlier
/// node start-up race made this retry; it is fixed, so a start-up failure
/// fails the test.)
pub fn start_cluster(n: usize) -> locker_tests::Cluster {
    locker_tests::Cluster::start(n)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A key unique to this run.
pub fn key(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}{nanos}")
}

/// Prints the tail of every node's log (for a failing test's output).
pub fn dump_logs(c: &locker_tests::Cluster) {
    for n in &c.nodes {
        let path = n.data_dir.with_extension("log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        eprintln!(
            "---- node {} log ({}) ----\n{}",
            n.id,
            path.display(),
            tail.join("\n")
        );
    }
}

/// Runs `f` and dumps the node logs if it panics.
pub fn with_logs_on_panic<R>(
    c: &mut locker_tests::Cluster,
    f: impl FnOnce(&mut locker_tests::Cluster) -> R,
) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *c))) {
        Ok(r) => r,
        Err(e) => {
            dump_logs(c);
            std::panic::resume_unwind(e)
        }
    }
}
