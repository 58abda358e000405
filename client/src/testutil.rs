//! A fake *peer* for unit tests of the client's failover, retry and
//! heartbeat logic: a real axum router on a loopback port 0, speaking the
//! proto bodies. It stands in for a node only where a real one cannot be
//! steered (a scripted 503, a slow read, a takeover at an exact moment);
//! tests against real nodes live in `tests/`.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use locker_proto::{ErrorAnswer, ErrorCode};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// Requests seen, by `"METHOD /path"` (without the query).
type Hits = Arc<Mutex<HashMap<String, usize>>>;

pub(crate) struct FakePeer {
    url: String,
    hits: Hits,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts every request before the router sees it.
async fn count(State(hits): State<Hits>, req: Request, next: Next) -> Response {
    let key = format!("{} {}", req.method(), req.uri().path());
    if let Ok(mut h) = hits.lock() {
        *h.entry(key).or_insert(0) += 1;
    }
    next.run(req).await
}

impl FakePeer {
    /// Serves `router` on 127.0.0.1, port 0, until dropped.
    pub async fn serve(router: Router) -> FakePeer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits: Hits = Arc::default();
        let app = router.layer(middleware::from_fn_with_state(hits.clone(), count));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakePeer {
            url: format!("http://{addr}"),
            hits,
            task,
        }
    }

    /// A URL on which nothing listens (connection refused).
    pub async fn dead_url() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        format!("http://{addr}")
    }

    /// A node that accepts connections and never answers (a paused process,
    /// a black-holed route): the accepted sockets are held open, unread.
    pub async fn hung_url() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = l.accept().await {
                held.push(sock);
            }
        });
        format!("http://{addr}")
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// All requests served.
    pub fn hits(&self) -> usize {
        self.hits.lock().map(|h| h.values().sum()).unwrap_or(0)
    }

    /// Requests to `"METHOD /path"` or below it (`"PUT /v1/processes"`
    /// counts every keep-alive).
    pub fn hits_of(&self, method_path: &str) -> usize {
        let below = format!("{method_path}/");
        self.hits
            .lock()
            .map(|h| {
                h.iter()
                    .filter(|(k, _)| *k == method_path || k.starts_with(&below))
                    .map(|(_, n)| *n)
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// A JSON answer with this HTTP status.
pub(crate) fn reply<T: Serialize>(status: u16, body: &T) -> Response {
    let status = StatusCode::from_u16(status).expect("valid status");
    (status, Json(body)).into_response()
}

/// The error body with the HTTP status its code is answered with, and
/// `Retry-After: 1` on a 503 as a node sends it.
pub(crate) fn refuse(code: ErrorCode, message: &str) -> Response {
    let mut r = reply(code.http_status(), &ErrorAnswer::new(code, message));
    if code.is_retryable() {
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    r
}
