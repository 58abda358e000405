//! The records and commands of the replicated lock table.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::retired::Retired;

/// A lease on a key: who holds it, until when, and the fencing token of the grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The key the lock is on (also its record's key).
    pub key: String,
    /// The run holding it: `{key}@{process_hash}.{seq}[#trace]`.
    pub owner_hash: String,
    /// A lock with a process dies with that process; one without lives by its TTL alone.
    pub process_hash: Option<String>,
    /// Free text from the client, for people reading the table.
    pub trace: Option<String>,
    /// Log time of the grant; never moved (the incarnation rule compares it).
    pub acquired_at: u64,
    /// Log time of the last extend or re-acquire.
    pub extended_at: u64,
    /// Log time the lease ends, unless extended; shifted by takeover markers.
    pub expires_at: u64,
    /// The ttl of the last grant or extend.
    pub ttl_ms: u64,
    /// The log index of the entry that granted this lock.
    pub fencing_token: u64,
    /// The name of the token whose acquire granted it (tokens on), for the
    /// token's `max_locks`. Not part of the record's bincode (`serde(skip)`,
    /// so records written before tokens still decode): storage keeps it in
    /// a record of its own and snapshots in [`super::TableImage::lock_tokens`].
    #[serde(skip)]
    pub token: Option<String>,
}

/// A client process that keeps itself alive with short keep-alives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// `{hostname}/{pid}.{nanoseconds}` (also its record's key).
    pub process_hash: String,
    /// The ttl of the last keep-alive.
    pub ttl_ms: u64,
    /// Log time the process dies unless a keep-alive comes first.
    pub alive_until: u64,
    /// Log time when this incarnation began. A lock acquired before it belongs
    /// to an earlier incarnation that died, so it must not come back to life
    /// when keep-alives resume.
    pub since: u64,
    /// Free-form JSON from the client, kept as text (bincode cannot carry
    /// self-describing values).
    pub info: Option<String>,
    /// The name of the token that registered it (tokens on): no other token
    /// may keep it alive or end it. Kept out of the record's bincode as
    /// [`Lock::token`] is, in [`super::TableImage::process_tokens`].
    #[serde(skip)]
    pub token: Option<String>,
}

/// The seed's statuses, spelled the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// The operation did what was asked.
    Success,
    /// Another owner holds a live lock on the key (its lock comes along).
    SomeoneElseHoldsLock,
    /// No live lock (or process) to act on.
    NoKey,
    /// The named process is not alive (acquire), or the lock's process is
    /// dead while its own ttl still runs (owner query).
    NoRunningProcess,
    /// Owner query: this owner holds a live lock.
    Running,
    /// Owner query: the hash does not parse.
    MalformedOwnerHash,
    /// Not a seed status: an acquire by an owner hash whose run has ended
    /// (see `core::retired`). The API answers it as the error
    /// `409 OWNER_HASH_RETIRED`. Last, so older encodings still decode.
    OwnerHashRetired,
    /// Not a seed status: the process was registered by another token
    /// (`403 FORBIDDEN`). Nothing was done.
    Forbidden,
    /// Not a seed status: a limit carried by the command ([`Caller`]) is
    /// reached (`429 LIMIT_EXCEEDED`). Nothing was done.
    LimitExceeded,
}

impl Status {
    /// The wire spelling (`SUCCESS`, ...), also used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::SomeoneElseHoldsLock => "SOMEONE_ELSE_HOLDS_LOCK",
            Status::NoKey => "NO_KEY",
            Status::NoRunningProcess => "NO_RUNNING_PROCESS",
            Status::Running => "RUNNING",
            Status::MalformedOwnerHash => "MALFORMED_OWNER_HASH",
            Status::OwnerHashRetired => "OWNER_HASH_RETIRED",
            Status::Forbidden => "FORBIDDEN",
            Status::LimitExceeded => "LIMIT_EXCEEDED",
        }
    }
}

/// What a state change asks for. Validated (ranges, formats) before it is
/// proposed; apply still never panics on any value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Creates or refreshes a process (a new incarnation if it was dead).
    Keepalive {
        /// The process.
        process_hash: String,
        /// Alive until now + this.
        ttl_ms: u64,
        /// Free-form JSON from the client, as text; kept when absent.
        info: Option<String>,
    },
    /// Ends a process and every lock bound to it at once.
    EndProcess {
        /// The process.
        process_hash: String,
    },
    /// Grants a free key, re-acquires (extends) the owner's own live lock,
    /// or refuses (see the statuses).
    Acquire {
        /// The key.
        key: String,
        /// The run asking; an ended run is refused (`core::retired`).
        owner_hash: String,
        /// The process the lock dies with, if any (must be alive).
        process_hash: Option<String>,
        /// Free text kept with the lock.
        trace: Option<String>,
        /// The lease's length from now.
        ttl_ms: u64,
    },
    /// Extends the owner's live lock to now + `ttl_ms`.
    Extend {
        /// The key.
        key: String,
        /// The holder.
        owner_hash: String,
        /// The new lease length from now.
        ttl_ms: u64,
    },
    /// Deletes the owner's live lock; ends that run whatever the answer.
    Release {
        /// The key.
        key: String,
        /// The run giving the key up.
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
    /// `op` on behalf of a caller, under the limits the proposing leader was
    /// configured with: carried in the entry so every replica judges it
    /// alike. Only keep-alive, end process and acquire look at the caller;
    /// any other op is applied as if bare. After [`Op::Tick`] for the same
    /// reason.
    As {
        /// Who asks, and the limits that apply.
        caller: Caller,
        /// What is asked.
        op: Box<Op>,
    },
    /// Several client ops proposed in one entry by the leader's proposer
    /// (`crate::proposer`): each is applied in order exactly as if it were
    /// its own entry at this entry's index and time, and answered on its
    /// own ([`Outcome::batch`]). Only [`Op::is_client_op`] ops, at most one
    /// of them an acquire (a grant's fencing token is the entry's index, and
    /// two grants must never share one); any other batch is refused whole
    /// ([`Op::batch_refusal`]). Last, so older logs decode; read only by
    /// peers of protocol 3 on.
    Batch(Vec<Op>),
}

