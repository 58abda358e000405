//! Lock routes: acquire (optionally waiting), extend, release, read, list,
//! and the owner-hash status query.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use locker_proto::limits;
use locker_proto::{
    AcquireRequest, ErrorAnswer, ErrorCode, ExtendRequest, ListAnswer, ListQuery, LockAnswer,
    OwnerAnswer, OwnerHashError, ReadAnswer, ReadQuery, ReleaseRequest,
};

use super::access::{token_of, Authed};
use super::answers::{lock_answer, owner_status, wire_lock};
use super::error::ApiError;
use super::input;
use super::openapi::{codes, KeyPath, OwnerHashPath};
use crate::core::{Op, Outcome, Status};
use crate::node::Node;

/// Acquire a lock, re-acquire it (same owner: extend, same token), or with
/// `wait_ms` wait in line (FIFO per key) until it is free.
#[utoipa::path(post, path = "/v1/locks/{key}/acquire", tag = "locks",
    params(KeyPath),
    request_body(content = AcquireRequest, description = "All fields optional; an empty body takes the defaults"),
    responses(
        (status = 200, description = "SUCCESS: the lock", body = LockAnswer),
        (status = 409, description = "SOMEONE_ELSE_HOLDS_LOCK (holder in `lock`) or NO_RUNNING_PROCESS; or the error OWNER_HASH_RETIRED (a late or repeated acquire by an owner hash whose run has ended: nothing was done)", body = LockAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::OwnerHashRetired]))))),
        (status = 400, description = "Bad input: the key, the JSON body, wait_ms, ttl_ms, trace, process_hash or owner_hash out of its documented bounds", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::InvalidKey, ErrorCode::InvalidJson, ErrorCode::InvalidWait, ErrorCode::InvalidTtl, ErrorCode::InvalidTrace, ErrorCode::InvalidProcessHash, ErrorCode::InvalidOwnerHash]))))),
        (status = 403, description = "FORBIDDEN: no write role, the key is outside the token's prefixes, or the process was registered by another token", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Forbidden]))))),
        (status = 429, description = "LIMIT_EXCEEDED (--max-locks, --max-waiters, the token's max_locks); nothing was done", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::LimitExceeded]))))),
        (status = 503, description = "No leader (NO_LEADER: nothing was done), or the write's outcome is unknown (TIMEOUT); retry after Retry-After", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::NoLeader, ErrorCode::Timeout])))))))]
pub async fn acquire(
    State(node): State<Arc<Node>>,
    authed: Option<Extension<Authed>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = input::key(path)?;
    let b: AcquireRequest = input::json_body(body, true)?;
    let wait_ms = input::wait(b.wait_ms)?;
    let op = acquire_op(&node, &key, b, token_of(&authed))?;
    let outcome = if wait_ms == 0 {
        node.propose(op).await?
    } else {
        let max = node.cfg.max_waiters;
        if max > 0 && node.waiters.len() >= max {
            return Err(ApiError::new(
                ErrorCode::LimitExceeded,
                format!("{max} blocking acquires already wait on this node (--max-waiters): nothing was done"),
            ));
        }
        acquire_waiting(&node, &key, op, Duration::from_millis(wait_ms)).await?
    };
    lock_answer(outcome)
}

/// The checked acquire of a request, under the caller's token and limits.
fn acquire_op(
    node: &Node,
    key: &str,
    b: AcquireRequest,
    token: Option<&crate::tokens::Token>,
) -> Result<Op, ApiError> {
    let ttl_ms = input::ttl(
        b.ttl_ms,
        limits::LOCK_TTL_MS,
        limits::DEFAULT_LOCK_TTL_MS,
        "lock",
    )?;
    input::trace(b.trace.as_deref())?;
    if let Some(p) = &b.process_hash {
        input::process_hash(p)?;
    }
    let owner_hash = match b.owner_hash {
        Some(o) => {
            input::owner_hash_for(key, &o)?;
            o
        }
        None => server_owner_hash(node, key, b.trace.as_deref())?,
    };
    let op = Op::Acquire {
        key: key.to_string(),
        owner_hash,
        process_hash: b.process_hash,
        trace: b.trace,
        ttl_ms,
    };
    Ok(Op::As {
        caller: node.caller(token),
        op: Box::new(op),
    })
}

