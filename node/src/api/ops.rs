//! Operator routes: liveness, readiness, metrics.

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use locker_proto::{ClusterAnswer, DigestAnswer, HealthAnswer, ReadyAnswer};

use crate::metrics::{LimitsView, RaftView, TableView};
use crate::node::{LeaderHint, Node};

/// Liveness: 200 while the process runs and its Raft core has not stopped
/// (a stopped core makes the node exit; 503 covers the moment before).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "Alive: `{\"status\":\"ok\"}`", body = HealthAnswer),
        (status = 503, description = "Raft stopped: the node is exiting", body = HealthAnswer)))]
pub async fn healthz(State(node): State<Arc<Node>>) -> Response {
    let health = |status: &str| {
        Json(HealthAnswer {
            status: status.to_string(),
        })
    };
    if node.raft.metrics().borrow_watched().running_state.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, health("raft stopped")).into_response();
    }
    health("ok").into_response()
}

/// Readiness: a leader is known and this node applied what it knows committed.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = ReadyAnswer), (status = 503, description = "Not ready", body = ReadyAnswer)))]
pub async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let m = node.raft.metrics().borrow_watched().clone();
    let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
    let mut committed = m.local_committed.as_ref().map_or(0, |l| l.index);
    // A member whose addresses the membership does not hold yet (just
    // formed, see `bootstrap`) cannot be forwarded to: not ready either.
    let ready = node.addresses_recorded()
        && match node.leader_hint() {
            LeaderHint::Me => node.leader_now().is_some(),
            // A restarted follower knows only its own, possibly stale, commit
            // index: ask the leader for the real one.
            LeaderHint::Other { client_addr, .. } => {
                match leader_committed(&node, &client_addr).await {
                    Some(c) => {
                        committed = committed.max(c);
                        applied >= committed
                    }
                    None => false,
                }
            }
            LeaderHint::Unknown => false,
        };
    let body = ReadyAnswer {
        ready,
        leader_id: m.current_leader,
        committed_index: committed,
        applied_index: applied,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// The leader's commit index, from its cluster status.
async fn leader_committed(node: &Node, client_addr: &str) -> Option<u64> {
    let resp = node
        .http
        .get(node.cfg.client_url(client_addr, "/v1/cluster"))
        // A leader with tokens on answers peers that show the secret.
        .header(crate::network::SECRET_HEADER, &node.cfg.cluster_secret)
        .timeout(std::time::Duration::from_secs(1))
        .send()
        .await
        .ok()?;
    let cluster: ClusterAnswer = resp.json().await.ok()?;
    cluster.committed_index
}

/// This replica's table digest at its applied index. Served by the node
/// asked, never forwarded: it is for comparing replicas.
#[utoipa::path(get, path = "/v1/digest", tag = "operations",
    responses((status = 200, description = "This replica's digest", body = DigestAnswer)))]
pub async fn digest(State(node): State<Arc<Node>>) -> Json<DigestAnswer> {
    // One read guard: the index and the table it describes are from the same
    // instant (apply holds the write guard over both).
    let r = node.replica.read();
    Json(DigestAnswer {
        node_id: node.id,
        applied_index: r.last_applied.as_ref().map_or(0, |l| l.index),
        digest: crate::core::digest::table_digest(&r.table),
        locks: r.table.lock_records() as u64,
        processes: r.table.process_records() as u64,
    })
}

/// Prometheus metrics in text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    node.metrics.set_raft(raft_view(&node));
    node.metrics.set_follower_lag(&follower_lags(&node));
    // The live counts scan the table: off the async workers, in slices.
    let counting = node.clone();
    match tokio::task::spawn_blocking(move || {
        let bytes = dir_bytes(&counting.cfg.data_dir);
        (table_view(&counting), bytes)
    })
    .await
    {
        Ok((view, bytes)) => {
            node.metrics.set_table(view);
            let c = &node.cfg;
            let limits = LimitsView {
                max_locks: c.max_locks,
                max_processes: c.max_processes,
                max_waiters: c.max_waiters as u64,
            };
            node.metrics.set_node(bytes, limits);
        }
        // Keep the previous values; the scan panicking is a bug to log.
        Err(e) => tracing::error!(error = %e, "counting live records failed"),
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        node.metrics.render(),
    )
        .into_response()
}

/// On the leader, how many entries each other member is behind its last
/// log index (its whole log when nothing is known to match); empty elsewhere.
fn follower_lags(node: &Node) -> Vec<(u64, u64)> {
    let m = node.raft.metrics().borrow_watched().clone();
    let last = m.last_log_index.unwrap_or(0);
    let Some(replication) = m.replication.as_ref() else {
        return Vec::new();
    };
    replication
        .iter()
        .filter(|(id, _)| **id != node.id)
        .map(|(id, matched)| {
            let at = matched.as_ref().map_or(0, |l| l.index);
            (*id, last.saturating_sub(at))
        })
        .collect()
}

/// The size of the files under `dir` (sled keeps a handful); files that
/// vanish while counted count as 0.
pub(crate) fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Raft's current view of this node.
fn raft_view(node: &Node) -> RaftView {
    let m = node.raft.metrics().borrow_watched().clone();
    let idx = |l: &Option<crate::types::LogId>| l.as_ref().map_or(0, |l| l.index);
    RaftView {
        term: m.current_term,
        is_leader: m.current_leader == Some(node.id),
        leader_id: m.current_leader.unwrap_or(0),
        last_log_index: m.last_log_index.unwrap_or(0),
        commit_index: idx(&m.local_committed),
        applied_index: idx(&m.last_applied),
        snapshot_index: idx(&m.snapshot),
    }
}

/// Records looked at per hold of the table's read lock while counting:
/// applying commands waits for the write lock, so no hold may be long.
const COUNT_SLICE: usize = 4096;

/// The table and waiter gauges. The live counts are a scan (liveness depends
/// on the time asked), done in slices that each take the read lock afresh;
/// records written between slices may be counted or not, as for any gauge.
fn table_view(node: &Node) -> TableView {
    let at = {
        let r = node.replica.read();
        node.leader_now().unwrap_or_else(|| r.table.now())
    };
    let live_locks = count_in_slices(|after| {
        let r = node.replica.read();
        r.table.live_locks_in_slice(after, COUNT_SLICE, at)
    });
    let live_processes = count_in_slices(|after| {
        let r = node.replica.read();
        r.table.live_processes_in_slice(after, COUNT_SLICE, at)
    });
    let r = node.replica.read();
    TableView {
        live_locks,
        live_processes,
        lock_records: r.table.lock_records() as u64,
        process_records: r.table.process_records() as u64,
        waiters: node.waiters.len() as u64,
    }
}

/// Sums `slice` over the whole table, each call resuming after the last key.
fn count_in_slices(mut slice: impl FnMut(Option<&str>) -> (usize, Option<String>)) -> u64 {
    let mut total = 0u64;
    let mut after: Option<String> = None;
    loop {
        let (n, last) = slice(after.as_deref());
        total += n as u64;
        match last {
            Some(k) => after = Some(k),
            None => return total,
        }
    }
}
