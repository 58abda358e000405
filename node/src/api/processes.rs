//! Process routes: keep-alive and end.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use locker_proto::limits;
use locker_proto::{ErrorAnswer, ErrorCode, KeepaliveAnswer, KeepaliveRequest, StatusAnswer};

use super::access::{token_of, Authed};
use super::answers::{end_answer, keepalive_answer};
use super::error::ApiError;
use super::input;
use crate::core::Op;
use crate::node::Node;

/// Create or refresh a process: `alive_until = now + ttl_ms`. Its locks die with it.
#[utoipa::path(put, path = "/v1/processes/{process_hash}", tag = "processes",
    params(("process_hash" = String, Path, description = "`{hostname}/{pid}.{nanoseconds}`, percent-encoded")),
    request_body = KeepaliveRequest,
    responses(
        (status = 200, description = "SUCCESS", body = KeepaliveAnswer),
        (status = 400, description = "Bad input", body = ErrorAnswer),
        (status = 401, description = "UNAUTHENTICATED (tokens on)", body = ErrorAnswer),
        (status = 403, description = "FORBIDDEN: no write role, or the process was registered by another token", body = ErrorAnswer),
        (status = 429, description = "LIMIT_EXCEEDED (--max-processes) or RATE_LIMITED", body = ErrorAnswer),
        (status = 503, description = "No leader", body = ErrorAnswer)))]
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
    params(("process_hash" = String, Path, description = "`{hostname}/{pid}.{nanoseconds}`, percent-encoded")),
    responses(
        (status = 200, description = "SUCCESS", body = StatusAnswer),
        (status = 404, description = "NO_KEY: no live process", body = StatusAnswer),
        (status = 401, description = "UNAUTHENTICATED (tokens on)", body = ErrorAnswer),
        (status = 403, description = "FORBIDDEN: no write role, or the process was registered by another token", body = ErrorAnswer),
        (status = 503, description = "No leader", body = ErrorAnswer)))]
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