/// The owner hash the node builds for an acquire that brought none. It must
/// parse back to this key, or extend and release with it would be refused
/// and the lock stuck until its TTL ends: a trace that would make it
/// ambiguous (`x@h/1.2.3` looks like an owner hash's end) is refused instead.
fn server_owner_hash(node: &Node, key: &str, trace: Option<&str>) -> Result<String, ApiError> {
    node.new_owner_hash(key, trace).map_err(|e| match e {
        OwnerHashError::Ambiguous(_) | OwnerHashError::LineBreakInTrace(_) => ApiError::new(
            ErrorCode::InvalidTrace,
            format!(
                "the trace {:?} cannot end an owner hash: {e}",
                trace.unwrap_or_default()
            ),
        ),
        OwnerHashError::EmptyKey | OwnerHashError::LineBreakInKey(_) => {
            ApiError::new(ErrorCode::InvalidKey, e.to_string())
        }
        // The node's own process hash is built valid; this is a bug.
        OwnerHashError::InvalidProcessHash(_) => ApiError::internal(e.to_string()),
    })
}

/// Blocking acquire: queue behind earlier waiters on the key; the head tries
/// whenever the key is free (released, expired, or its process died).
async fn acquire_waiting(
    node: &Node,
    key: &str,
    op: Op,
    wait: Duration,
) -> Result<Outcome, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut stopping = node.stopping();
    let ticket = node.waiters.enqueue(key);
    let mut last = None;
    loop {
        // Before looking, so a change in between still wakes us.
        let key_changed = ticket.changed();
        if ticket.is_head() {
            let free = match node.leader_now() {
                Some(now) => node.replica.read().table.live_lock(key, now).is_none(),
                None => true, // not ready: let propose decide (it waits, then 503s)
            };
            if free || last.is_none() {
                let outcome = node.propose(op.clone()).await?;
                if outcome.status != Status::SomeoneElseHoldsLock {
                    return Ok(outcome);
                }
                last = Some(outcome);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        // Wake when this key's lock changes or its queue moves, the holder's
        // lease would run out on the leader's clock, or we give up.
        let holder_end = match (node.leader_now(), ticket.is_head()) {
            (Some(now), true) => node
                .replica
                .read()
                .table
                .holder_deadline(key, now)
                .map(|end| Duration::from_millis(end.saturating_sub(now) + 1)),
            _ => None,
        };
        let wake = holder_end
            .map(|d| (tokio::time::Instant::now() + d).min(deadline))
            .unwrap_or(deadline);
        tokio::select! {
            _ = key_changed => {}
            _ = tokio::time::sleep_until(wake) => {}
            _ = stopping.wait_for(|s| *s) => return Err(shutting_down()),
        }
        node.metrics.waiter_wakeups.inc();
    }
    match last {
        Some(o) => Ok(o),
        None => give_up_behind(node, key, &ticket, op).await,
    }
}

/// A waiter's answer when the node shuts down: nothing of its was granted
/// (it was not inside a write), so NO_LEADER: retry on another node.
fn shutting_down() -> ApiError {
    ApiError::new(
        ErrorCode::NoLeader,
        "this node is shutting down; retry on another node",
    )
}

/// The answer of a waiter whose time ran out while others were ahead of it.
///
/// It never tried, so it answers with the holder. If the key looks free, the
/// head of the queue is taking it right now: proposing here would cut ahead
/// of it. Wait (bounded) for the head's grant to land, or for this waiter to
/// become the head, whose turn it then is.
async fn give_up_behind(
    node: &Node,
    key: &str,
    ticket: &crate::waiters::Ticket<'_>,
    op: Op,
) -> Result<Outcome, ApiError> {
    let until = tokio::time::Instant::now() + Duration::from_millis(node.cfg.write_timeout_ms);
    // Not the head: only a waiter that watches its key hears of the grant.
    ticket.watch_key();
    loop {
        let key_changed = ticket.changed();
        if ticket.is_head() {
            return Ok(node.propose(op).await?);
        }
        let holder = {
            let r = node.replica.read();
            let now = node.leader_now().unwrap_or_else(|| r.table.now());
            r.table.live_lock(key, now).cloned()
        };
        if let Some(l) = holder {
            return Ok(Outcome {
                status: Status::SomeoneElseHoldsLock,
                lock: Some(l),
                alive_until: None,
                batch: Vec::new(),
            });
        }
        if tokio::time::Instant::now() >= until {
            // The head never took it (stuck without a leader): the write
            // decides, and answers 503 itself if there is still none.
            return Ok(node.propose(op).await?);
        }
        tokio::select! {
            _ = key_changed => {}
            _ = tokio::time::sleep_until(until) => {}
        }
        node.metrics.waiter_wakeups.inc();
    }
}

/// Extend a live lock held by `owner_hash`: `expires_at = now + ttl_ms`.
#[utoipa::path(post, path = "/v1/locks/{key}/extend", tag = "locks",
    params(KeyPath),
    request_body = ExtendRequest,
    responses(
        (status = 200, description = "SUCCESS", body = LockAnswer),
        (status = 404, description = "NO_KEY: no live lock", body = LockAnswer),
        (status = 409, description = "SOMEONE_ELSE_HOLDS_LOCK", body = LockAnswer),
        (status = 400, description = "Bad input: the key, the JSON body, owner_hash or ttl_ms out of its documented bounds", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::InvalidKey, ErrorCode::InvalidJson, ErrorCode::InvalidOwnerHash, ErrorCode::InvalidTtl]))))),
        (status = 403, description = "FORBIDDEN: no write role or the key is outside the token's prefixes", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Forbidden]))))),
        (status = 503, description = "No leader, or the outcome is unknown (TIMEOUT)", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::NoLeader, ErrorCode::Timeout])))))))]
