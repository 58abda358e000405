//! A durability probe around `kill-all`: just before every node is killed,
//! the nemesis takes a lock with a long ttl (`jepsen/durable-probe`, 60 s);
//! once the nodes are back it reads the key and releases it, all as recorded
//! operations. A grant acknowledged before the kill must survive it: a node
//! that acknowledges before its write is on disk (the `ack-before-fsync`
//! mutation) forgets it, and the read then sees the key free or held by an
//! earlier owner inside the probe's provable lease, which the lease and
//! fencing checkers report. Whole-cluster kills otherwise lose such a grant
//! unseen, because the lost entries are rewritten consistently.

use crate::api::Call;
use crate::clock_leader::WitnessClient;
use crate::cluster::Cluster;
use crate::history::OpType;
use crate::nemesis::Nemesis;
use std::time::Duration;
use tokio::time::{sleep, Instant};

pub const PROBE_KEY: &str = "jepsen/durable-probe";
const PROBE_TTL_MS: u64 = 60_000;

/// The probe taken before a kill, read and released after the restart.
pub struct Probe {
    client: WitnessClient,
    owner: String,
}

impl Nemesis {
    /// Takes the probe lock; the caller kills every node right after.
    pub(crate) async fn probe_before_kill(&mut self) {
        let mut client = self.client_for(PROBE_KEY);
        let owner = client.owner();
        let call = Call::Acquire {
            owner: owner.clone(),
            ttl_ms: PROBE_TTL_MS,
            process_hash: None,
        };
        if client.call(call, None).await.kind == OpType::Ok {
            self.state.probe = Some(Probe { client, owner });
        }
    }

    /// After the restart: read the probe key until a node answers (bounded),
    /// then release the probe.
    pub(crate) async fn probe_after_restart(&mut self, c: &Cluster) {
        let Some(mut p) = self.state.probe.take() else {
            return;
        };
        let _ = self
            .wait_node_ready(c, c.members[0], Duration::from_secs(20))
            .await;
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if p.client.call(Call::Read, None).await.kind == OpType::Ok {
                break;
            }
            sleep(Duration::from_millis(300)).await;
        }
        p.client.call(Call::Release { owner: p.owner }, None).await;
    }
}
