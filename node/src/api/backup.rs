//! `GET /v1/backup`: the lock table at a linearizable index, as a backup
//! file (`crate::backup`). Administrators only when tokens are on.

use std::io;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::openapi::codes;
use crate::node::Node;

/// The header naming the backup's log index.
pub const BACKUP_INDEX_HEADER: &str = "x-locker-backup-index";

/// A consistent backup: leadership is confirmed with a quorum (ReadIndex)
/// and that index applied, then the table is copied at its applied index,
/// under one read of the replica (the index and the image agree), and
/// streamed as it is encoded.
#[utoipa::path(get, path = "/v1/backup", tag = "operations",
    responses(
        (status = 200, description = "A backup file (application/octet-stream; docs/formats.md, \"Backup files\")", content_type = "application/octet-stream"),
        (status = 403, description = "FORBIDDEN (tokens on): the token lacks the admin role", body = locker_proto::ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[locker_proto::ErrorCode::Forbidden]))))),
        (status = 503, description = "No leader", body = locker_proto::ErrorAnswer, extensions(("x-locker-error-codes" = json!(codes(&[locker_proto::ErrorCode::NoLeader, locker_proto::ErrorCode::Timeout])))))))]
pub async fn backup(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    node.linearizable_read_time().await?;
    let (index, image) = {
        let r = node.replica.read();
        let index = r.last_applied.as_ref().map_or(0, |l| l.index);
        (index, r.table.to_image())
    };
    // Encoded on a blocking thread into a few chunks in flight at most: the
    // file is never whole in memory, and a slow reader slows the encoding
    // instead of growing a buffer.
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let sink = ChunkSink {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        match crate::backup::write(index, &image, sink) {
            Ok(bytes) => tracing::info!(index, bytes, "backup taken"),
            Err(e) => {
                tracing::warn!(index, error = %e, "backup cut short");
                // The client sees the body end in an error, never a whole file.
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let chunks =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
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
        Body::from_stream(chunks),
    )
        .into_response())
}

/// Bytes per chunk of a streamed backup.
const CHUNK: usize = 256 * 1024;
/// Chunks encoded ahead of the reader.
const CHUNKS_IN_FLIGHT: usize = 4;

/// An `io::Write` that sends what it is given in [`CHUNK`]s; fails once the
/// response is gone (the client went away), which stops the encoding.
struct ChunkSink {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkSink {
    fn send(&mut self) -> io::Result<()> {
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl io::Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}
