//! Rust client for Locker, a clustered lock service for "singleton jobs".
//!
//! It mirrors the `Locker` API of the Node library `distributed-locker`
//! (names in snake_case, same defaults), on top of a Locker cluster instead
//! of Redis:
//!
//! 1. Resilient to a blocked runtime: the lock ttl is long (5 minutes by
//!    default) and this process's liveness is reported by a dedicated OS
//!    thread every 2 s.
//! 2. Despite the long lock ttl, the rest of the fleet learns within the
//!    process ttl (10 s) that a job died, because every lock dies with its
//!    process.
//! 3. "Seppuku": when a lock is taken over, the old owner's next heartbeat
//!    fails. Beyond the seed, the client also fences itself (docs/protocol.md, "Self-fencing"): it
//!    counts the lock lost once its own deadline passes without a successful
//!    extend, or once its keep-alives have failed for longer than the process
//!    ttl, even when it cannot reach the cluster.
//! 4. Several endpoints with failover; writes are idempotent by owner hash.
//!
//! # Example
//!
//! The seed's README example:
//!
//! ```no_run
//! use locker_client::{Locker, LockerOptions, RunResult};
//!
//! # async fn should_continue() -> bool { false }
//! # async fn do_some_work() {}
//! # async fn demo() -> Result<(), locker_client::Error> {
//! let locker = Locker::new(LockerOptions {
//!     endpoints: vec!["http://10.0.0.1:7070".into(), "http://10.0.0.2:7070".into()],
//!     ..Default::default()
//! })?;
//!
//! // ...
//!
//! let res = locker
//!     .acquire_and_run("job-key", |heartbeater, _owner_hash| async move {
//!         while should_continue().await {
//!             do_some_work().await;
//!             // 1. Reports that the job is still running to refresh the lock.
//!             // 2. If someone takes over (e.g. a network blip or a blocked
//!             //    runtime), fails with Error::Lost: stop working.
//!             heartbeater.heartbeat().await?;
//!         }
//!         Ok::<_, locker_client::Error>(())
//!     }, None)
//!     .await?;
//! // res is now either RunResult::Success(())
//! // or RunResult::SomeoneElseHoldsLock(lock_data)
//! match res {
//!     RunResult::Success(()) => {}
//!     RunResult::SomeoneElseHoldsLock(holder) => println!("held by {holder}"),
//! }
//! locker.terminate().await;
//! # Ok(()) }
//! ```
//!
//! The `locker` binary in this package runs a command under a lock, like
//! `consul lock`: `locker run KEY -- CMD ARGS...` (see `locker --help`).

#![deny(missing_docs)]

mod client;
mod error;
mod fence;
mod hash;
mod heartbeater;
mod locker;
mod reporter;
#[cfg(test)]
mod testutil;
mod tls;
mod watch;

pub use client::{parse_endpoints, BearerToken, Client, ClientOptions, DEFAULT_ENDPOINT};
pub use error::{DrainingSignal, Error, ErrorKind, LockError, LockerEvent, LostReason, MutexError};
pub use fence::{safety_margin_ms, Clock, ManualClock, MonotonicClock};
pub use hash::{
    hostname, is_valid_process_hash, make_owner_hash, make_process_hash, new_process_hash,
    parse_owner_hash, OwnerHashError, OwnerHashParts,
};
pub use heartbeater::{Extender, Heartbeater};
pub use locker::{
    AcquireOptions, AcquireResult, Acquired, ErrorStream, Locker, LockerOptions, LostLockPolicy,
    RunResult,
};
/// The wire vocabulary this client speaks (every body, status and error code).
pub use locker_proto as proto;
/// The body of an acquire request.
pub use locker_proto::AcquireRequest;
pub use tls::TlsOptions;
pub use watch::{Watch, WatchItem};
// One name per type at the crate root: the seed's names where it has one
// (the proto names of those stay reachable as `proto::Lock` etc.).
pub use types::{
    ClusterInfo, ClusterMember, ErrorAnswer, ErrorCode, ErrorDetail, KeepaliveResponse, ListAnswer,
    LockData, LockResponse, LockStatus, OwnerHashStatus, OwnerStatusResponse, ProcessStatus,
    RaftState, ReadAnswer, StatusAnswer,
};

mod types;

#[cfg(test)]
mod tests;
