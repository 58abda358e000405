//! Process routes: keep-alive and end.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::answers::{ErrorAnswer, KeepaliveAnswer, StatusAnswer};

use super::error::ApiError;
use super::input;
use crate::core::{Op, Status};
use crate::node::Node;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveBody {
    pub ttl_ms: Option<u64>,
    /// Free-form JSON about the process (host, version...), at most 16 KiB.
    #[schema(value_type = Option<Object>)]
    pub info: Option<serde_json::Value>,
}

/// Create or refresh a process: `alive_until = now + ttl_ms`. Its locks die with it.
#[utoipa::path(put, path = "/v1/processes/{process_hash}", tag = "processes",
    params(("process_hash" = String, Path, description = "`{hostname}/{pid}.{nanoseconds}`, percent-encoded")),
    request_body = KeepaliveBody,
    responses(
        (status = 200, description = "SUCCESS", body = KeepaliveAnswer),
        (status = 400, description = "Bad input", body = ErrorAnswer),
        (status = 503, description = "No leader", body = ErrorAnswer)))]
pub async fn keepalive(
    State(node): State<Arc<Node>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let process_hash = input::path_param(path, "process hash")?;
    input::process_hash(&process_hash)?;
    let b: KeepaliveBody = input::json_body(body, true)?;
    let ttl_ms = input::ttl(
        b.ttl_ms,
        input::PROCESS_TTL_MS,
        input::DEFAULT_PROCESS_TTL_MS,
        "process",
    )?;
    let info = b.info.map(|v| v.to_string());
    if info
        .as_ref()
        .is_some_and(|i| i.len() > input::MAX_INFO_BYTES)
    {
        return Err(ApiError::bad_request(
            "INVALID_INFO",
            format!("info is larger than {} bytes", input::MAX_INFO_BYTES),
        ));
    }
    let o = node
        .propose(Op::Keepalive {
            process_hash,
            ttl_ms,
            info,
        })
        .await?;
    Ok(Json(KeepaliveAnswer {
        status: o.status,
        alive_until: o.alive_until,
    })
    .into_response())
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
    let process_hash = input::path_param(path, "process hash")?;
    input::process_hash(&process_hash)?;
    let o = node.propose(Op::EndProcess { process_hash }).await?;
    let code = if o.status == Status::Success {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    Ok((code, Json(StatusAnswer { status: o.status })).into_response())
}
