//! Errors.

use crate::types::{ErrorCode, LockData};
use std::fmt;
use std::sync::Arc;

/// Why a lock counts as lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// Another owner holds the key now.
    TakenOver,
    /// The cluster no longer has the lock (it expired, was released by
    /// someone with our owner hash, or our process was declared dead).
    NotHeld,
    /// Self-fencing: the local deadline (send time of the last successful
    /// acquire/extend + ttl - safety margin) passed.
    LocalDeadline,
    /// Self-fencing: this process's keep-alives failed (or were not written)
    /// for longer than the process ttl, so the cluster may count it dead.
    ProcessLapsed,
    /// The lock was released by this process (the job ended).
    Released,
}

/// A lock was lost or taken over: the seed's `LockError`, raised by
/// [`Heartbeater::heartbeat`](crate::Heartbeater::heartbeat) ("seppuku").
///
/// Names the key, our owner hash and, when known, the new holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockError {
    /// The lock key.
    pub key: String,
    /// Our owner hash (the run that lost the lock).
    pub owner_hash: String,
    /// The new holder, when the cluster told us (boxed to keep errors small).
    pub holder: Option<Box<LockData>>,
    /// Why the lock counts as lost.
    pub reason: LostReason,
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lock \"{}\" lost by {}: ", self.key, self.owner_hash)?;
        match (self.reason, &self.holder) {
            (_, Some(h)) => write!(f, "now held by {h}"),
            (LostReason::TakenOver, None) => write!(f, "taken over by another owner"),
            (LostReason::NotHeld, None) => write!(
                f,
                "the cluster no longer has it (expired, released, or our process was declared dead)"
            ),
            (LostReason::LocalDeadline, None) => write!(
                f,
                "no successful extend before the local deadline (self-fencing)"
            ),
            (LostReason::ProcessLapsed, None) => write!(
                f,
                "no keep-alive confirmed in time: the process deadline (last keep-alive sent + process ttl - margin, minus the stop grace) passed (self-fencing)"
            ),
            (LostReason::Released, None) => write!(f, "the lock was released"),
        }
    }
}

impl std::error::Error for LockError {}

/// Every heartbeat fails with this while the process is draining (see
/// [`Heartbeater::set_draining`](crate::Heartbeater::set_draining)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainingSignal {
    /// The key of the lock whose heartbeat was refused.
    pub key: String,
    /// The reason given to `set_draining`.
    pub reason: String,
}

impl fmt::Display for DrainingSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} aborted since the process is draining", self.key)?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for DrainingSignal {}

/// [`Locker::mutex`](crate::Locker::mutex) could not get the lock in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutexError {
    /// The lock key.
    pub key: String,
    /// Who held it at the last attempt (boxed to keep errors small).
    pub holder: Box<LockData>,
}

impl fmt::Display for MutexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out waiting for mutex \"{}\", held by {}",
            self.key, self.holder
        )
    }
}

impl std::error::Error for MutexError {}

/// Everything this crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lock was lost (seppuku).
    #[error(transparent)]
    Lost(#[from] LockError),
    /// The process is draining.
    #[error(transparent)]
    Draining(#[from] DrainingSignal),
    /// A mutex timed out.
    #[error(transparent)]
    Mutex(#[from] MutexError),
    /// No endpoint gave a usable answer within the failover budget
    /// (connection errors, timeouts, 5xx, 503 without a leader). Transient.
    ///
    /// Also how a write whose outcome is unknown is reported: once a try of
    /// an acquire, extend, release, end of process or keep-alive was of
    /// unknown fate (a timeout, a reset, a 5xx other than `NO_LEADER`), the
    /// call answers
    /// `SUCCESS` or this, never a retry's `NO_KEY`,
    /// `SOMEONE_ELSE_HOLDS_LOCK` or [`Error::Api`] refusal, which would not
    /// prove the lost try did nothing; except a validation refusal
    /// (`INVALID_*`, ...), which every copy of the request gets (see
    /// [`Client::acquire`](crate::Client::acquire),
    /// [`Client::extend`](crate::Client::extend) and
    /// [`Client::release`](crate::Client::release)). After such a release
    /// the lock may have been freed by it, or may still be held until its
    /// deadline (a copy of the lost try may yet arrive): release again with
    /// the same owner hash (`SUCCESS` then frees it, a `NO_KEY` from a
    /// fresh call means it is gone now), or let it expire. Do not read it
    /// as "the lease had ended early".
    #[error("no Locker node answered usefully within {elapsed_ms} ms (tried {endpoints}): {last}")]
    Unavailable {
        /// How long we tried.
        elapsed_ms: u64,
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The last failure.
        last: String,
    },
    /// The cluster refused the request (a 4xx with an error body; its HTTP
    /// status is the one `code` is answered with). From an acquire, extend,
    /// release or end of process, nothing was done by any try of the call: a refusal after a try of unknown
    /// fate is [`Error::Unavailable`] instead, unless it is a validation
    /// error that try got too.
    #[error("the cluster refused the request: HTTP {http_status} {code}: {message}")]
    Api {
        /// HTTP status.
        http_status: u16,
        /// The error code, e.g. [`ErrorCode::InvalidKey`].
        code: ErrorCode,
        /// Human text.
        message: String,
    },
    /// An answer we could not understand.
    #[error("unexpected answer from {endpoint}: {detail}")]
    Protocol {
        /// Which node answered.
        endpoint: String,
        /// What was wrong.
        detail: String,
    },
    /// The reporter thread did not write a keep-alive in time.
    #[error(
        "timed out after {0} ms waiting for the reporter thread to write this process's keep-alive"
    )]
    ReporterTimeout(u64),
    /// The locker was terminated.
    #[error("the locker was terminated")]
    Terminated,
    /// Bad options or arguments.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether retrying later may succeed (cluster unreachable, no leader).
    ///
    /// ```
    /// use locker_client::Error;
    /// assert!(!Error::Terminated.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Protocol { .. })
    }
}

/// Which part of the client a recoverable error came from (the seed's
/// `errors` event types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The keep-alive thread.
    Reporter,
    /// A lock operation (recheck, extend, release) that will be retried.
    Locker,
    /// A lock was lost.
    LostLock,
}

impl ErrorKind {
    /// `reporter`, `locker` or `lost_lock`, as in the seed.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Reporter => "reporter",
            ErrorKind::Locker => "locker",
            ErrorKind::LostLock => "lost_lock",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recoverable error from [`Locker::errors`](crate::Locker::errors).
#[derive(Debug, Clone)]
pub struct LockerEvent {
    /// Where it came from.
    pub kind: ErrorKind,
    /// The error itself.
    pub error: Arc<Error>,
}

impl fmt::Display for LockerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.kind, self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_error_names_key_owner_and_holder() {
        let holder = LockData {
            key: "k".into(),
            owner_hash: "k@other/1.2.3".into(),
            process_hash: Some("other/1.2".into()),
            trace: None,
            acquired_at: 0,
            extended_at: 0,
            expires_at: 0,
            ttl_ms: 1000,
            fencing_token: 9,
        };
        let e = LockError {
            key: "k".into(),
            owner_hash: "k@me/1.2.1".into(),
            holder: Some(Box::new(holder)),
            reason: LostReason::TakenOver,
        };
        let s = e.to_string();
        assert!(s.contains("\"k\""), "{s}");
        assert!(s.contains("k@me/1.2.1"), "{s}");
        assert!(s.contains("k@other/1.2.3"), "{s}");
    }
}
