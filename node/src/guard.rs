//! Protections around both ports that are not about locks: authentication
//! failures logged at warn without letting a flood of them flood the log.

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

/// Per (port, source address): when its last warning was logged and how
/// many failures were left out since.
static AUTH_FAILURES: LazyLock<Mutex<HashMap<(&'static str, IpAddr), Window>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Logs an authentication failure at warn, at most once per source and
/// port every [`AUTH_LOG_WINDOW`]. Returns whether it logged.
pub fn record_auth_failure(port: &'static str, source: Option<SocketAddr>, path: &str) -> bool {
    let ip = source.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |s| s.ip());
    let now = Instant::now();
    let suppressed = {
        // A poisoned lock only means another thread panicked mid-update of
        // this log-only table: keep using it.
        let mut seen = AUTH_FAILURES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= AUTH_LOG_SOURCES {
            seen.retain(|_, w| now.duration_since(w.started) < AUTH_LOG_WINDOW);
            if seen.len() >= AUTH_LOG_SOURCES {
                seen.clear();
            }
        }
        match seen.get_mut(&(port, ip)) {
            Some(w) if now.duration_since(w.started) < AUTH_LOG_WINDOW => {
                w.suppressed += 1;
                return false;
            }
            Some(w) => {
                let n = w.suppressed;
                *w = Window {
                    started: now,
                    suppressed: 0,
                };
                n
            }
            None => {
                seen.insert(
                    (port, ip),
                    Window {
                        started: now,
                        suppressed: 0,
                    },
                );
                0
            }
        }
    };
    tracing::warn!(
        port,
        source = %ip,
        path,
        not_logged_since_last = suppressed,
        "authentication failed: missing or wrong cluster secret"
    );
    true
}

/// Middleware for the peer port: a 401 answer is an authentication failure.
pub async fn peer_auth_failures(req: Request, next: Next) -> Response {
    log_auth_failures("peer", req, next).await
}

/// Middleware for the client port (membership routes answer 401 without
/// the cluster secret).
pub async fn client_auth_failures(req: Request, next: Next) -> Response {
    log_auth_failures("client", req, next).await
}

async fn log_auth_failures(port: &'static str, req: Request, next: Next) -> Response {
    let source = crate::serve::peer_of(&req);
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    if resp.status() == StatusCode::UNAUTHORIZED {
        record_auth_failure(port, source, &path);
    }
    resp
}
