//! Cluster status and membership changes.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use locker_proto::{
    AddMemberRequest, ClusterAnswer, ErrorAnswer, ErrorCode, LeaderAnswer, Member, NodeView,
    NodesAnswer, ReadyAnswer, TransferLeaderRequest,
};
use openraft::ChangeMembers;

use super::answers::raft_state;
use super::error::ApiError;
use super::input;
use super::openapi::codes;
use crate::network::{fetch_peer_info, same_secret, SECRET_HEADER};
use crate::node::Node;
use crate::types::PeerNode;

/// This node's view of the cluster, from its Raft metrics. Never forwarded:
/// it is how an operator sees what each node believes.
pub fn cluster_json(node: &Node) -> ClusterAnswer {
    let m = node.raft.metrics();
    let m = m.borrow_watched();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, n)| Member {
            id: *id,
            client_addr: n.client_addr.clone(),
            peer_addr: n.peer_addr.clone(),
            voter: voters.contains(id),
        })
        .collect();
    let idx = |l: &Option<crate::types::LogId>| l.as_ref().map(|l| l.index);
    ClusterAnswer {
        node_id: node.id,
        leader_id: m.current_leader,
        term: m.current_term,
        state: raft_state(m.state),
        members,
        last_log_index: m.last_log_index,
        last_applied_index: idx(&m.last_applied),
        committed_index: idx(&m.local_committed),
        snapshot_index: idx(&m.snapshot),
        purged_index: idx(&m.purged),
    }
}

/// This node's view of the cluster.
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster",
    responses((status = 200, description = "Cluster status", body = ClusterAnswer)))]
pub async fn status(State(node): State<Arc<Node>>) -> Json<ClusterAnswer> {
    Json(cluster_json(&node))
}

/// Every member's own view of the cluster, each asked on its client port
/// (one second each, all at once; this node's own without asking), so an
/// operator sees from one node who is up, what each believes and how far
/// each has applied. The caller's `Authorization` travels with the asks.
#[utoipa::path(get, path = "/v1/cluster/nodes", tag = "cluster",
    responses((status = 200, description = "Every member's view", body = NodesAnswer)))]
pub async fn nodes(State(node): State<Arc<Node>>, headers: HeaderMap) -> Json<NodesAnswer> {
    let own = cluster_json(&node);
    let auth = headers.get(axum::http::header::AUTHORIZATION).cloned();
    let asks = own.members.iter().map(|m| {
        let (node, auth, own) = (node.clone(), auth.clone(), own.clone());
        let (id, client_addr) = (m.id, m.client_addr.clone());
        async move {
            let asked = if id == node.id {
                Ok(own)
            } else {
                ask_cluster(&node, &client_addr, auth).await
            };
            NodeView {
                id,
                client_addr,
                reachable: asked.is_ok(),
                error: asked.as_ref().err().cloned(),
                cluster: asked.ok(),
            }
        }
    });
    Json(NodesAnswer {
        node_id: node.id,
        nodes: futures::future::join_all(asks).await,
    })
}

/// One member's `GET /v1/cluster`.
async fn ask_cluster(
    node: &Node,
    client_addr: &str,
    auth: Option<axum::http::HeaderValue>,
) -> Result<ClusterAnswer, String> {
    if client_addr.is_empty() {
        return Err("its client address is not recorded yet".to_string());
    }
    let mut req = node
        .http
        .get(node.cfg.client_url(client_addr, "/v1/cluster"))
        .timeout(Duration::from_secs(1));
    if let Some(a) = auth {
        req = req.header(reqwest::header::AUTHORIZATION, a.as_bytes());
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("it answered {}", resp.status()));
    }
    resp.json::<ClusterAnswer>()
        .await
        .map_err(|e| e.to_string())
}

/// Whether the request carries the cluster secret.
pub(super) fn has_secret(node: &Node, headers: &HeaderMap) -> bool {
    let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes());
    given.is_some_and(|g| same_secret(g, node.cfg.cluster_secret.as_bytes()))
}

/// Membership changes are for operators: they need the cluster secret too.
fn require_secret(node: &Node, headers: &HeaderMap) -> Result<(), ApiError> {
    if !has_secret(node, headers) {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            format!("membership changes need the cluster secret in the {SECRET_HEADER} header"),
        ));
    }
    Ok(())
}

fn membership_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::MembershipChangeFailed, e.to_string())
}

