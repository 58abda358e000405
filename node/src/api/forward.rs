//! Any node serves any request: a follower hands requests that need the
//! leader (writes and linearizable reads) to it, and answers 503 within a
//! bounded time when there is none.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use locker_proto::limits::{MAX_BODY_BYTES, WAIT_MS};
use locker_proto::ErrorCode;

use super::error::{ApiError, LeaderElsewhere};
use crate::network::same_secret;
use crate::node::{LeaderHint, Node};
use crate::types::NodeId;
use sha2::{Digest, Sha256};

/// Marks a request a follower forwarded, so it is never forwarded twice.
/// Its value is `{node id}:{proof}` (see [`forward_proof`]): a client cannot
/// forge it, so it cannot turn its own request into a 503 this way.
pub const FORWARDED_HEADER: &str = "x-locker-forwarded-by";

/// Hex SHA-256 over a domain tag, the cluster secret and the forwarding
/// node's id: proves the sender holds the secret without sending it.
fn forward_proof(secret: &str, from: NodeId) -> String {
    let mut h = Sha256::new();
    h.update(b"locker-forwarded-by\0");
    h.update(secret.as_bytes());
    h.update(b"\0");
    h.update(from.to_be_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn forwarded_header_value(node: &Node) -> String {
    format!(
        "{}:{}",
        node.id,
        forward_proof(&node.cfg.cluster_secret, node.id)
    )
}

/// Whether a peer holding the cluster secret forwarded this request. A
/// header without a valid proof (a client's) is ignored.
pub(super) fn forwarded_by_peer(node: &Node, headers: &HeaderMap) -> bool {
    let Some((from, proof)) = headers
        .get(FORWARDED_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(':'))
    else {
        return false;
    };
    let Ok(from) = from.parse::<NodeId>() else {
        return false;
    };
    let expected = forward_proof(&node.cfg.cluster_secret, from);
    same_secret(proof.as_bytes(), expected.as_bytes())
}

/// Set by a leader on its answer to a forwarded request whose handler found
/// another node leading before doing anything (see [`LeaderElsewhere`]).
const MOVED_HEADER: &str = "x-locker-leader-moved";

/// Whether nothing was done for this answer because another node leads.
fn moved(resp: &Response) -> bool {
    resp.extensions().get::<LeaderElsewhere>().is_some()
}

fn needs_leader(req: &Request) -> bool {
    let path = req.uri().path();
    // Status and digests describe the node asked, never the leader.
    let local = [
        "/v1/cluster",
        "/v1/cluster/nodes",
        "/v1/digest",
        "/v1/watch",
    ];
    if !path.starts_with("/v1/") || (req.method() == Method::GET && local.contains(&path)) {
        return false;
    }
    if req.method() == Method::GET {
        return !super::input::is_stale_read(req.uri());
    }
    true
}

pub async fn route_to_leader(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    if !needs_leader(&req) {
        return next.run(req).await;
    }
    let started = tokio::time::Instant::now();
    let mut deadline = started + Duration::from_millis(node.cfg.leader_wait_ms);
    // However often leadership moves, no re-run starts later than the
    // request's wait, a leader wait and a write after it arrived.
    let latest = started
        + Duration::from_millis(
            node.cfg
                .leader_wait_ms
                .saturating_add(node.cfg.write_timeout_ms),
        );
    let forwarded = forwarded_by_peer(&node, req.headers());
    let (parts, body) = req.into_parts();
    // Buffered once so it can be retried against a new leader.
    let mut body = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            )
            .into_response()
        }
    };
    let latest = latest + Duration::from_millis(body_wait_ms(&body));
    loop {
        let ran = tokio::time::Instant::now();
        let served = match node.leader_hint() {
            LeaderHint::Me => {
                let mut resp = next.clone().run(rebuild(&parts, body.clone())).await;
                if forwarded && moved(&resp) {
                    // Tell the follower that forwarded it: nothing was done
                    // here, so it may send the request to the new leader.
                    resp.headers_mut()
                        .insert(MOVED_HEADER, header::HeaderValue::from_static("1"));
                }
                Some(resp)
            }
            LeaderHint::Other { id, client_addr } if !forwarded => {
                match forward(&node, &parts, body.clone(), &client_addr).await {
                    Ok(resp) => Some(resp),
                    Err(e) => {
                        tracing::debug!(leader = id, error = %e, "forward failed; retrying");
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(resp) = served {
            // The handler (here or at the leader) found another node leading
            // before doing anything: send the request there.
            if forwarded || !moved(&resp) {
                return resp;
            }
            // A blocking acquire may have waited in line for long: that was
            // not time spent looking for a leader, but it is time of its
            // wait_ms, which the next leader must not grant afresh (the
            // client's timeout is set just above the wait).
            deadline = (deadline + ran.elapsed()).min(latest);
            body = less_wait(body, started.elapsed());
            if tokio::time::Instant::now() >= deadline {
                return resp;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let why = if forwarded {
                "this node is not the leader (request was forwarded here)"
            } else {
                "no leader is reachable (election in progress or this node is cut off)"
            };
            return ApiError::new(ErrorCode::NoLeader, why).into_response();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `wait_ms` of a raw, unvalidated body, capped at the maximum (the
/// leader refuses more), 0 when there is none: sums with it cannot overflow.
fn body_wait_ms(body: &Bytes) -> u64 {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("wait_ms").and_then(|w| w.as_u64()))
        .unwrap_or(0)
        .min(*WAIT_MS.end())
}

/// The body with its `wait_ms` (if it has one) reduced by `spent`, for a
/// request served again after it already waited that long. Anything that is
/// not a JSON object with a whole `wait_ms` is left to the handler to judge.
fn less_wait(body: Bytes, spent: Duration) -> Bytes {
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_slice(&body) else {
        return body;
    };
    let Some(wait) = fields.get("wait_ms").and_then(serde_json::Value::as_u64) else {
        return body;
    };
    let spent = u64::try_from(spent.as_millis()).unwrap_or(u64::MAX);
    fields.insert("wait_ms".into(), wait.saturating_sub(spent).into());
    match serde_json::to_vec(&fields) {
        Ok(v) => Bytes::from(v),
        Err(_) => body,
    }
}

/// A copy of the request, so it can be served here or sent elsewhere again.
fn rebuild(parts: &Parts, body: Bytes) -> Request {
    let mut req = Request::new(Body::from(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.extensions_mut() = parts.extensions.clone();
    req
}

/// Sends the request to the leader. `Err` only when it surely did not arrive
/// (the connection failed), so retrying cannot apply a write twice.
async fn forward(
    node: &Node,
    parts: &Parts,
    body: Bytes,
    client_addr: &str,
) -> Result<Response, String> {
    node.metrics.forwarded.inc();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // Raw, unvalidated input: the leader refuses a wait over the maximum, so
    // cap it here and add without overflow (u64::MAX used to panic).
    let wait_ms = body_wait_ms(&body);
    let budget = node
        .cfg
        .leader_wait_ms
        .saturating_add(node.cfg.write_timeout_ms)
        .saturating_add(wait_ms)
        .saturating_add(1000);
    // A backup is streamed through, for as long as it takes to send.
    let streamed = parts.uri.path() == "/v1/backup";
    let limit = if streamed {
        STREAM_LIMIT
    } else {
        Duration::from_millis(budget)
    };
    let mut rb = node
        .http
        .request(parts.method.clone(), node.cfg.client_url(client_addr, path))
        .header(FORWARDED_HEADER, forwarded_header_value(node))
        .timeout(limit)
        .body(body);
    for name in [
        header::CONTENT_TYPE,
        // The leader checks the token again and records its name.
        header::AUTHORIZATION,
        header::HeaderName::from_static("x-request-id"),
        header::HeaderName::from_static(crate::network::SECRET_HEADER),
    ] {
        if let Some(v) = parts.headers.get(&name) {
            rb = rb.header(name, v.clone());
        }
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Err(e.to_string()),
        Err(e) => {
            // It may have arrived: the outcome is unknown, do not retry.
            return Ok(ApiError::new(
                ErrorCode::Timeout,
                format!("the leader did not answer in time: {e}"),
            )
            .into_response());
        }
    };
    let relayed = relay(resp, streamed).await?;
    if crate::store::crash::fault("api::forward::lose_answer") {
        // Test builds only: the node forwarded to answered, whatever it
        // answered (a write applied, a read, a refusal, a moved answer),
        // and its answer is lost on the way back, as in a cut that falls
        // between the two; answered as a cut-off answer is.
        return Ok(ApiError::new(
            ErrorCode::Timeout,
            "the leader's answer was cut off (fault point api::forward::lose_answer)",
        )
        .into_response());
    }
    Ok(relayed)
}

/// The leader's answer as ours: status, the headers a client reads, and the
/// body (a backup streamed on, anything else read whole).
async fn relay(resp: reqwest::Response, streamed: bool) -> Result<Response, String> {
    let status = resp.status();
    // Only a peer we chose sees our forwarding mark, and only it answers here.
    let resp_moved =
        status == StatusCode::SERVICE_UNAVAILABLE && resp.headers().contains_key(MOVED_HEADER);
    let mut out = Response::builder().status(status);
    for name in [
        header::CONTENT_TYPE,
        header::RETRY_AFTER,
        header::CONTENT_DISPOSITION,
        header::HeaderName::from_static(super::backup::BACKUP_INDEX_HEADER),
    ] {
        if let Some(v) = resp.headers().get(&name) {
            out = out.header(name, v.clone());
        }
    }
    if streamed && status.is_success() {
        // Chunk by chunk: the follower never holds the file either.
        return out.body(pass_through(resp)).map_err(|e| e.to_string());
    }
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return Ok(ApiError::new(
                ErrorCode::Timeout,
                format!("the leader's answer was cut off: {e}"),
            )
            .into_response())
        }
    };
    let mut out = out.body(Body::from(bytes)).map_err(|e| e.to_string())?;
    if resp_moved {
        out.extensions_mut().insert(LeaderElsewhere);
    }
    Ok(out)
}

/// How long a forwarded backup may take to pass through.
const STREAM_LIMIT: Duration = Duration::from_secs(3600);

/// The leader's answer as a body streamed on: an error ends it in an error
/// (the client sees a cut body, never a shorter whole one).
fn pass_through(resp: reqwest::Response) -> Body {
    let chunks = futures::stream::unfold(Some(resp), |state| async move {
        let mut resp = state?;
        match resp.chunk().await {
            Ok(Some(c)) => Some((Ok(c), Some(resp))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    Body::from_stream(chunks)
}
