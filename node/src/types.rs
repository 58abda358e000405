//! The openraft type configuration: what the log carries and who the peers are.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::core::{Command, Outcome};

/// Where a cluster member listens: Raft traffic and client traffic are on
/// separate addresses so the peer port can demand the cluster secret.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeerNode {
    pub peer_addr: String,
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

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachine>;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;
