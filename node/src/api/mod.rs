//! The HTTP/JSON client API (docs/protocol.md, "HTTP API"): routes, validation, request
//! logging and metrics, and forwarding to the leader.

mod access;
mod answers;
mod backup;
mod cluster;
mod error;
mod forward;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod hygiene;
mod input;
mod locks;
mod openapi;
mod ops;
mod processes;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use locker_proto::limits::MAX_BODY_BYTES;
use locker_proto::ErrorCode;

pub(crate) use answers::wire_lock;
pub use error::ApiError;
pub use openapi::ApiDoc;

use crate::node::Node;

/// The client API: every route, with request ids and metrics around them and
/// forwarding to the leader inside, so every node serves every route.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route(
            "/v1/processes/{process_hash}",
            put(processes::keepalive).delete(processes::end),
        )
        .route("/v1/processes", get(processes::list))
        .route("/v1/locks/{key}/acquire", post(locks::acquire))
        .route("/v1/locks/{key}/extend", post(locks::extend))
        .route("/v1/locks/{key}/release", post(locks::release))
        .route("/v1/locks/{key}", get(locks::read))
        .route("/v1/locks", get(locks::list))
        .route("/v1/owners/{owner_hash}", get(locks::owner))
        .route("/v1/cluster", get(cluster::status))
        .route("/v1/cluster/nodes", get(cluster::nodes))
        .route("/v1/cluster/members", post(cluster::add_member))
        .route("/v1/cluster/members/{id}", delete(cluster::remove_member))
        .route("/v1/cluster/leader", post(cluster::transfer_leader))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/digest", get(ops::digest))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/read-index", get(watch::read_index))
        .route("/v1/backup", get(backup::backup))
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            node.clone(),
            forward::route_to_leader,
        ))
        // Before forwarding: the node that received the request checks it.
        .layer(middleware::from_fn_with_state(
            node.clone(),
            access::check_access,
        ))
        // The dashboard's files: neither forwarded nor behind a token.
        .merge(crate::ui::router())
        .layer(middleware::from_fn(require_json))
        .layer(middleware::from_fn_with_state(node.clone(), check_host))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(hygiene::check_request))
        .layer(middleware::from_fn_with_state(node.clone(), observe))
        .layer(middleware::from_fn(crate::guard::client_auth_failures))
        .layer(middleware::from_fn(hygiene::json_errors))
        .with_state(node)
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such route; see /v1/cluster, /v1/locks, /v1/processes, /v1/owners",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take that method",
    )
}

/// POST and PUT bodies must be JSON, said so in `Content-Type`. A browser
/// page may send a cross-site `text/plain` or form POST without asking the
/// server first (CSRF); only other content types need a CORS preflight,
/// which this API never grants. A request without a body and without a
/// content type (`curl -X POST` of an acquire with all defaults) is fine.
async fn require_json(req: Request, next: Next) -> Response {
    let writes = matches!(*req.method(), Method::POST | Method::PUT);
    if writes && !json_or_no_body(req.headers()) {
        return ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "a POST or PUT body must be sent with Content-Type: application/json",
        )
        .into_response();
    }
    next.run(req).await
}

fn json_or_no_body(h: &HeaderMap) -> bool {
    match h.get(header::CONTENT_TYPE) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")),
        None => {
            !h.contains_key(header::TRANSFER_ENCODING)
                && h.get(header::CONTENT_LENGTH)
                    .is_none_or(|n| n.as_bytes() == b"0")
        }
    }
}

/// DNS rebinding: a web page on a name its owner points at 127.0.0.1 could
/// talk to a node on loopback as if it were the page's own site. The page's
/// name is in `Host`, so only known names are answered (421 otherwise); the
/// probes (`/healthz`, `/readyz`, `/metrics`) stay open.
async fn check_host(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics");
    if probe || host_allowed(&node.cfg, req.headers()) {
        return next.run(req).await;
    }
    ApiError::new(
        ErrorCode::HostNotAllowed,
        "this node does not answer to that Host; see --allowed-hosts",
    )
    .into_response()
}

fn host_allowed(cfg: &crate::config::NodeConfig, h: &HeaderMap) -> bool {
    if cfg.allowed_hosts.is_empty() && !cfg.client_addr.ip().is_loopback() {
        return true;
    }
    // No Host at all is HTTP/1.0, which no browser sends.
    let Some(v) = h.get(header::HOST) else {
        return true;
    };
    let Ok(v) = v.to_str() else {
        return false;
    };
    let host = host_part(v).to_ascii_lowercase();
    // A rebinding page always has a name: an IP literal cannot be one.
    host == "localhost"
        || host.parse::<std::net::IpAddr>().is_ok()
        || host_part(&cfg.advertised_client_addr()).eq_ignore_ascii_case(&host)
        || cfg
            .allowed_hosts
            .iter()
            .any(|a| host_part(a.trim()).eq_ignore_ascii_case(&host))
}

/// `name:port` → `name`, `[::1]:7070` → `::1`.
fn host_part(v: &str) -> &str {
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match v.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => v,
    }
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// Gives every request an id (kept from `x-request-id` if the caller sent
/// one), a tracing span, a log line and its metrics.
async fn observe(State(node): State<Arc<Node>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = match req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        Some(id) => id.to_string(),
        None => {
            let id = format!(
                "n{}-{}",
                node.id,
                REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
            );
            if let Ok(v) = HeaderValue::from_str(&id) {
                req.headers_mut().insert("x-request-id", v);
            }
            id
        }
    };
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let span = tracing::info_span!("request", request_id = %id, %method, path = %req.uri().path());
    let mut resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let took = started.elapsed();
    let status = resp.status();
    node.metrics
        .observe_request(&method, &route, status.as_u16(), took);
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                ms = took.as_millis() as u64,
                "request failed"
            );
        } else {
            tracing::debug!(
                status = status.as_u16(),
                ms = took.as_millis() as u64,
                "request done"
            );
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