/// Add a node (started with `--join`): learner, catch up, then voter.
#[utoipa::path(post, path = "/v1/cluster/members", tag = "cluster",
    params(("x-locker-cluster-secret" = String, Header, description = "The cluster secret")),
    request_body = AddMemberRequest,
    responses(
        (status = 200, description = "The new cluster status", body = ClusterAnswer),
        (status = 400, description = "Bad input or unreachable node", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::InvalidNode, ErrorCode::InvalidJson]))))),
        (status = 401, description = "Missing or wrong secret", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Unauthorized]))))),
        (status = 403, description = "FORBIDDEN (tokens on): the token lacks the admin role", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Forbidden]))))),
        (status = 503, description = "Change failed or no leader", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::MembershipChangeFailed, ErrorCode::NoLeader, ErrorCode::Timeout])))))))]
pub async fn add_member(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_secret(&node, &headers)?;
    let b: AddMemberRequest = input::json_body(body, false)?;
    if b.id == 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidNode,
            "node id 0 is reserved",
        ));
    }
    let info = fetch_peer_info(&node.http, &node.cfg, &b.peer_addr)
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidNode,
                format!("cannot reach {}: {e}", b.peer_addr),
            )
        })?;
    if info.node_id != b.id {
        return Err(ApiError::new(
            ErrorCode::InvalidNode,
            format!("{} is node {}, not {}", b.peer_addr, info.node_id, b.id),
        ));
    }
    if let (Some(theirs), Some(ours)) = (&info.cluster_id, node.marker.cluster_id()) {
        if theirs != ours {
            return Err(ApiError::new(
                ErrorCode::InvalidNode,
                format!(
                    "{} (node {}) belongs to cluster {theirs}, not to this cluster ({ours}): \
                     give it an empty data directory first",
                    b.peer_addr, b.id
                ),
            ));
        }
    }
    let peer = PeerNode {
        peer_addr: info.peer_addr,
        client_addr: info.client_addr,
    };
    if is_member(&node, b.id) {
        update_member(&node, b.id, peer).await?;
        return Ok(Json(cluster_json(&node)).into_response());
    }
    tracing::info!(id = b.id, %peer, "adding a learner");
    node.raft
        .add_learner(b.id, peer, true)
        .await
        .map_err(membership_error)?;
    tracing::info!(id = b.id, "learner caught up; promoting to voter");
    node.raft
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([b.id])), false)
        .await
        .map_err(membership_error)?;
    Ok(Json(cluster_json(&node)).into_response())
}

fn is_member(node: &Node, id: u64) -> bool {
    let m = node.raft.metrics();
    let m = m.borrow_watched();
    m.membership_config.membership().get_node(&id).is_some()
}

/// Adding a node that is already a member records the addresses it answers
/// with now (a member of the initial cluster registering its client address,
/// or a node moved to a new address), and makes a learner a voter. The
/// addresses were just checked to answer as node `id`, so the change cannot
/// point the id at another node.
async fn update_member(node: &Node, id: u64, peer: PeerNode) -> Result<(), ApiError> {
    let known = {
        let m = node.raft.metrics();
        let m = m.borrow_watched();
        m.membership_config.membership().get_node(&id).cloned()
    };
    if known.as_ref() != Some(&peer) {
        tracing::info!(id, %peer, "recording a member's addresses");
        let change = ChangeMembers::SetNodes(std::collections::BTreeMap::from([(id, peer)]));
        node.raft
            .change_membership(change, false)
            .await
            .map_err(membership_error)?;
    }
    let voter = {
        let m = node.raft.metrics();
        let m = m.borrow_watched();
        let is_voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == id);
        is_voter
    };
    if !voter {
        tracing::info!(id, "promoting a learner to voter");
        node.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
    }
    Ok(())
}

/// Remove a node from the cluster.
#[utoipa::path(delete, path = "/v1/cluster/members/{id}", tag = "cluster",
    params(("id" = u64, Path, description = "Node id"), ("x-locker-cluster-secret" = String, Header, description = "The cluster secret")),
    responses(
        (status = 200, description = "The new cluster status", body = ClusterAnswer),
        (status = 400, description = "An id that is not a node id", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::InvalidNode]))))),
        (status = 401, description = "Missing or wrong secret", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Unauthorized]))))),
        (status = 403, description = "FORBIDDEN (tokens on): the token lacks the admin role", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Forbidden]))))),
        (status = 404, description = "No such member", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::UnknownNode]))))),
        (status = 503, description = "Change failed or no leader", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::MembershipChangeFailed, ErrorCode::NoLeader, ErrorCode::Timeout])))))))]
