//! Replica digests (`GET /v1/digest`): every live node's lock table must be
//! identical at equal applied indexes. Cluster tests end with
//! [`Cluster::assert_replicas_agree`].

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{get, Cluster};

/// One node's answer to `GET /v1/digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaDigest {
    pub node_id: u64,
    pub applied_index: u64,
    pub digest: String,
    pub locks: u64,
    pub processes: u64,
}

impl ReplicaDigest {
    fn from_json(v: &Value) -> Option<ReplicaDigest> {
        Some(ReplicaDigest {
            node_id: v["node_id"].as_u64()?,
            applied_index: v["applied_index"].as_u64()?,
            digest: v["digest"].as_str()?.to_string(),
            locks: v["locks"].as_u64()?,
            processes: v["processes"].as_u64()?,
        })
    }
}

/// The digest of the node at `base_url`, or `None` if it does not answer one.
pub fn replica_digest(base_url: &str) -> Option<ReplicaDigest> {
    let a = get(&format!("{base_url}/v1/digest"));
    if a.code != 200 {
        return None;
    }
    ReplicaDigest::from_json(&a.body)
}

impl Cluster {
    /// Digests of every running node (`None` for a node that did not answer).
    pub fn replica_digests(&self) -> Vec<(u64, Option<ReplicaDigest>)> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| (n.id, replica_digest(&n.url())))
            .collect()
    }

    /// Waits until every running node reports the same applied index, then
    /// asserts that their digests are equal; returns the agreed digest.
    /// Panics when the indexes never meet within `timeout`, or at once when
    /// equal indexes carry different digests (diverged replicas).
    pub fn assert_replicas_agree(&self, timeout: Duration) -> ReplicaDigest {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.replica_digests();
            let answered: Vec<&ReplicaDigest> =
                all.iter().filter_map(|(_, d)| d.as_ref()).collect();
            if answered.len() == all.len() && !answered.is_empty() {
                let first = answered[0];
                if answered
                    .iter()
                    .all(|d| d.applied_index == first.applied_index)
                {
                    let differ = answered.iter().any(|d| {
                        (&d.digest, d.locks, d.processes)
                            != (&first.digest, first.locks, first.processes)
                    });
                    assert!(
                        !differ,
                        "replicas disagree at applied index {}: {answered:#?}",
                        first.applied_index
                    );
                    return first.clone();
                }
            }
            if Instant::now() > deadline {
                panic!("replicas never reached one applied index within {timeout:?}: {all:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
