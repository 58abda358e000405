//! Process routes: keep-alive and end.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::Response;
use locker_proto::limits;
use locker_proto::{ErrorAnswer, ErrorCode, KeepaliveAnswer, KeepaliveRequest, StatusAnswer};

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
        (status = 503, description = "No leader", body = ErrorAnswer)))]
pub async fn keepalive(
    State(node): State<Arc<Node>>,
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
    let o = node
        .propose(Op::Keepalive {
            process_hash,
            ttl_ms,
            info,
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
        (status = 503, description = "No leader", body = ErrorAnswer)))]
pub async fn end(
    State(node): State<Arc<Node>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let process_hash = input::path_param(path, "process hash", ErrorCode::InvalidProcessHash)?;
    input::process_hash(&process_hash)?;
    let o = node.propose(Op::EndProcess { process_hash }).await?;
    end_answer(o)
}
