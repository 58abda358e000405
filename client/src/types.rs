//! JSON shapes of the HTTP API (see `docs/http-api.md`) and the statuses.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A lock record as the cluster reports it.
///
/// Times are milliseconds since the Unix epoch in the cluster's log time, not
/// this machine's clock: use them for display, never for local deadlines.
///
/// ```
/// let json = r#"{"key":"k","owner_hash":"k@h/1.2.3","process_hash":"h/1.2","trace":null,
///   "acquired_at":1,"extended_at":2,"expires_at":3,"ttl_ms":300000,"fencing_token":42}"#;
/// let lock: locker_client::LockData = serde_json::from_str(json).unwrap();
/// assert_eq!(lock.fencing_token, 42);
/// assert_eq!(lock.trace, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockData {
    /// The lock key.
    pub key: String,
    /// The owner hash of the run holding the lock.
    pub owner_hash: String,
    /// The process the lock lives with, if any.
    #[serde(default)]
    pub process_hash: Option<String>,
    /// The trace given at acquire time, if any.
    #[serde(default)]
    pub trace: Option<String>,
    /// When this owner acquired the lock (log time, ms since the epoch).
    #[serde(default)]
    pub acquired_at: u64,
    /// When it was last extended (log time).
    #[serde(default)]
    pub extended_at: u64,
    /// When the lock expires unless extended (log time).
    #[serde(default)]
    pub expires_at: u64,
    /// The lock's own TTL.
    #[serde(default)]
    pub ttl_ms: u64,
    /// Fencing token: strictly increases between successive holders of a key.
    #[serde(default)]
    pub fencing_token: u64,
}

impl fmt::Display for LockData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (fencing token {}",
            self.owner_hash, self.fencing_token
        )?;
        if let Some(p) = &self.process_hash {
            write!(f, ", process {p}")?;
        }
        write!(f, ")")
    }
}

/// Statuses of lock operations, spelled as in the seed and on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LockStatus {
    /// The operation was done.
    Success,
    /// Another owner holds the lock; its data comes along.
    SomeoneElseHoldsLock,
    /// No live lock under that key.
    NoKey,
    /// The process named in an acquire is not live.
    NoRunningProcess,
}

impl LockStatus {
    /// The wire spelling, e.g. `SOMEONE_ELSE_HOLDS_LOCK`.
    ///
    /// ```
    /// assert_eq!(locker_client::LockStatus::NoKey.as_str(), "NO_KEY");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            LockStatus::Success => "SUCCESS",
            LockStatus::SomeoneElseHoldsLock => "SOMEONE_ELSE_HOLDS_LOCK",
            LockStatus::NoKey => "NO_KEY",
            LockStatus::NoRunningProcess => "NO_RUNNING_PROCESS",
        }
    }
}

impl fmt::Display for LockStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Statuses of the owner-hash query, spelled as in the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OwnerHashStatus {
    /// The owner holds a live lock and its process is live.
    Running,
    /// Another owner holds the key.
    SomeoneElseHoldsLock,
    /// No lock under the key.
    NoKey,
    /// The lock's TTL still runs but its process is dead.
    NoRunningProcess,
    /// The owner hash does not parse.
    MalformedOwnerHash,
}

impl OwnerHashStatus {
    /// The wire spelling, e.g. `RUNNING`.
    ///
    /// ```
    /// assert_eq!(locker_client::OwnerHashStatus::Running.as_str(), "RUNNING");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerHashStatus::Running => "RUNNING",
            OwnerHashStatus::SomeoneElseHoldsLock => "SOMEONE_ELSE_HOLDS_LOCK",
            OwnerHashStatus::NoKey => "NO_KEY",
            OwnerHashStatus::NoRunningProcess => "NO_RUNNING_PROCESS",
            OwnerHashStatus::MalformedOwnerHash => "MALFORMED_OWNER_HASH",
        }
    }
}

impl fmt::Display for OwnerHashStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer of a lock operation (acquire, extend, release): a status and,
/// depending on it, our lock or the holder's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockResponse {
    /// What happened.
    pub status: LockStatus,
    /// Acquire/extend SUCCESS: our lock. SOMEONE_ELSE_HOLDS_LOCK: the holder's.
    #[serde(default)]
    pub lock: Option<LockData>,
}

/// The answer of `GET /v1/owners/{owner_hash}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerStatusResponse {
    /// The owner's status.
    pub status: OwnerHashStatus,
    /// The key parsed from the owner hash (`None` when malformed).
    #[serde(default)]
    pub key: Option<String>,
    /// The lock under that key, when there is one.
    #[serde(default)]
    pub lock: Option<LockData>,
}

/// The answer of a process keep-alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepaliveResponse {
    /// Always SUCCESS on 200.
    pub status: LockStatus,
    /// Log time until which the process is live.
    #[serde(default)]
    pub alive_until: u64,
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Node id.
    pub id: u64,
    /// The node's client (HTTP) address.
    #[serde(default)]
    pub client_addr: String,
    /// The node's peer (Raft) address.
    #[serde(default)]
    pub peer_addr: String,
    /// Whether it votes.
    #[serde(default)]
    pub voter: bool,
}

/// The answer of `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The id of the node that answered.
    pub node_id: u64,
    /// The current leader, if known.
    #[serde(default)]
    pub leader_id: Option<u64>,
    /// The current Raft term.
    #[serde(default)]
    pub term: u64,
    /// Members.
    #[serde(default)]
    pub members: Vec<ClusterMember>,
    /// Last log index known to the answering node.
    #[serde(default)]
    pub last_log_index: Option<u64>,
    /// Last index applied by the answering node.
    #[serde(default)]
    pub last_applied_index: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LockReadResponse {
    pub locked: bool,
    #[serde(default)]
    pub lock: Option<LockData>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LockListResponse {
    pub locks: Vec<LockData>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ApiErrorBody {
    pub error: ApiErrorDetail,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ApiErrorDetail {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in [
            LockStatus::Success,
            LockStatus::SomeoneElseHoldsLock,
            LockStatus::NoKey,
            LockStatus::NoRunningProcess,
        ] {
            let j = serde_json::to_string(&s).expect("ser");
            assert_eq!(j, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<LockStatus>(&j).expect("de"), s);
        }
        for s in [
            OwnerHashStatus::Running,
            OwnerHashStatus::SomeoneElseHoldsLock,
            OwnerHashStatus::NoKey,
            OwnerHashStatus::NoRunningProcess,
            OwnerHashStatus::MalformedOwnerHash,
        ] {
            let j = serde_json::to_string(&s).expect("ser");
            assert_eq!(j, format!("\"{}\"", s.as_str()));
        }
    }

    #[test]
    fn parses_documented_shapes() {
        let r: LockResponse =
            serde_json::from_str(r#"{"status":"NO_RUNNING_PROCESS","lock":null}"#).expect("de");
        assert_eq!(r.status, LockStatus::NoRunningProcess);
        assert!(r.lock.is_none());
        let o: OwnerStatusResponse =
            serde_json::from_str(r#"{"status":"MALFORMED_OWNER_HASH","key":null,"lock":null}"#)
                .expect("de");
        assert_eq!(o.status, OwnerHashStatus::MalformedOwnerHash);
        let c: ClusterInfo = serde_json::from_str(
            r#"{"node_id":1,"leader_id":null,"term":3,"members":[{"id":1,"client_addr":"a","peer_addr":"b","voter":true}],"last_log_index":5,"last_applied_index":5}"#,
        )
        .expect("de");
        assert_eq!(c.members.len(), 1);
        assert_eq!(c.leader_id, None);
    }
}
