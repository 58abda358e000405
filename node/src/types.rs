//! The openraft type configuration: what the log carries and who the peers are.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::core::{Command, Outcome};

/// Where a cluster member listens: Raft traffic and client traffic are on
/// separate addresses so the peer port can demand the cluster secret.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeerNode {
    /// Where its Raft (peer) port listens.
    pub peer_addr: String,
    /// Where its client API listens: followers forward requests there.
    pub client_addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer={} client={}", self.peer_addr, self.client_addr)
    }
}

openraft::declare_raft_types!(
    /// Locker's Raft types: commands are lock-table [`Command`]s.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = PeerNode,
);

/// A node's id: unique in the cluster, never 0, never reused for a wiped node.
pub type NodeId = u64;
/// Locker's Raft instance.
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachine>;
/// A log entry's (term, leader, index).
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A vote (term and candidate), persisted before it is granted.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A membership with the log id that set it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// What a snapshot covers.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot, held in memory as bytes.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;
