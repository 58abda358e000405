//! Locker's wire vocabulary, shared by the node, the client library, the
//! fault suite and the tests, so there is one definition of each:
//!
//! * the request bodies and query strings of every route ([`requests`]),
//! * the answer bodies ([`answers`]) and the [`Lock`] they carry,
//! * the statuses, split by what can answer them ([`LockOpStatus`],
//!   [`OwnerStatus`], [`ProcessStatus`]) and the Raft role ([`RaftState`]),
//! * the error body and every error code with its HTTP status ([`ErrorCode`]),
//! * the validation limits and defaults ([`limits`]),
//! * owner and process hashes: format, parser, builders ([`hashes`]),
//! * the watch stream's events, positions and 410 answer ([`watch`]),
//! * with feature `openapi`, the OpenAPI schemas of every validated input,
//!   built from [`limits`] (`schemas`).
//!
//! Only serde, serde_json, thiserror and hostname: no Raft, storage, HTTP
//! server or runtime, so the client stays light. The HTTP contract these
//! types follow is `docs/http-api.md`.

#![deny(missing_docs)]

mod wire_enum;

pub mod answers;
pub mod error;
pub mod hashes;
pub mod limits;
pub mod lock;
pub mod requests;
#[cfg(feature = "openapi")]
pub mod schemas;
pub mod status;
pub mod watch;

pub use answers::{
    ClusterAnswer, DigestAnswer, HealthAnswer, KeepaliveAnswer, LeaderAnswer, ListAnswer,
    LockAnswer, Member, NodeView, NodesAnswer, OwnerAnswer, ProcessEntry, ProcessListAnswer,
    ReadAnswer, ReadyAnswer, StatusAnswer,
};
pub use error::{ErrorAnswer, ErrorCode, ErrorDetail};
pub use hashes::{
    clean_hostname, hostname, is_valid_process_hash, make_owner_hash, make_process_hash,
    new_process_hash, parse_owner_hash, OwnerHashError, OwnerHashParts,
};
pub use lock::Lock;
pub use requests::{
    AcquireRequest, AddMemberRequest, ExtendRequest, KeepaliveRequest, ListQuery, ReadQuery,
    ReleaseRequest, TransferLeaderRequest,
};
pub use status::{LockOpStatus, OwnerStatus, ProcessStatus, RaftState};
pub use watch::{
    BadEventId, CloseReason, CompactedAnswer, EndReason, EventId, ReadIndexAnswer, WatchCause,
    WatchClosed, WatchEvent, WatchKind, WatchProcess, WatchQuery, WatchStart,
};

/// A word that is not one of an enum's wire spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{word:?} is not a {kind}")]
pub struct UnknownWord {
    /// The enum asked for.
    pub kind: &'static str,
    /// The word given.
    pub word: String,
}
