//! The JSON bodies the API answers with. Handlers build these types (not ad
//! hoc JSON) so the OpenAPI document is generated from what is really sent.

use serde::Serialize;
use utoipa::ToSchema;

use crate::core::{Lock, Status};

/// Answer to acquire, extend and release.
#[derive(Debug, Serialize, ToSchema)]
pub struct LockAnswer {
    pub status: Status,
    /// The lock granted or extended; the holder's lock on SOMEONE_ELSE_HOLDS_LOCK; else null.
    pub lock: Option<Lock>,
}

/// Answer to reading one lock: `{"locked":false}` when free.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadAnswer {
    pub locked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<Lock>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListAnswer {
    /// Live locks in key order.
    pub locks: Vec<Lock>,
}

/// Answer to an owner-hash status query.
#[derive(Debug, Serialize, ToSchema)]
pub struct OwnerAnswer {
    pub status: Status,
    /// The key named by the owner hash; null when it is malformed.
    pub key: Option<String>,
    pub lock: Option<Lock>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeepaliveAnswer {
    pub status: Status,
    /// Until when (ms since the epoch, log time) the process is alive.
    pub alive_until: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusAnswer {
    pub status: Status,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: INVALID_KEY, INVALID_JSON, INVALID_TTL, NO_LEADER, ...
    pub code: String,
    pub message: String,
}

/// Every refusal that is not a lock status: 4xx for bad input, 503 (with
/// Retry-After) when no leader can serve.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorAnswer {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub voter: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterAnswer {
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub term: u64,
    /// This node's Raft role: Leader, Follower, Candidate, Learner.
    pub state: String,
    pub members: Vec<Member>,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyAnswer {
    pub ready: bool,
    pub leader_id: Option<u64>,
    pub committed_index: u64,
    pub applied_index: u64,
}

/// A digest of this replica's lock table at its applied index, to compare
/// replicas: equal indexes must give equal digests.
#[derive(Debug, Serialize, ToSchema)]
pub struct DigestAnswer {
    pub node_id: u64,
    /// The last log index applied to this replica (0 before any).
    pub applied_index: u64,
    /// SHA-256 (64 lowercase hex chars) of the canonical encoding of the whole
    /// table: log time, lock records and process records in key order.
    pub digest: String,
    /// Lock records in the table, live or not yet swept.
    pub locks: u64,
    /// Process records in the table, live or not yet swept.
    pub processes: u64,
}

/// Answer to a leadership transfer: the node that now leads and serves.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderAnswer {
    pub leader_id: u64,
}
