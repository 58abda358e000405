//! Protections around both ports that are not about locks: authentication
//! failures and refused peer versions logged at warn without letting a
//! flood of them flood the log.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

/// At most one warning per source and port in this long; the next one says
/// how many failures it did not report.
const AUTH_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Sources remembered at most: a spray from many addresses cannot grow the
/// table without bound (it is swept, then cleared, when full).
const AUTH_LOG_SOURCES: usize = 4096;

struct Window {
    started: Instant,
    suppressed: u64,
}

/// Per (kind of warning, source address): when its last warning was logged
/// and how many were left out since.
static WARNED: LazyLock<Mutex<HashMap<(&'static str, IpAddr), Window>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Whether a warning of `kind` from `source` is the first in its
/// [`AUTH_LOG_WINDOW`]: `Some(how many were left out before it)` if it is to
/// be logged, `None` if it is left out.
fn first_in_window(kind: &'static str, ip: IpAddr) -> Option<u64> {
    let now = Instant::now();
    // A poisoned lock only means another thread panicked mid-update of
    // this log-only table: keep using it.
    let mut seen = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.len() >= AUTH_LOG_SOURCES {
        seen.retain(|_, w| now.duration_since(w.started) < AUTH_LOG_WINDOW);
        if seen.len() >= AUTH_LOG_SOURCES {
            seen.clear();
        }
    }
    let fresh = Window {
        started: now,
        suppressed: 0,
    };
    match seen.get_mut(&(kind, ip)) {
        Some(w) if now.duration_since(w.started) < AUTH_LOG_WINDOW => {
            w.suppressed += 1;
            None
        }
        Some(w) => Some(std::mem::replace(w, fresh).suppressed),
        None => {
            seen.insert((kind, ip), fresh);
            Some(0)
        }
    }
}

fn source_ip(source: Option<SocketAddr>) -> IpAddr {
    source.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |s| s.ip())
}

/// Logs an authentication failure at warn, at most once per source and
/// port every [`AUTH_LOG_WINDOW`].
pub fn record_auth_failure(port: &'static str, source: Option<SocketAddr>, path: &str) {
    let ip = source_ip(source);
    let Some(suppressed) = first_in_window(port, ip) else {
        return;
    };
    tracing::warn!(
        port,
        source = %ip,
        path,
        not_logged_since_last = suppressed,
        "authentication failed: missing or wrong cluster secret or token"
    );
}

/// Logs a request refused for its token's roles or prefixes (403) at warn,
/// at most once per source every [`AUTH_LOG_WINDOW`].
pub fn record_refusal(source: Option<SocketAddr>, path: &str) {
    let ip = source_ip(source);
    let Some(suppressed) = first_in_window("client-forbidden", ip) else {
        return;
    };
    tracing::warn!(
        source = %ip,
        path,
        not_logged_since_last = suppressed,
        "request refused: the token lacks the role or the key is outside its prefixes"
    );
}

/// Logs a peer request refused for its protocol or snapshot format at
/// warn, at most once per source every [`AUTH_LOG_WINDOW`]: a newer leader
/// retries every heartbeat.
pub fn record_version_refusal(source: Option<SocketAddr>, msg: &str) {
    peer_refusal("peer-version", "of a newer protocol or format", source, msg);
}

/// Logs a peer request refused because its sender belongs to another
/// cluster, at warn, at most once per source every [`AUTH_LOG_WINDOW`].
pub fn record_cluster_refusal(source: Option<SocketAddr>, msg: &str) {
    peer_refusal("peer-cluster", "from another cluster", source, msg);
}

/// A refused peer request of `kind`, logged once per source and window.
fn peer_refusal(kind: &'static str, what: &str, source: Option<SocketAddr>, msg: &str) {
    let ip = source_ip(source);
    let Some(suppressed) = first_in_window(kind, ip) else {
        return;
    };
    tracing::warn!(
        source = %ip,
        %msg,
        not_logged_since_last = suppressed,
        "peer request {what} refused"
    );
}

/// Middleware for the peer port: a 401 answer is an authentication failure.
pub async fn peer_auth_failures(req: Request, next: Next) -> Response {
    log_auth_failures("peer", req, next).await
}

/// Middleware for the client port (membership routes answer 401 without
/// the cluster secret; with tokens on, any route without a known token).
/// Refusals for lack of a role or prefix (403) are logged alike.
pub async fn client_auth_failures(req: Request, next: Next) -> Response {
    log_auth_failures("client", req, next).await
}

async fn log_auth_failures(port: &'static str, req: Request, next: Next) -> Response {
    let source = crate::serve::peer_of(&req);
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    match resp.status() {
        StatusCode::UNAUTHORIZED => record_auth_failure(port, source, &path),
        StatusCode::FORBIDDEN => record_refusal(source, &path),
        _ => {}
    }
    resp
}
