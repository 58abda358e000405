//! The JSON shapes of the HTTP API (see `docs/http-api.md`) and the statuses.
//!
//! They are not defined here: `locker-proto` is the one wire vocabulary the
//! node, this client, the fault suite and the tests share. This module
//! re-exports what the client's API exposes; the crate root offers each type
//! once, under the name this crate has always used where there is one
//! (mirroring the seed's library), and `locker_client::proto` has them all.

pub use locker_proto::{
    ErrorAnswer, ErrorCode, ErrorDetail, ListAnswer, ProcessStatus, RaftState, ReadAnswer,
    StatusAnswer,
};

/// A lock record as the cluster reports it (the seed's name for [`locker_proto::Lock`]).
///
/// ```
/// let json = r#"{"key":"k","owner_hash":"k@h/1.2.3","process_hash":"h/1.2","trace":null,
///   "acquired_at":1,"extended_at":2,"expires_at":3,"ttl_ms":300000,"fencing_token":42}"#;
/// let lock: locker_client::LockData = serde_json::from_str(json).unwrap();
/// assert_eq!(lock.fencing_token, 42);
/// assert_eq!(lock.trace, None);
/// ```
pub use locker_proto::Lock as LockData;

/// Statuses of lock operations (acquire, extend, release).
///
/// ```
/// assert_eq!(locker_client::LockStatus::NoKey.as_str(), "NO_KEY");
/// ```
pub use locker_proto::LockOpStatus as LockStatus;

/// Statuses of the owner-hash query.
///
/// ```
/// assert_eq!(locker_client::OwnerHashStatus::Running.as_str(), "RUNNING");
/// ```
pub use locker_proto::OwnerStatus as OwnerHashStatus;

/// The answer of a lock operation: a status and, depending on it, our lock
/// or the holder's.
pub use locker_proto::LockAnswer as LockResponse;

/// The answer of `GET /v1/owners/{owner_hash}`.
pub use locker_proto::OwnerAnswer as OwnerStatusResponse;

/// The answer of a process keep-alive.
pub use locker_proto::KeepaliveAnswer as KeepaliveResponse;

/// One member of the cluster.
pub use locker_proto::Member as ClusterMember;

/// The answer of `GET /v1/cluster`: the view of the node asked, with its Raft
/// role (`state`) and log indexes.
pub use locker_proto::ClusterAnswer as ClusterInfo;

#[cfg(test)]
mod tests {
    use super::*;

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
            r#"{"node_id":1,"leader_id":null,"term":3,"state":"Follower",
            "members":[{"id":1,"client_addr":"a","peer_addr":"b","voter":true}],
            "last_log_index":5,"last_applied_index":5,"committed_index":5,
            "snapshot_index":null,"purged_index":null}"#,
        )
        .expect("de");
        assert_eq!(c.members.len(), 1);
        assert_eq!(c.leader_id, None);
        assert_eq!(c.state, RaftState::Follower);
        assert_eq!(c.committed_index, Some(5));
    }

    /// Regression: the client's own copy of the lock type defaulted every
    /// missing number to 0, so a lock without `fencing_token` read as token
    /// 0, a token a fenced resource would accept as the oldest holder's.
    #[test]
    fn a_lock_without_a_fencing_token_does_not_parse() {
        let body = r#"{"status":"SUCCESS","lock":{"key":"k","owner_hash":"k@h/1.2.3",
            "process_hash":null,"trace":null,"acquired_at":1,"extended_at":1,
            "expires_at":2,"ttl_ms":1000}}"#;
        let e = serde_json::from_str::<LockResponse>(body).expect_err("must be refused");
        assert!(e.to_string().contains("fencing_token"), "{e}");
    }
}
