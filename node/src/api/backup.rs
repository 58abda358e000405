//! `GET /v1/backup`: the lock table at a linearizable index, as a backup
//! file (`crate::backup`). Administrators only when tokens are on.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use locker_proto::ErrorCode;

use super::error::ApiError;
use crate::node::Node;

/// The header naming the backup's log index.
pub const BACKUP_INDEX_HEADER: &str = "x-locker-backup-index";

/// A consistent backup: leadership is confirmed with a quorum (ReadIndex)
/// and that index applied, then the table is copied at its applied index,
/// under one read of the replica (the index and the image agree).
#[utoipa::path(get, path = "/v1/backup", tag = "operations",
    responses(
        (status = 200, description = "A backup file (application/octet-stream; docs/formats.md, \"Backup files\")", content_type = "application/octet-stream"),
        (status = 503, description = "No leader", body = locker_proto::ErrorAnswer)))]
pub async fn backup(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    node.linearizable_read_time().await?;
    let (index, image) = {
        let r = node.replica.read();
        let index = r.last_applied.as_ref().map_or(0, |l| l.index);
        (index, r.table.to_image())
    };
    let bytes = tokio::task::spawn_blocking(move || crate::backup::encode(index, &image))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("backup failed: {e}")))?
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("backup failed: {e}")))?;
    tracing::info!(index, bytes = bytes.len(), "backup taken");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"locker-{index}.backup\""),
            ),
            (
                header::HeaderName::from_static(BACKUP_INDEX_HEADER),
                index.to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}
