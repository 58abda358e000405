//! `GET /v1/watch`: the lock table's changes as Server-Sent Events, served
//! by the asked node from its own applied log (never forwarded), resumable
//! with `Last-Event-ID` or `since`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::Stream;
use locker_proto::limits::MAX_KEY_BYTES;
use locker_proto::{
    CloseReason, CompactedAnswer, ErrorAnswer, ErrorCode, EventId, ReadIndexAnswer, WatchClosed,
    WatchQuery, WatchStart,
};
use tokio::sync::{watch as signal, OwnedSemaphorePermit};

use super::access::{token_of, Authed};
use super::error::ApiError;
use super::input;
use super::openapi::codes;
use crate::node::{LeaderHint, Node};
use crate::tokens::Token;
use crate::watch::Gone;

/// Events sent per read of the history.
const BATCH: usize = 256;

/// Stream the changes to locks and processes under `prefix`, in log order.
#[utoipa::path(get, path = "/v1/watch", tag = "locks", params(WatchQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (wins over `since`)")),
    responses(
        (status = 200, description = "`text/event-stream`: `start`, then one event per change (data: WatchEvent), `: keep-alive` comments, and `closed` (data: WatchClosed) if the node ends the stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad query or event id, or a prefix longer than a key", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::InvalidQuery, ErrorCode::InvalidKey]))))),
        (status = 410, description = "COMPACTED: the start is older than this node keeps", body = CompactedAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Compacted]))))),
        (status = 401, description = "A token is required", body = ErrorAnswer),
        (status = 403, description = "The token lacks the read role or every prefix", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Forbidden]))))),
        (status = 429, description = "LIMIT_EXCEEDED: --max-watchers streams are open", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::LimitExceeded]))))),
        (status = 503, description = "No leader for `linearizable`", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::NoLeader, ErrorCode::Timeout])))))))]
pub async fn watch(
    State(node): State<Arc<Node>>,
    authed: Option<Extension<Authed>>,
    headers: HeaderMap,
    q: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = input::query(q)?;
    let prefix = q.prefix.unwrap_or_default();
    if prefix.len() > MAX_KEY_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidKey,
            "the prefix is longer than a key may be",
        ));
    }
    let since = start_id(&headers, q.since.as_deref())?;
    // A token (read role, checked by `access`) sees only its prefixes.
    let prefixes = match token_of(&authed) {
        Some(t) => t.visible_prefixes(&prefix),
        None => vec![prefix.clone()],
    };
    let grant = authed.map(|Extension(Authed(token))| Grant { token, prefix });
    if prefixes.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "the prefix is outside every prefix of this token",
        ));
    }
    let permit = node.watchers.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            ErrorCode::LimitExceeded,
            format!(
                "this node serves at most {} watch streams (--max-watchers); retry later or on another node",
                node.cfg.max_watchers
            ),
        )
    })?;
    let cursor = match since {
        Some(c) => c,
        None if q.linearizable.unwrap_or(false) => EventId::entry(quorum_index(&node).await?),
        None => EventId::entry(applied(&node)),
    };
    if node.replica.events.check(cursor).is_err() {
        return Ok(compacted(node.replica.events.oldest_index()));
    }
    let start = WatchStart {
        id: cursor,
        node_id: node.id,
        applied_index: applied(&node),
        oldest_index: node.replica.events.oldest_index(),
    };
    let first = frame(Some(cursor), "start", &start);
    let body = Body::from_stream(stream(node, prefixes, grant, cursor, first, permit));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// The index a quorum confirmed (ReadIndex), answered by the leader;
/// followers forward it.
#[utoipa::path(get, path = "/v1/read-index", tag = "cluster",
    responses(
        (status = 200, description = "The confirmed index", body = ReadIndexAnswer),
        (status = 503, description = "No leader", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::NoLeader, ErrorCode::Timeout])))))))]
pub async fn read_index(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let index = node.read_index().await?;
    Ok(Json(ReadIndexAnswer { index }).into_response())
}

/// The leader's read index, asked of the leader when it is another node.
async fn quorum_index(node: &Node) -> Result<u64, ApiError> {
    let client_addr = match node.leader_hint() {
        LeaderHint::Me => return Ok(node.read_index().await?),
        LeaderHint::Other { client_addr, .. } => client_addr,
        LeaderHint::Unknown => {
            return Err(ApiError::new(
                ErrorCode::NoLeader,
                "no leader to confirm a read index",
            ))
        }
    };
    let no_leader = |e: String| {
        ApiError::new(
            ErrorCode::NoLeader,
            format!("the leader did not confirm a read index: {e}"),
        )
    };
    let resp = node
        .http
        .get(node.cfg.client_url(&client_addr, "/v1/read-index"))
        .header(
            super::forward::FORWARDED_HEADER,
            super::forward::forwarded_header_value(node),
        )
        .timeout(Duration::from_millis(
            node.cfg.leader_wait_ms.saturating_add(1000),
        ))
        .send()
        .await
        .map_err(|e| no_leader(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(no_leader(format!("HTTP {}", resp.status())));
    }
    let answer: ReadIndexAnswer = resp.json().await.map_err(|e| no_leader(e.to_string()))?;
    Ok(answer.index)
}

fn applied(node: &Node) -> u64 {
    node.replica
        .read()
        .last_applied
        .as_ref()
        .map_or(0, |l| l.index)
}

/// Where the stream starts: `Last-Event-ID`, else `since`, else none.
fn start_id(headers: &HeaderMap, since: Option<&str>) -> Result<Option<EventId>, ApiError> {
    let from_header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map_err(|_| bad_id("Last-Event-ID is not text".into()))
        })
        .transpose()?
        .map(str::trim)
        .filter(|s| !s.is_empty());
    match from_header.or(since) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|e| bad_id(format!("{e}"))),
    }
}

