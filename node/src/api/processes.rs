//! Process routes: keep-alive, end and list.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use locker_proto::limits;
use locker_proto::{
    ErrorAnswer, ErrorCode, KeepaliveAnswer, KeepaliveRequest, ListQuery, ProcessEntry,
    ProcessListAnswer, StatusAnswer,
};

use super::access::{token_of, Authed};
use super::answers::{end_answer, keepalive_answer};
use super::error::ApiError;
use super::input;
use super::locks::read_time;
use super::openapi::{codes, ProcessHashPath};
use crate::core::Op;
use crate::node::Node;
use crate::tokens::Role;

/// Create or refresh a process: `alive_until = now + ttl_ms`. Its locks die with it.
#[utoipa::path(put, path = "/v1/processes/{process_hash}", tag = "processes",
    params(ProcessHashPath),
    request_body(content = KeepaliveRequest, description = "Both fields optional; an empty body takes the defaults"),
    responses(
        (status = 200, description = "SUCCESS", body = KeepaliveAnswer),
        (status = 400, description = "Bad input: the process hash, the JSON body, ttl_ms or info out of its documented bounds", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::InvalidProcessHash, ErrorCode::InvalidJson, ErrorCode::InvalidTtl, ErrorCode::InvalidInfo]))))),
        (status = 403, description = "FORBIDDEN: no write role, or the process was registered by another token", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Forbidden]))))),
        (status = 429, description = "LIMIT_EXCEEDED (--max-processes, the token's limits); nothing was done", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::LimitExceeded]))))),
        (status = 503, description = "No leader, or the outcome is unknown (TIMEOUT)", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::NoLeader, ErrorCode::Timeout])))))))]
pub async fn keepalive(
    State(node): State<Arc<Node>>,
    authed: Option<Extension<Authed>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let process_hash = input::path_param(path, "process hash", ErrorCode::InvalidProcessHash)?;
    input::process_hash(&process_hash)?;
    let b: KeepaliveRequest = input::json_body(body, true)?;
    let ttl_ms = input::ttl(
        b.ttl_ms,
        limits::PROCESS_TTL_MS,
        limits::DEFAULT_PROCESS_TTL_MS,
        "process",
    )?;
    let info = b.info.map(|v| v.to_string());
    if info
        .as_ref()
        .is_some_and(|i| i.len() > limits::MAX_INFO_BYTES)
    {
        return Err(ApiError::new(
            ErrorCode::InvalidInfo,
            format!("info is larger than {} bytes", limits::MAX_INFO_BYTES),
        ));
    }
    let op = Op::Keepalive {
        process_hash,
        ttl_ms,
        info,
    };
    let caller = node.caller(token_of(&authed));
    let o = node
        .propose(Op::As {
            caller,
            op: Box::new(op),
        })
        .await?;
    keepalive_answer(o)
}

/// End a process: it and all its locks are gone at once.
#[utoipa::path(delete, path = "/v1/processes/{process_hash}", tag = "processes",
    params(ProcessHashPath),
    responses(
        (status = 200, description = "SUCCESS", body = StatusAnswer),
        (status = 404, description = "NO_KEY: no live process", body = StatusAnswer),
        (status = 400, description = "Bad input: the process hash", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::InvalidProcessHash]))))),
        (status = 403, description = "FORBIDDEN: no write role, or the process was registered by another token", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::Forbidden]))))),
        (status = 503, description = "No leader, or the outcome is unknown (TIMEOUT)", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::NoLeader, ErrorCode::Timeout])))))))]
pub async fn end(
    State(node): State<Arc<Node>>,
    authed: Option<Extension<Authed>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let process_hash = input::path_param(path, "process hash", ErrorCode::InvalidProcessHash)?;
    input::process_hash(&process_hash)?;
    let op = Op::EndProcess { process_hash };
    let o = match token_of(&authed) {
        Some(t) => {
            let caller = node.caller(Some(t));
            node.propose(Op::As {
                caller,
                op: Box::new(op),
            })
            .await?
        }
        None => node.propose(op).await?,
    };
    end_answer(o)
}

/// List live processes in process-hash order, with their time to live.
#[utoipa::path(get, path = "/v1/processes", tag = "processes", params(ListQuery),
    responses(
        (status = 200, description = "Live processes (`prefix` filters process hashes; with tokens, those the token registered, all for admin)", body = ProcessListAnswer),
        (status = 400, description = "Bad input: the query, limit, or a prefix longer than a process hash (INVALID_PROCESS_HASH)", body = ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[ErrorCode::InvalidQuery, ErrorCode::InvalidLimit, ErrorCode::InvalidProcessHash]))))),
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
            ErrorCode::InvalidProcessHash,
            "the prefix is longer than a process hash may be",
        ));
    }
    let at = read_time(&node, q.stale.unwrap_or(false), |t, from, to| {
        t.process_prefix_changes_between(&prefix, from, to)
    })
    .await?;
    // With tokens, a token sees the processes it registered (admin: all).
    let only = token_of(&authed)
        .filter(|t| !t.has(Role::Admin))
        .map(|t| t.name.clone());
    let keep = |p: &crate::core::Process| only.is_none() || p.token == only;
    let processes = {
        let r = node.replica.read();
        r.table
            .list_processes(&prefix, limit, at, keep)
            .into_iter()
            .map(|p| ProcessEntry {
                process_hash: p.process_hash.clone(),
                ttl_ms: p.ttl_ms,
                alive_until: p.alive_until,
                since: p.since,
                info: p.info.as_deref().and_then(|i| serde_json::from_str(i).ok()),
            })
            .collect()
    };
    Ok(Json(ProcessListAnswer { processes, at }).into_response())
}
