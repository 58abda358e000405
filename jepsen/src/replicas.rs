//! End-of-run replica digests (checker 6's input): poll `GET /v1/digest` on
//! every member, all at once, in rounds, until one round finds every member
//! at the same applied index (or the time limit). An idle leader commits a
//! clock tick about once a second, so indexes keep moving; asking all nodes
//! at the same instant catches them between two ticks. Every answer is
//! recorded in the history; [`crate::checker::digest`] judges them.

use crate::admin::{Admin, AdminError};
use crate::checker::digest::record_value;
use crate::cluster::Cluster;
use crate::history::{Op, OpType, Process, Recorder};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// Polls until agreement or `limit`; returns a one-line outcome for the log.
pub async fn collect(admin: &Admin, c: &Cluster, rec: &Recorder, limit: Duration) -> String {
    let end = Instant::now() + limit;
    let members: Vec<(u64, String)> = c.members.iter().map(|&m| (m, c.hosts.url(m))).collect();
    let n = members.len();
    let mut round = 0u64;
    while Instant::now() < end && round < 500 {
        round += 1;
        let mut set = tokio::task::JoinSet::new();
        for (id, url) in &members {
            let (a, id, url) = (admin.clone(), *id, url.clone());
            set.spawn(async move { (id, a.digest(&url).await) });
        }
        let mut indexes = BTreeSet::new();
        let mut missing = 0;
        let mut answered = 0;
        while let Some(r) = set.join_next().await {
            let Ok((id, r)) = r else { continue };
            let (kind, v) = match r {
                Ok(v) => {
                    answered += 1;
                    indexes.insert(v.applied_index);
                    // The history records the answer as the node sent it.
                    let v = serde_json::to_value(&v).unwrap_or_default();
                    (OpType::Ok, record_value(round, id, n, &v))
                }
                Err(e) => {
                    let is_missing = matches!(e, AdminError::Missing(_));
                    missing += is_missing as usize;
                    let v = json!({"error": e.to_string(), "missing": is_missing});
                    (OpType::Fail, record_value(round, id, n, &v))
                }
            };
            rec.record(Op::new(Process::Nemesis, kind, "digest", None, v));
        }
        if missing == n {
            return "the node build has no GET /v1/digest: replicas not compared".into();
        }
        if answered == n && indexes.len() == 1 {
            return format!("all {n} replicas at applied index {indexes:?} after {round} round(s)");
        }
        sleep(Duration::from_millis(150)).await;
    }
    format!("replicas did not reach one applied index in {limit:?} ({round} rounds)")
}
