//! The receiving side: the peer router, open only to holders of the cluster secret.

use std::sync::Arc;

use tokio::sync::watch;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{CLUSTER_HEADER, PEER_PROTOCOL, PROTOCOL_HEADER, SECRET_HEADER, TARGET_HEADER};
use crate::types::{NodeId, Raft, Snapshot, SnapshotMeta, Vote};

/// What the peer port's handlers share.
pub struct PeerState {
    /// This node's Raft, which the RPCs feed.
    pub raft: Raft,
    /// This node's id: an RPC addressed to another id (a stale address
    /// book) is refused with 421 instead of feeding this node another's log.
    pub node_id: NodeId,
    /// The cluster secret every request must carry.
    pub secret: String,
    /// Answered to `GET /peer/info` (bootstrap and membership changes).
    pub info: PeerInfo,
    /// False while a node that started on an empty data directory has not
    /// yet decided whether it may take part (see `bootstrap`): until then
    /// Raft RPCs are refused, so a member that lost its volume never
    /// answers a vote or acknowledges an append before it stops.
    pub admitted: watch::Receiver<bool>,
    /// Knows this node's cluster id (see [`super::CLUSTER_HEADER`]).
    pub marker: Arc<crate::store::Marker>,
}

/// What a node tells a peer about itself: who it is and whether it holds a
/// cluster (bootstrap), and its addresses (membership changes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerInfo {
    /// The node's id.
    pub node_id: NodeId,
    /// Its advertised peer address.
    pub peer_addr: String,
    /// Its advertised client address.
    pub client_addr: String,
    /// Whether this node belongs to a formed cluster (answered live).
    #[serde(default)]
    pub initialized: bool,
    /// Its cluster's id once it knows it (answered live; absent from a
    /// release before peers compared cluster ids).
    #[serde(default)]
    pub cluster_id: Option<String>,
}

/// The peer port: Raft RPCs and node info, all behind the cluster secret, on
/// an address of its own so clients never reach it.
pub fn peer_router(state: Arc<PeerState>) -> Router {
    let router = Router::new();
    // Test builds only: arm crash points at runtime (see `store::crash`).
    #[cfg(feature = "failpoints")]
    let router = router
        .route("/internal/failpoints", get(failpoints::list))
        .route(
            "/internal/failpoints/{name}",
            axum::routing::put(failpoints::arm),
        );
    router
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/pre-vote", post(pre_vote))
        // Snapshots carry the whole table (a million locks of a few hundred
        // bytes each, and more): the one body allowed past RPC_BODY_LIMIT.
        .route(
            "/raft/snapshot",
            post(snapshot).layer(DefaultBodyLimit::max(SNAPSHOT_BODY_LIMIT)),
        )
        .route("/raft/transfer-leader", post(transfer_leader))
        .route("/peer/info", get(info))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(RPC_BODY_LIMIT))
        .with_state(state)
}

/// Constant-time comparison (`subtle`), so the secret cannot be guessed byte
/// by byte from response times. Both sides are hashed first: equal-length
/// digests keep the secret's length from showing in the time too.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.as_slice().ct_eq(b.as_slice()).into()
}

async fn authenticate(State(st): State<Arc<PeerState>>, req: Request, next: Next) -> Response {
    let secret = req.headers().get(SECRET_HEADER).map(|v| v.as_bytes());
    if !secret.is_some_and(|s| same_secret(s, st.secret.as_bytes())) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong cluster secret").into_response();
    }
    // A holder of the secret: its connection is never closed to make room
    // for another (see `serve::ServeLimits::evict_unproven`).
    crate::serve::prove_connection(&req);
    if let Some(target) = req.headers().get(TARGET_HEADER) {
        if target.to_str().ok() != Some(st.node_id.to_string().as_str()) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                format!("this is node {}, not {:?}", st.node_id, target),
            )
                .into_response();
        }
    }
    if let Err(msg) = check_cluster(&st, req.headers()) {
        crate::guard::record_cluster_refusal(crate::serve::peer_of(&req), &msg);
        return (StatusCode::CONFLICT, msg).into_response();
    }
    if let Err(msg) = check_protocol(req.headers()) {
        crate::guard::record_version_refusal(crate::serve::peer_of(&req), &msg);
        return (StatusCode::BAD_REQUEST, msg).into_response();
    }
    if req.uri().path().starts_with("/raft/") && !*st.admitted.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this node started on an empty data directory and is still checking whether it \
             may take part",
        )
            .into_response();
    }
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(PROTOCOL_HEADER, HeaderValue::from(PEER_PROTOCOL));
    resp
}

/// Refuses a sender of another cluster, when both sides know theirs.
fn check_cluster(st: &PeerState, headers: &HeaderMap) -> Result<(), String> {
    let (Some(theirs), Some(ours)) = (headers.get(CLUSTER_HEADER), st.marker.cluster_id()) else {
        return Ok(());
    };
    if theirs.as_bytes() == ours.as_bytes() {
        return Ok(());
    }
    Err(format!(
        "refused: the sender belongs to cluster {}, this node (node {}) to cluster {ours}; \
         check the peer addresses in --initial-cluster and the cluster's members",
        String::from_utf8_lossy(theirs.as_bytes()),
        st.node_id
    ))
}

