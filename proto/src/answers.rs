//! The JSON bodies a node answers with, field for field as it sends them.
//! Optional fields are `null` when absent, except `ReadAnswer.lock`, which is
//! omitted when the key is free (`{"locked":false}`).
//!
//! Answers accept unknown fields, so a client keeps working when a newer node
//! adds one.

use serde::{Deserialize, Serialize};

use crate::{Lock, LockOpStatus, OwnerStatus, ProcessStatus, RaftState};

/// Answer to acquire, extend and release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockAnswer {
    /// What happened: `SUCCESS` is HTTP 200, `NO_KEY` 404, the others 409.
    pub status: LockOpStatus,
    /// The lock granted or extended; the holder's on `SOMEONE_ELSE_HOLDS_LOCK`;
    /// else `null`.
    pub lock: Option<Lock>,
}

/// Answer to `GET /v1/locks/{key}`: `{"locked":false}` when free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadAnswer {
    /// Whether a live lock holds the key.
    pub locked: bool,
    /// The live lock; omitted when free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<Lock>,
}

/// Answer to `GET /v1/locks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListAnswer {
    /// Live locks in key order.
    pub locks: Vec<Lock>,
}

/// Answer to `GET /v1/owners/{owner_hash}` (always HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OwnerAnswer {
    /// The owner's status.
    pub status: OwnerStatus,
    /// The key the owner hash names; `null` when it is malformed.
    pub key: Option<String>,
    /// The lock under that key (ours or another owner's); `null` on `NO_KEY`
    /// and `MALFORMED_OWNER_HASH`.
    pub lock: Option<Lock>,
}

/// Answer to `PUT /v1/processes/{process_hash}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeepaliveAnswer {
    /// Always `SUCCESS`.
    pub status: ProcessStatus,
    /// Until when (log time, ms since the epoch) the process is alive.
    pub alive_until: u64,
}

/// Answer to `DELETE /v1/processes/{process_hash}`: 200 `SUCCESS`, 404 `NO_KEY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusAnswer {
    /// What happened.
    pub status: ProcessStatus,
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// Where its client API listens (`host:port`).
    pub client_addr: String,
    /// Where its Raft (peer) port listens (`host:port`).
    pub peer_addr: String,
    /// Whether it votes (else it is a learner).
    pub voter: bool,
}

/// Answer to `GET /v1/cluster` and to the membership routes: the view of the
/// node asked (never forwarded). Indexes are `null` before there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterAnswer {
    /// The node that answered.
    pub node_id: u64,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
    /// Its current Raft term.
    pub term: u64,
    /// Its Raft role.
    pub state: RaftState,
    /// Members, voters and learners, in id order.
    pub members: Vec<Member>,
    /// The last log index it holds.
    pub last_log_index: Option<u64>,
    /// The last log index it applied.
    pub last_applied_index: Option<u64>,
    /// The last index it knows to be committed.
    pub committed_index: Option<u64>,
    /// The last index its snapshot covers.
    pub snapshot_index: Option<u64>,
    /// The last index removed from its log.
    pub purged_index: Option<u64>,
}

/// Answer to `GET /readyz` (200 when ready, else 503).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadyAnswer {
    /// A leader is known and this node applied what it knows committed.
    pub ready: bool,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
    /// The commit index (the leader's, when asked of a follower).
    pub committed_index: u64,
    /// This node's applied index.
    pub applied_index: u64,
}

/// Answer to `GET /healthz`: `{"status":"ok"}` (200) while the process runs,
/// `{"status":"raft stopped"}` (503) in the moment before a node whose Raft
/// core stopped exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthAnswer {
    /// `ok`, or `raft stopped` with a 503.
    pub status: String,
}

/// Answer to `GET /v1/digest`: this replica's table at its applied index.
/// Replicas at equal `applied_index` must give equal digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DigestAnswer {
    /// The node that answered.
    pub node_id: u64,
    /// The last log index applied to this replica (0 before any).
    pub applied_index: u64,
    /// SHA-256 (64 lowercase hex chars) of the canonical table encoding.
    pub digest: String,
    /// Lock records in the table, live or not yet swept.
    pub locks: u64,
    /// Process records in the table, live or not yet swept.
    pub processes: u64,
}

/// Answer to `POST /v1/cluster/leader`: the node that now leads and serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaderAnswer {
    /// The new leader.
    pub leader_id: u64,
}

/// One live process in `GET /v1/processes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessEntry {
    /// `{hostname}/{pid}.{nanoseconds}`.
    pub process_hash: String,
    /// The ttl of its last keep-alive.
    pub ttl_ms: u64,
    /// Log time (ms since the epoch) it dies unless a keep-alive comes first.
    pub alive_until: u64,
    /// Log time this incarnation of it began.
    pub since: u64,
    /// The `info` object of its last keep-alive; `null` without one.
    pub info: Option<serde_json::Value>,
}

/// Answer to `GET /v1/processes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessListAnswer {
    /// Live processes in process-hash order.
    pub processes: Vec<ProcessEntry>,
    /// The log time the list was judged at (ms since the epoch).
    pub at: u64,
}

/// One member as the node asked sees it in `GET /v1/cluster/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeView {
    /// Node id.
    pub id: u64,
    /// Where its client API listens (`""` while the membership lacks it).
    pub client_addr: String,
    /// Whether it answered its `GET /v1/cluster` within a second.
    pub reachable: bool,
    /// Why it did not answer; `null` when it did.
    pub error: Option<String>,
    /// Its own view of the cluster; `null` when it did not answer.
    pub cluster: Option<ClusterAnswer>,
}

/// Answer to `GET /v1/cluster/nodes`: every member's own view, gathered by
/// the node asked (never forwarded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodesAnswer {
    /// The node that gathered the views.
    pub node_id: u64,
    /// Every member, in id order.
    pub nodes: Vec<NodeView>,
}
