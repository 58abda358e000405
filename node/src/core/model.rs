//! The records and commands of the replicated lock table.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::retired::Retired;

/// A lease on a key: who holds it, until when, and the fencing token of the grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub key: String,
    pub owner_hash: String,
    /// A lock with a process dies with that process; one without lives by its TTL alone.
    pub process_hash: Option<String>,
    pub trace: Option<String>,
    pub acquired_at: u64,
    pub extended_at: u64,
    pub expires_at: u64,
    pub ttl_ms: u64,
    /// The log index of the entry that granted this lock.
    pub fencing_token: u64,
}

/// A client process that keeps itself alive with short keep-alives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub process_hash: String,
    pub ttl_ms: u64,
    pub alive_until: u64,
    /// Log time when this incarnation began. A lock acquired before it belongs
    /// to an earlier incarnation that died, so it must not come back to life
    /// when keep-alives resume.
    pub since: u64,
    /// Free-form JSON from the client, kept as text (bincode cannot carry
    /// self-describing values).
    pub info: Option<String>,
}

/// The seed's statuses, spelled the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Success,
    SomeoneElseHoldsLock,
    NoKey,
    NoRunningProcess,
    Running,
    MalformedOwnerHash,
    /// Not a seed status: an acquire by an owner hash whose run has ended
    /// (see `core::retired`). The API answers it as the error
    /// `409 OWNER_HASH_RETIRED`. Last, so older encodings still decode.
    OwnerHashRetired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::SomeoneElseHoldsLock => "SOMEONE_ELSE_HOLDS_LOCK",
            Status::NoKey => "NO_KEY",
            Status::NoRunningProcess => "NO_RUNNING_PROCESS",
            Status::Running => "RUNNING",
            Status::MalformedOwnerHash => "MALFORMED_OWNER_HASH",
            Status::OwnerHashRetired => "OWNER_HASH_RETIRED",
        }
    }
}

/// What a state change asks for. Validated (ranges, formats) before it is
/// proposed; apply still never panics on any value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Keepalive {
        process_hash: String,
        ttl_ms: u64,
        info: Option<String>,
    },
    EndProcess {
        process_hash: String,
    },
    Acquire {
        key: String,
        owner_hash: String,
        process_hash: Option<String>,
        trace: Option<String>,
        ttl_ms: u64,
    },
    Extend {
        key: String,
        owner_hash: String,
        ttl_ms: u64,
    },
    Release {
        key: String,
        owner_hash: String,
    },
    /// Drops records whose own TTL has ended. Correctness never depends on it.
    Sweep,
    /// The first command of every leader term: shifts every live deadline by
    /// the gap between the log time before it and its own time, so a new
    /// leader whose clock runs ahead never ends a lease early, and a leader
    /// change grants no more than that gap.
    LeaderTakeover,
    /// An idle leader's clock tick: moves the log time only, so the log never
    /// lags the leader's clock by much and a takeover's gap measures the time
    /// without a leader, not the time without traffic. Appended last so logs
    /// written before it existed still decode (bincode numbers variants).
    Tick,
}

/// A log entry's payload: an operation and the leader's time when it was proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Milliseconds since the Unix epoch on the proposing leader's clock.
    pub time_ms: u64,
    pub op: Op,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Op::Keepalive { process_hash, .. } => write!(f, "keepalive({process_hash})"),
            Op::EndProcess { process_hash } => write!(f, "end_process({process_hash})"),
            Op::Acquire {
                key, owner_hash, ..
            } => write!(f, "acquire({key:?}, {owner_hash:?})"),
            Op::Extend {
                key, owner_hash, ..
            } => write!(f, "extend({key:?}, {owner_hash:?})"),
            Op::Release { key, owner_hash } => write!(f, "release({key:?}, {owner_hash:?})"),
            Op::Sweep => f.write_str("sweep"),
            Op::LeaderTakeover => f.write_str("leader_takeover"),
            Op::Tick => f.write_str("tick"),
        }?;
        write!(f, "@{}", self.time_ms)
    }
}

/// The answer to a command, returned to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    /// The lock granted or extended, or the holder's lock on a refusal.
    pub lock: Option<Lock>,
    /// For a keep-alive: until when the process is now alive.
    pub alive_until: Option<u64>,
}

impl Outcome {
    pub fn status_only(status: Status) -> Self {
        Outcome {
            status,
            lock: None,
            alive_until: None,
        }
    }

    pub(crate) fn with_lock(status: Status, lock: &Lock) -> Self {
        Outcome {
            status,
            lock: Some(lock.clone()),
            alive_until: None,
        }
    }
}

/// One record written or removed by an apply: what storage must persist so the
/// on-disk table matches the in-memory one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    PutLock(Lock),
    DeleteLock(String),
    PutProcess(Process),
    DeleteProcess(String),
    PutRetired(Retired),
    DeleteRetired(String),
}
