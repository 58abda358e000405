//! A node whose Raft core stopped must not linger.
//!
//! openraft stops its core for good on any storage error it is handed (a
//! failed read, a corrupt entry, a flusher that is gone) and on a panic in
//! the core. The HTTP server would go on answering 503 to everything while
//! the process looks alive, and nothing restarts it. Failed writes and fsyncs
//! already exit at once (`disk_failed`); this watches everything else: when
//! the core stops without an orderly shutdown, log why and exit non-zero so a
//! supervisor restarts the node. Nothing is flushed on the way out: what was
//! acknowledged is already on disk, and the restart re-reads the store.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::Fatal;
use tokio::sync::watch;

use super::EXIT_DISK_FAILED;
use crate::types::Raft;

/// Exit code when the Raft core stopped on anything but a storage error
/// (a panic, an unexpected stop): BSD `EX_SOFTWARE`.
pub const EXIT_RAFT_STOPPED: i32 = 70;

/// How long an unexplained `Stopped` may wait for the orderly shutdown flag:
/// `main` sets it before it stops Raft, and a start-up refusal stops Raft and
/// exits with its own message within this time.
const STOPPED_GRACE: Duration = Duration::from_secs(3);

/// Runs for the node's life; returns only on an orderly shutdown.
/// `stopping` becomes true when the node shuts down on purpose.
pub async fn exit_when_raft_stops(raft: Raft, mut stopping: watch::Receiver<bool>) {
    let mut metrics = raft.metrics();
    let fatal = loop {
        if let Err(f) = metrics.borrow_and_update().running_state.clone() {
            break Some(f);
        }
        if metrics.changed().await.is_err() {
            // The core is gone without a word (it panicked).
            break None;
        }
    };
    let (code, why) = match &fatal {
        Some(Fatal::StorageError(e)) => (EXIT_DISK_FAILED, format!("storage error: {e}")),
        Some(Fatal::Panicked) => (EXIT_RAFT_STOPPED, "the Raft core panicked".into()),
        Some(Fatal::Stopped) | None => {
            let orderly = tokio::time::timeout(STOPPED_GRACE, stopping.wait_for(|s| *s)).await;
            if matches!(orderly, Ok(Ok(_))) {
                return;
            }
            let why = match fatal {
                Some(_) => "the Raft core stopped unexpectedly",
                None => "the Raft core ended without a word (a panic?)",
            };
            (EXIT_RAFT_STOPPED, why.to_string())
        }
    };
    let last_applied = metrics.borrow_watched().last_applied;
    // A storage error is a disk that failed (full, read-only, I/O error) or
    // a store that reads back wrong: say so in the words an operator greps
    // for, the same as the writes that exit through `disk_failed`.
    let hint = if code == EXIT_DISK_FAILED {
        ": the disk failed or the store is unreadable"
    } else {
        ""
    };
    tracing::error!(%why, ?last_applied, code, "Raft stopped{hint}; exiting so a supervisor restarts this node");
    eprintln!("locker-node: FATAL: Raft stopped ({why}){hint}; exiting (code {code}) so a supervisor restarts this node");
    std::process::exit(code)
}