pub async fn remove_member(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    require_secret(&node, &headers)?;
    let id: u64 = input::path_param(path, "node id", ErrorCode::InvalidNode)?
        .parse()
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidNode,
                "the node id must be a positive integer",
            )
        })?;
    let voter = {
        let m = node.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(ApiError::new(
                ErrorCode::UnknownNode,
                format!("node {id} is not a member of the cluster"),
            ));
        }
        let is_voter = membership.voter_ids().any(|v| v == id);
        is_voter
    };
    // A voter leaves the voters and the membership at once (not kept as a
    // learner); a learner only has to leave the membership.
    let change = if voter {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    tracing::info!(id, voter, "removing a member");
    node.raft
        .change_membership(change, false)
        .await
        .map_err(membership_error)?;
    Ok(Json(cluster_json(&node)).into_response())
}

/// Make node `id` the leader (openraft leadership transfer). Answers once it
/// leads with its takeover marker applied, so it serves at once.
#[utoipa::path(post, path = "/v1/cluster/leader", tag = "cluster",
    params(("x-locker-cluster-secret" = String, Header, description = "The cluster secret")),
    request_body = TransferLeaderRequest,
    responses(
        (status = 200, description = "Node `id` leads and serves", body = LeaderAnswer),
        (status = 400, description = "Bad input, or the node is not a voter", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::InvalidNode, ErrorCode::InvalidJson]))))),
        (status = 401, description = "Missing or wrong secret", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Unauthorized]))))),
        (status = 403, description = "FORBIDDEN (tokens on): the token lacks the admin role", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Forbidden]))))),
        (status = 404, description = "No such member", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::UnknownNode]))))),
        (status = 503, description = "No leader, or the transfer did not finish in time", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::MembershipChangeFailed, ErrorCode::NoLeader, ErrorCode::Timeout])))))))]
pub async fn transfer_leader(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_secret(&node, &headers)?;
    let b: TransferLeaderRequest = input::json_body(body, false)?;
    let target_addr = voter_client_addr(&node, b.id)?;
    tracing::info!(to = b.id, "leadership transfer requested");
    // Bounded by what a forwarding follower waits for our answer.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(node.cfg.write_timeout_ms);
    let mut triggered_at: Option<tokio::time::Instant> = None;
    loop {
        if leads_and_serves(&node, b.id, &target_addr).await {
            return Ok(Json(LeaderAnswer { leader_id: b.id }).into_response());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(ApiError::new(
                ErrorCode::Timeout,
                format!("node {} did not take over in time", b.id),
            ));
        }
        // (Re)ask while we still lead: a lost transfer message is retried.
        let due = triggered_at.is_none_or(|t| now >= t + Duration::from_secs(1));
        if b.id != node.id && node.raft.is_leader() && due {
            node.raft
                .trigger()
                .transfer_leader(b.id)
                .await
                .map_err(membership_error)?;
            triggered_at = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The client address of voter `id`: 404 for no such member, 400 for a learner.
fn voter_client_addr(node: &Node, id: u64) -> Result<String, ApiError> {
    let m = node.raft.metrics();
    let m = m.borrow_watched();
    let membership = m.membership_config.membership();
    let Some(member) = membership.get_node(&id) else {
        return Err(ApiError::new(
            ErrorCode::UnknownNode,
            format!("node {id} is not a member of the cluster"),
        ));
    };
    if !membership.voter_ids().any(|v| v == id) {
        return Err(ApiError::new(
            ErrorCode::InvalidNode,
            format!("node {id} is a learner; only a voter can lead"),
        ));
    }
    Ok(member.client_addr.clone())
}

/// Whether node `id` leads with its takeover marker applied: asked locally
/// for this node, else through the target's own readiness.
async fn leads_and_serves(node: &Node, id: u64, client_addr: &str) -> bool {
    if id == node.id {
        return node.leader_now().is_some();
    }
    let resp = node
        .http
        .get(node.cfg.client_url(client_addr, "/readyz"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    let Ok(resp) = resp else { return false };
    if !resp.status().is_success() {
        return false;
    }
    // A leader's readiness means its takeover marker is applied.
    let ready: Option<ReadyAnswer> = resp.json().await.ok();
    ready.is_some_and(|r| r.leader_id == Some(id))
}