/// The sender's peer protocol: absent is protocol 0 (the release before
/// protocols were numbered), which this build still speaks; newer than
/// [`PEER_PROTOCOL`] is refused, naming both.
fn check_protocol(headers: &HeaderMap) -> Result<u32, String> {
    let Some(v) = headers.get(PROTOCOL_HEADER) else {
        return Ok(0);
    };
    let version = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .ok_or_else(|| format!("unreadable {PROTOCOL_HEADER} header {v:?}"))?;
    if version > PEER_PROTOCOL {
        return Err(format!(
            "refused: the sender speaks peer protocol {version}, newer than protocol {PEER_PROTOCOL}, the newest this node (locker-node {}) speaks; upgrade this node",
            env!("CARGO_PKG_VERSION")
        ));
    }
    Ok(version)
}

/// Body limit of every peer request but a snapshot: an append carries at
/// most `max_payload_entries` (1000) entries of a 64 KiB request each.
pub const RPC_BODY_LIMIT: usize = 128 << 20;

/// Body limit of a snapshot.
pub const SNAPSHOT_BODY_LIMIT: usize = 1 << 30;

/// Decodes a peer message: bincode as `bincode::serialize` writes it
/// (fixed-width integers), reading no more than the body holds (a length
/// prefix past it is an error before anything is allocated for it) and
/// refusing trailing bytes. Corrupt bytes are an error, never a panic.
pub fn decode_message<T: DeserializeOwned>(body: &[u8]) -> bincode::Result<T> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
        .with_limit(u64::try_from(body.len()).unwrap_or(u64::MAX))
        .deserialize(body)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    decode_message(body).map_err(|e| {
        Box::new((StatusCode::BAD_REQUEST, format!("bad bincode body: {e}")).into_response())
    })
}

fn answer<T: Serialize, E: std::fmt::Display>(r: Result<T, E>) -> Response {
    let r: Result<T, String> = r.map_err(|e| e.to_string());
    match bincode::serialize(&r) {
        Ok(b) => b.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(State(st): State<Arc<PeerState>>, body: Bytes) -> Response {
    if crate::store::crash::fault("network::append::refuse") {
        let msg = "fault point network::append::refuse armed: nothing appended";
        return (StatusCode::SERVICE_UNAVAILABLE, msg).into_response();
    }
    match decode(&body) {
        Ok(req) => answer(st.raft.append_entries(req).await),
        Err(r) => *r,
    }
}

async fn vote(State(st): State<Arc<PeerState>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => answer(st.raft.vote(req).await),
        Err(r) => *r,
    }
}

async fn pre_vote(State(st): State<Arc<PeerState>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => answer(st.raft.pre_vote(req).await),
        Err(r) => *r,
    }
}

async fn transfer_leader(State(st): State<Arc<PeerState>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(req) => answer(st.raft.handle_transfer_leader(req).await),
        Err(r) => *r,
    }
}

async fn snapshot(State(st): State<Arc<PeerState>>, body: Bytes) -> Response {
    let (vote, meta, data): (Vote, SnapshotMeta, Vec<u8>) = match decode(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    // A newer format is refused here, by name, rather than stopping Raft
    // with a storage error at install.
    if let Err(e) = crate::store::format::snapshot_format(&data) {
        // The source is not at hand here; one window for all senders.
        crate::guard::record_version_refusal(None, &e.to_string());
        return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    let snapshot = Snapshot {
        meta,
        snapshot: data,
    };
    answer(st.raft.install_full_snapshot(vote, snapshot).await)
}

async fn info(State(st): State<Arc<PeerState>>) -> Json<PeerInfo> {
    let mut info = st.info.clone();
    info.initialized = st.raft.is_initialized().await.unwrap_or(false);
    info.cluster_id = st.marker.cluster_id().map(str::to_string);
    Json(info)
}

#[cfg(feature = "failpoints")]
mod failpoints {
    use axum::extract::Path;
    use axum::http::StatusCode;
    use axum::Json;

    use crate::store::crash;

    /// `GET /internal/failpoints`: every crash point's name, and apart
    /// the error points (armed the same way; they fail a read instead) and
    /// the fault points (a network fault inside the node, no crash).
    pub async fn list() -> Json<serde_json::Value> {
        Json(serde_json::json!({
            "failpoints": crash::CRASH_POINTS,
            "error_points": crash::ERROR_POINTS,
            "fault_points": crash::FAULT_POINTS,
        }))
    }

    /// `PUT /internal/failpoints/{name}` with a `fail` action as text body
    /// (`return`, `1*off->return`, `20%return`, `off`).
    pub async fn arm(Path(name): Path<String>, body: String) -> (StatusCode, String) {
        match crash::arm(&name, &body) {
            Ok(()) => {
                tracing::warn!(crash_point = %name, action = %body.trim(), "crash point armed");
                (StatusCode::OK, format!("{name}={}\n", body.trim()))
            }
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn same_secret_tells_equal_from_different() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(same_secret(b"", b""));
        assert!(!same_secret(b"s3cret", b"s3creT"));
        assert!(!same_secret(b"s3cret", b"s3cret-and-more"));
        assert!(!same_secret(b"", b"x"));
    }
}