pub async fn extend(
    State(node): State<Arc<Node>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = input::key(path)?;
    let b: ExtendRequest = input::json_body(body, false)?;
    input::owner_hash_for(&key, &b.owner_hash)?;
    let ttl_ms = input::ttl(
        b.ttl_ms,
        limits::LOCK_TTL_MS,
        limits::DEFAULT_LOCK_TTL_MS,
        "lock",
    )?;
    let outcome = node
        .propose(Op::Extend {
            key,
            owner_hash: b.owner_hash,
            ttl_ms,
        })
        .await?;
    lock_answer(outcome)
}

/// Release a live lock held by `owner_hash`.
#[utoipa::path(post, path = "/v1/locks/{key}/release", tag = "locks",
    params(KeyPath),
    request_body = ReleaseRequest,
    responses(
        (status = 200, description = "SUCCESS", body = LockAnswer),
        (status = 404, description = "NO_KEY", body = LockAnswer),
        (status = 409, description = "SOMEONE_ELSE_HOLDS_LOCK", body = LockAnswer),
        (status = 400, description = "Bad input: the key, the JSON body or owner_hash out of its documented bounds", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::InvalidKey, ErrorCode::InvalidJson, ErrorCode::InvalidOwnerHash]))))),
        (status = 403, description = "FORBIDDEN: no write role or the key is outside the token's prefixes", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Forbidden]))))),
        (status = 503, description = "No leader, or the outcome is unknown (TIMEOUT)", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::NoLeader, ErrorCode::Timeout])))))))]
pub async fn release(
    State(node): State<Arc<Node>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = input::key(path)?;
    let b: ReleaseRequest = input::json_body(body, false)?;
    input::owner_hash_for(&key, &b.owner_hash)?;
    let outcome = node
        .propose(Op::Release {
            key,
            owner_hash: b.owner_hash,
        })
        .await?;
    lock_answer(outcome)
}

/// The log time at which a read judges liveness.
///
/// Stale reads use the replica's log time. Linearizable reads confirm
/// leadership, then judge at the log time too; if the leader's clock already
/// sees one of the read's locks expire (TTL or process) where the log has not
/// got to yet, a sweep entry first carries that time into the log. Judging
/// at a time the log has not recorded would let a later leader (whose
/// takeover marker judges at log time) bring the lock back: a read saying
/// "free" followed by one saying "held" by the same owner.
pub async fn read_time(
    node: &Node,
    stale: bool,
    changes_between: impl Fn(&crate::core::LockTable, u64, u64) -> bool,
) -> Result<u64, ApiError> {
    if stale {
        return Ok(node.replica.read().table.now());
    }
    let leader_now = node.linearizable_read_time().await?;
    {
        let r = node.replica.read();
        let log_now = r.table.now();
        if !changes_between(&r.table, log_now, leader_now) {
            return Ok(log_now);
        }
    }
    // The sweep is stamped at or after `leader_now`, so once it is applied
    // the log time covers the read.
    node.propose(Op::Sweep).await?;
    Ok(node.replica.read().table.now())
}

/// Read one lock: the live lock, or `{"locked":false}`.
#[utoipa::path(get, path = "/v1/locks/{key}", tag = "locks",
    params(KeyPath, ReadQuery),
    responses(
        (status = 200, description = "The lock or unlocked", body = ReadAnswer),
        (status = 400, description = "Bad input: the key or the query", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::InvalidKey, ErrorCode::InvalidQuery]))))),
        (status = 403, description = "FORBIDDEN: no read role or the key is outside the token's prefixes", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Forbidden]))))),
        (status = 503, description = "No leader (linearizable reads only)", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::NoLeader, ErrorCode::Timeout])))))))]
