//! Operator routes: liveness, readiness, metrics.

use openraft::async_runtime::WatchReceiver;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::answers::{DigestAnswer, ReadyAnswer};
use crate::node::{LeaderHint, Node};

/// Liveness: 200 while the process runs and its Raft core has not stopped
/// (a stopped core makes the node exit; 503 covers the moment before).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive"), (status = 503, description = "Raft stopped: the node is exiting")))]
pub async fn healthz(State(node): State<Arc<Node>>) -> Response {
    if node.raft.metrics().borrow_watched().running_state.is_err() {
        let body = Json(json!({"status": "raft stopped"}));
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    Json(json!({"status": "ok"})).into_response()
}

/// Readiness: a leader is known and this node applied what it knows committed.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = ReadyAnswer), (status = 503, description = "Not ready", body = ReadyAnswer)))]
pub async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let m = node.raft.metrics().borrow_watched().clone();
    let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
    let mut committed = m.local_committed.as_ref().map_or(0, |l| l.index);
    let ready = match node.leader_hint() {
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
        .get(format!("http://{client_addr}/v1/cluster"))
        .timeout(std::time::Duration::from_secs(1))
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = resp.json().await.ok()?;
    v["committed_index"].as_u64()
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
    let m = node.raft.metrics().borrow_watched().clone();
    let (live_locks, live_processes, lock_records, process_records) = {
        let r = node.replica.read();
        let at = node.leader_now().unwrap_or_else(|| r.table.now());
        (
            r.table.live_lock_count(at),
            r.table.live_process_count(at),
            r.table.lock_records(),
            r.table.process_records(),
        )
    };
    let fs = &node.flusher.stats;
    let idx = |l: &Option<crate::types::LogId>| l.as_ref().map_or(0, |l| l.index) as f64;
    let gauges = [
        (
            "locker_raft_term",
            "Current Raft term.",
            m.current_term as f64,
        ),
        (
            "locker_raft_is_leader",
            "1 if this node is the leader.",
            f64::from(u8::from(m.current_leader == Some(node.id))),
        ),
        (
            "locker_raft_leader_id",
            "Id of the known leader (0 if none).",
            m.current_leader.unwrap_or(0) as f64,
        ),
        (
            "locker_raft_last_log_index",
            "Last log index on this node.",
            m.last_log_index.unwrap_or(0) as f64,
        ),
        (
            "locker_raft_commit_index",
            "Committed log index known to this node.",
            idx(&m.local_committed),
        ),
        (
            "locker_raft_applied_index",
            "Last applied log index.",
            idx(&m.last_applied),
        ),
        (
            "locker_raft_snapshot_index",
            "Index of the last snapshot.",
            idx(&m.snapshot),
        ),
        (
            "locker_live_locks",
            "Live locks at the current time.",
            live_locks as f64,
        ),
        (
            "locker_live_processes",
            "Live processes at the current time.",
            live_processes as f64,
        ),
        (
            "locker_lock_records",
            "Lock records, including expired ones not yet swept.",
            lock_records as f64,
        ),
        (
            "locker_process_records",
            "Process records, including dead ones not yet swept.",
            process_records as f64,
        ),
        (
            "locker_waiters",
            "Blocking acquires waiting on this node.",
            node.waiters.len() as f64,
        ),
        (
            "locker_storage_fsyncs_total",
            "fsyncs of the data directory.",
            fs.fsyncs.load(Ordering::Relaxed) as f64,
        ),
        (
            "locker_storage_entries_flushed_total",
            "Log entries made durable.",
            fs.entries.load(Ordering::Relaxed) as f64,
        ),
        (
            "locker_storage_fsync_seconds_total",
            "Time spent in fsync.",
            fs.fsync_micros.load(Ordering::Relaxed) as f64 / 1e6,
        ),
    ];
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics.render(&gauges),
    )
        .into_response()
}