fn bad_id(msg: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, msg)
}

fn compacted(oldest_index: u64) -> Response {
    let body = CompactedAnswer {
        error: ErrorAnswer::new(
            ErrorCode::Compacted,
            format!(
                "this node keeps watch events after index {oldest_index} only: read the current state, then watch with since={oldest_index} or later"
            ),
        )
        .error,
        oldest_index,
    };
    (StatusCode::GONE, Json(body)).into_response()
}

/// One SSE event with JSON data.
fn frame<T: serde::Serialize>(id: Option<EventId>, event: &str, data: &T) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    let id = id.map(|i| format!("id: {i}\n")).unwrap_or_default();
    Bytes::from(format!("{id}event: {event}\ndata: {data}\n\n"))
}

/// What ended a watcher's wait.
enum Woke {
    Applied,
    Heartbeat,
    Stopping,
    TokensReloaded,
}

/// The token a stream was opened with, and the prefix it asked for: after a
/// reload of the tokens file, the stream goes on only if the token still
/// shows the same prefixes (a removed token's stream used to go on for good).
struct Grant {
    token: Arc<Token>,
    prefix: String,
}

/// A stream's state between frames.
struct Watcher {
    node: Arc<Node>,
    prefixes: Vec<String>,
    grant: Option<Grant>,
    reloads: signal::Receiver<u64>,
    /// The history was read up to here.
    cursor: EventId,
    /// The last event sent (or the start).
    sent: EventId,
    applied: signal::Receiver<u64>,
    stopping: signal::Receiver<bool>,
    heartbeat: tokio::time::Interval,
    first: Option<Bytes>,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

fn stream(
    node: Arc<Node>,
    prefixes: Vec<String>,
    grant: Option<Grant>,
    cursor: EventId,
    first: Bytes,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let every = Duration::from_millis(node.cfg.watch_heartbeat_ms);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let w = Watcher {
        applied: node.replica.subscribe(),
        stopping: node.stopping(),
        // Checked once at the first wait too: a reload may have come
        // between the request's authentication and this subscription.
        reloads: {
            let mut r = node.tokens.reloads();
            r.mark_changed();
            r
        },
        node,
        prefixes,
        grant,
        cursor,
        sent: cursor,
        heartbeat,
        first: Some(first),
        done: false,
        _permit: permit,
    };
    futures::stream::unfold(w, |mut w| async move {
        let next = w.next_frame().await?;
        Some((Ok(next), w))
    })
}

impl Watcher {
    async fn next_frame(&mut self) -> Option<Bytes> {
        if let Some(f) = self.first.take() {
            return Some(f);
        }
        if self.done {
            return None;
        }
        loop {
            // Marked seen before reading, so an apply in between still wakes us.
            self.applied.borrow_and_update();
            match self
                .node
                .replica
                .events
                .after(self.cursor, &self.prefixes, BATCH)
            {
                Err(gone) => {
                    let reason = match gone {
                        Gone::Dropped => CloseReason::TooSlow,
                        Gone::Snapshot => CloseReason::Resync,
                    };
                    return Some(self.close(reason));
                }
                Ok(batch) => {
                    if let Some(to) = batch.scanned_to {
                        self.cursor = to;
                    }
                    if let Some(last) = batch.events.last() {
                        self.sent = last.event.id;
                        let mut out = String::new();
                        for e in &batch.events {
                            out.push_str(e.sse());
                        }
                        self.heartbeat.reset();
                        return Some(Bytes::from(out));
                    }
                    if batch.scanned_to.is_some() {
                        continue;
                    }
                }
            }
            let woke = tokio::select! {
                changed = self.applied.changed() => {
                    if changed.is_ok() { Woke::Applied } else { Woke::Stopping }
                }
                _ = self.heartbeat.tick() => Woke::Heartbeat,
                _ = self.stopping.wait_for(|s| *s) => Woke::Stopping,
                Ok(()) = self.reloads.changed() => Woke::TokensReloaded,
            };
            match woke {
                Woke::Applied => {}
                Woke::TokensReloaded if !self.still_granted() => {
                    return Some(self.close(CloseReason::Unauthorized));
                }
                Woke::TokensReloaded => {}
                Woke::Heartbeat => return Some(Bytes::from_static(b": keep-alive\n\n")),
                Woke::Stopping => return Some(self.close(CloseReason::ShuttingDown)),
            }
        }
    }

    /// Whether the stream's token, as reloaded, still shows what it shows.
    fn still_granted(&self) -> bool {
        self.grant.as_ref().is_none_or(|g| {
            self.node
                .tokens
                .still_shows(&g.token, &g.prefix, &self.prefixes)
        })
    }

    fn close(&mut self, reason: CloseReason) -> Bytes {
        self.done = true;
        let closed = WatchClosed {
            reason,
            last_id: self.sent,
            last_index: self.sent.index,
        };
        frame(None, "closed", &closed)
    }
}