impl Op {
    /// An op a client request proposes (keep-alive, end process, acquire,
    /// extend, release), bare or inside [`Op::As`]: what may be batched.
    pub fn is_client_op(&self) -> bool {
        match self {
            Op::Keepalive { .. }
            | Op::EndProcess { .. }
            | Op::Acquire { .. }
            | Op::Extend { .. }
            | Op::Release { .. } => true,
            Op::As { op, .. } => op.is_client_op(),
            Op::Sweep | Op::LeaderTakeover | Op::Tick | Op::Batch(_) => false,
        }
    }

    /// Whether this is an acquire, bare or inside [`Op::As`].
    pub fn is_acquire(&self) -> bool {
        match self {
            Op::Acquire { .. } => true,
            Op::As { op, .. } => op.is_acquire(),
            _ => false,
        }
    }

    /// Why the ops of an [`Op::Batch`] may not share an entry, or `None`
    /// when they may: empty, an op that is not a client op (a nested batch,
    /// a sweep, a marker), or more than one acquire. A pure function of the
    /// ops, so every replica refuses the same batches.
    pub fn batch_refusal(ops: &[Op]) -> Option<&'static str> {
        if ops.is_empty() {
            return Some("an empty batch");
        }
        if !ops.iter().all(Op::is_client_op) {
            return Some("a batch holding an op that is not a client op");
        }
        if ops.iter().filter(|op| op.is_acquire()).count() > 1 {
            return Some("a batch holding more than one acquire");
        }
        None
    }
}

/// Who proposed a command and the limits it runs under (see [`Op::As`]).
/// `None` means "no limit" or "tokens off".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The name of the token of the request (tokens on).
    pub token: Option<String>,
    /// Lock records the table may hold at most (`--max-locks`): an acquire
    /// that would add one more is refused.
    pub max_locks: Option<u64>,
    /// Process records the table may hold at most (`--max-processes`).
    pub max_processes: Option<u64>,
    /// Lock records granted to this token at most (its `max_locks`).
    pub token_max_locks: Option<u64>,
}

/// A log entry's payload: an operation and the leader's time when it was proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Milliseconds since the Unix epoch on the proposing leader's clock.
    pub time_ms: u64,
    /// What to do.
    pub op: Op,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_op(&self.op, f)?;
        write!(f, "@{}", self.time_ms)
    }
}

fn fmt_op(op: &Op, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match op {
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
        Op::As { caller, op } => {
            fmt_op(op, f)?;
            write!(f, " as {}", caller.token.as_deref().unwrap_or("-"))
        }
        Op::Batch(ops) => write!(f, "batch({})", ops.len()),
    }
}

/// The answer to a command, returned to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The operation's status.
    pub status: Status,
    /// The lock granted or extended, or the holder's lock on a refusal.
    pub lock: Option<Lock>,
    /// For a keep-alive: until when the process is now alive.
    pub alive_until: Option<u64>,
    /// For an [`Op::Batch`]: one outcome per op, in order (then `status`
    /// is `Success`); empty when the batch was refused (`status` is
    /// `Forbidden`, nothing was applied). Empty for any other op. Outcomes
    /// stay on the leader (openraft's response to the proposer), never on
    /// the wire, so adding this changes no format.
    pub batch: Vec<Outcome>,
}

impl Outcome {
    /// An outcome with a status and nothing else.
    pub fn status_only(status: Status) -> Self {
        Outcome {
            status,
            lock: None,
            alive_until: None,
            batch: Vec::new(),
        }
    }

    pub(crate) fn with_lock(status: Status, lock: &Lock) -> Self {
        Outcome {
            status,
            lock: Some(lock.clone()),
            alive_until: None,
            batch: Vec::new(),
        }
    }
}

/// One record written or removed by an apply: what storage must persist so the
/// on-disk table matches the in-memory one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write this lock record (keyed by its key).
    PutLock(Lock),
    /// Remove the lock record of this key.
    DeleteLock(String),
    /// Write this process record (keyed by its hash).
    PutProcess(Process),
    /// Remove the record of this process hash.
    DeleteProcess(String),
    /// Write this retired-runs record (keyed by its process part).
    PutRetired(Retired),
    /// Remove the retired-runs record of this process part.
    DeleteRetired(String),
    /// A takeover marker moved the deadline of every lock record by `gap`,
    /// except the records it writes again after this change with
    /// [`Change::PutLock`] (those it did not move, or whose move stopped at
    /// `u64::MAX`). Storage keeps lock deadlines relative to one table-wide
    /// shift and adds `gap` to it, so a marker writes O(records it did not
    /// move) instead of every live lock (`store::lock_shift`). Comes first
    /// among a marker's lock changes, and never with a zero gap.
    ShiftLocks {
        /// Milliseconds added to every lock deadline.
        gap: u64,
    },
}
