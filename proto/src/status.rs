//! The statuses of the seed's API, spelled the same, split by what can answer
//! them: a lock operation never answers `RUNNING`, an owner query never
//! answers `SUCCESS`, a process route answers only `SUCCESS` or `NO_KEY`.

use crate::wire_enum::wire_enum;

wire_enum! {
    /// The status of acquire, extend and release (`LockAnswer.status`).
    pub enum LockOpStatus {
        /// Done: the lock was granted, extended or released.
        Success = "SUCCESS",
        /// Another owner holds the key; the holder's lock comes along.
        SomeoneElseHoldsLock = "SOMEONE_ELSE_HOLDS_LOCK",
        /// Extend or release: no live lock under the key.
        NoKey = "NO_KEY",
        /// Acquire: the named process is not alive.
        NoRunningProcess = "NO_RUNNING_PROCESS",
    }
}

impl LockOpStatus {
    /// The HTTP status the node answers this with: 200, 404 for `NO_KEY`,
    /// 409 for `SOMEONE_ELSE_HOLDS_LOCK` and `NO_RUNNING_PROCESS`.
    pub fn http_status(self) -> u16 {
        match self {
            LockOpStatus::Success => 200,
            LockOpStatus::NoKey => 404,
            LockOpStatus::SomeoneElseHoldsLock | LockOpStatus::NoRunningProcess => 409,
        }
    }
}

wire_enum! {
    /// The status of an owner-hash query (`OwnerAnswer.status`), always
    /// answered with HTTP 200.
    pub enum OwnerStatus {
        /// The owner holds a live lock and its process (if any) is alive.
        Running = "RUNNING",
        /// Another owner holds the key (its lock comes along).
        SomeoneElseHoldsLock = "SOMEONE_ELSE_HOLDS_LOCK",
        /// No lock whose own TTL still runs under the key.
        NoKey = "NO_KEY",
        /// The lock's TTL runs but its process is dead (the lock comes along).
        NoRunningProcess = "NO_RUNNING_PROCESS",
        /// The owner hash does not parse; `key` and `lock` are null.
        MalformedOwnerHash = "MALFORMED_OWNER_HASH",
    }
}

wire_enum! {
    /// The status of a keep-alive (always `SUCCESS`) and of ending a process.
    pub enum ProcessStatus {
        /// Done.
        Success = "SUCCESS",
        /// Ending a process that was not alive (its records are removed all
        /// the same).
        NoKey = "NO_KEY",
    }
}

impl ProcessStatus {
    /// The HTTP status the node answers this with: 200, or 404 for `NO_KEY`.
    pub fn http_status(self) -> u16 {
        match self {
            ProcessStatus::Success => 200,
            ProcessStatus::NoKey => 404,
        }
    }
}

wire_enum! {
    /// A node's Raft role in the cluster view (`ClusterAnswer.state`).
    pub enum RaftState {
        /// Replicates the log, neither votes nor campaigns.
        Learner = "Learner",
        /// Replicates the log from the leader and votes.
        Follower = "Follower",
        /// Campaigns to become leader.
        Candidate = "Candidate",
        /// Leads the cluster.
        Leader = "Leader",
        /// Shutting down.
        Shutdown = "Shutdown",
    }
}