pub async fn read(
    State(node): State<Arc<Node>>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let key = input::key(path)?;
    let q = input::query(q)?;
    let at = read_time(&node, q.stale.unwrap_or(false), |t, from, to| {
        t.key_changes_between(&key, from, to)
    })
    .await?;
    let r = node.replica.read();
    let lock = r.table.live_lock(&key, at).cloned().map(wire_lock);
    Ok(Json(ReadAnswer {
        locked: lock.is_some(),
        lock,
    })
    .into_response())
}

/// List live locks in key order.
#[utoipa::path(get, path = "/v1/locks", tag = "locks", params(ListQuery),
    responses(
        (status = 200, description = "Live locks", body = ListAnswer),
        (status = 400, description = "Bad input: the query, limit, or a prefix longer than a key (INVALID_KEY)", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::InvalidQuery, ErrorCode::InvalidLimit, ErrorCode::InvalidKey]))))),
        (status = 403, description = "FORBIDDEN: no read role", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Forbidden]))))),
        (status = 503, description = "No leader (linearizable reads only)", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::NoLeader, ErrorCode::Timeout])))))))]
pub async fn list(
    State(node): State<Arc<Node>>,
    authed: Option<Extension<Authed>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = input::query(q)?;
    let limit = input::within(
        q.limit,
        &limits::LIST_LIMIT,
        limits::DEFAULT_LIST_LIMIT,
        ErrorCode::InvalidLimit,
        "limit",
    )?;
    let prefix = q.prefix.unwrap_or_default();
    if prefix.len() > limits::MAX_KEY_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidKey,
            "the prefix is longer than a key may be",
        ));
    }
    let at = read_time(&node, q.stale.unwrap_or(false), |t, from, to| {
        t.prefix_changes_between(&prefix, from, to)
    })
    .await?;
    // Copy the page and let go of the table before converting and
    // serialising it: a 10,000-lock page is tens of MB of JSON, and every
    // write waits for this lock (writes stalled up to 700 ms).
    // A token sees only keys under its prefixes: list where they overlap
    // the asked prefix, in key order.
    let visible = match token_of(&authed) {
        Some(t) => t.visible_prefixes(&prefix),
        None => vec![prefix],
    };
    let page: Vec<_> = {
        let r = node.replica.read();
        let mut page = Vec::new();
        for p in &visible {
            page.extend(r.table.list(p, limit - page.len(), at).into_iter().cloned());
            if page.len() >= limit {
                break;
            }
        }
        page
    };
    let locks = page.into_iter().map(wire_lock).collect();
    Ok(Json(ListAnswer { locks }).into_response())
}

/// The seed's owner-hash status: RUNNING, SOMEONE_ELSE_HOLDS_LOCK, NO_KEY,
/// NO_RUNNING_PROCESS or MALFORMED_OWNER_HASH. For debugging, not for logic.
#[utoipa::path(get, path = "/v1/owners/{owner_hash}", tag = "locks",
    params(OwnerHashPath, ReadQuery),
    responses(
        (status = 200, description = "The status (MALFORMED_OWNER_HASH for one that does not parse)", body = OwnerAnswer),
        (status = 400, description = "Bad input: an owner hash that is not valid percent-encoded UTF-8, or the query", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::InvalidOwnerHash, ErrorCode::InvalidQuery]))))),
        (status = 403, description = "FORBIDDEN: no read role or the owner hash's key is outside the token's prefixes", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Forbidden]))))),
        (status = 503, description = "No leader (linearizable reads only)", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::NoLeader, ErrorCode::Timeout])))))))]
pub async fn owner(
    State(node): State<Arc<Node>>,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let owner_hash = input::path_param(path, "owner hash", ErrorCode::InvalidOwnerHash)?;
    let q = input::query(q)?;
    let key = locker_proto::parse_owner_hash(&owner_hash).map(|p| p.key.to_string());
    let at = read_time(&node, q.stale.unwrap_or(false), |t, from, to| {
        key.as_deref()
            .is_some_and(|k| t.key_changes_between(k, from, to))
    })
    .await?;
    let st = node.replica.read().table.owner_status(&owner_hash, at);
    Ok(Json(OwnerAnswer {
        status: owner_status(st.status)?,
        key: st.key,
        lock: st.lock.map(wire_lock),
    })
    .into_response())
}
