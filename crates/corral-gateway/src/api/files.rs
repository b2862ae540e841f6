//! `GET` and `PUT /api/v1/sandboxes/{id}/files?path=REL`: a file or directory of the
//! workspace as a tar stream, and a tar stream extracted into a workspace directory. Both are
//! streamed (never held whole in memory) and work whether the sandbox runs or not. Paths are
//! confined to the workspace by the runtime (see `runtime::files`).

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::caller::Caller;
use super::error::ErrorBody;
use super::sandboxes::visible;
use super::{ApiError, AppState, Json, Path};
use crate::runtime::FilesError;

/// Bytes of archive sent (or received) at a time.
const CHUNK: usize = 64 * 1024;
/// Chunks buffered between the network and the file system thread.
const IN_FLIGHT: usize = 4;
/// Most of a refused upload's remaining body read (and dropped) before answering, so a
/// client still sending it gets to read the answer instead of a broken connection.
const DRAIN_BYTES: usize = 8 * 1024 * 1024;
/// Longest wait for that remaining body.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// The tar media type.
const TAR: &str = "application/x-tar";

impl From<FilesError> for ApiError {
    fn from(e: FilesError) -> Self {
        match e {
            FilesError::NotFound { .. } => ApiError::not_found(e.to_string()),
            e if e.is_callers() => ApiError::bad_request(e.to_string()),
            other => ApiError::internal(&other),
        }
    }
}

/// Query of the files endpoints.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct FilesQuery {
    /// A path relative to the workspace (`src/main.rs`; empty or `.` for the workspace
    /// itself). `..`, absolute paths and symlinks leading out of the workspace are refused.
    #[serde(default)]
    path: String,
}

/// The result of an upload.
#[derive(Serialize, ToSchema)]
pub(super) struct Uploaded {
    /// How many archive entries were extracted.
    entries: u64,
}

/// `GET /api/v1/sandboxes/{id}/files?path=REL`: the file or directory as a tar archive whose
/// one top-level entry is named after the path's last component (`workspace` for the
/// workspace itself). Symlinks are archived as symlinks; fifos, sockets and devices are left
/// out; setuid, setgid and sticky bits are dropped.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/files", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id"), FilesQuery), responses((status = 200, description = "a tar stream", content_type = "application/x-tar", body = Vec<u8>), (status = 400, description = "a path that is absolute, contains `..`, leads out of the workspace or is neither a file nor a directory", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such id, not the caller's, or no such path", body = ErrorBody)))]
pub(super) async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<FilesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let sandbox = visible(&state, &caller, id).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let runtime = state.runtime.clone();
    let opened = tokio::task::spawn_blocking(move || {
        runtime.sandbox_files(&sandbox.id)?.download(&query.path)
    })
    .await
    .map_err(|e| ApiError::internal(&e))??;
    let (chunks, received) = mpsc::channel(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(CHUNK, ChunkSender(chunks.clone()));
        if let Err(e) = opened.write_tar(&mut out) {
            // The client sees the stream break off, never a complete-looking archive.
            tracing::info!(error = %e, "download ended early");
            let _ = chunks.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|chunk| (chunk, received))
    });
    Ok((
        [
            (CONTENT_TYPE, TAR),
            (CONTENT_DISPOSITION, "attachment; filename=\"files.tar\""),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Sends what the tar builder writes to the response, chunk by chunk.
struct ChunkSender(mpsc::Sender<std::io::Result<Bytes>>);

impl std::io::Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `PUT /api/v1/sandboxes/{id}/files?path=REL_DIR` with a tar body: extracted into that
/// workspace directory (created if missing), all or nothing. Refused, naming the entry: an
/// absolute path, `..`, a symlink leading out of the workspace, a path through such a
/// symlink, a hard link to anything but an earlier entry, a device node or fifo. Setuid,
/// setgid and sticky bits are dropped.
#[utoipa::path(put, path = "/api/v1/sandboxes/{id}/files", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id"), FilesQuery), request_body(content = Vec<u8>, content_type = "application/x-tar", description = "a tar archive"), responses((status = 200, description = "extracted", body = Uploaded), (status = 400, description = "a bad path, a refused entry or a broken archive (nothing was extracted)", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such id, or not the caller's", body = ErrorBody), (status = 413, description = "the archive is larger than the gateway's max_upload", body = ErrorBody)))]
pub(super) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<FilesQuery>, QueryRejection>,
    body: Body,
) -> Result<Json<Uploaded>, ApiError> {
    let sandbox = visible(&state, &caller, id).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = state.config.max_upload;
    let (chunks, received) = mpsc::channel(IN_FLIGHT);
    let runtime = state.runtime.clone();
    let extraction = tokio::task::spawn_blocking(move || {
        let reader = ChunkReader {
            received,
            current: Bytes::new(),
        };
        runtime
            .sandbox_files(&sandbox.id)?
            .upload(&query.path, reader)
    });
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    let mut too_large = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(std::io::Error::other);
        if let Ok(bytes) = &chunk {
            total += bytes.len() as u64;
            too_large = total > limit;
        }
        let chunk = if too_large {
            Err(std::io::Error::other("the archive is too large"))
        } else {
            chunk
        };
        let stop = chunk.is_err();
        // The extraction stopped early (a refused entry): the rest is not needed.
        if chunks.send(chunk).await.is_err() || stop {
            break;
        }
    }
    drop(chunks);
    let result = extraction.await.map_err(|e| ApiError::internal(&e))?;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut left = DRAIN_BYTES;
        while let Some(Ok(chunk)) = stream.next().await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                break;
            }
        }
    })
    .await;
    if too_large {
        return Err(ApiError::payload_too_large(
            usize::try_from(limit).unwrap_or(usize::MAX),
        ));
    }
    Ok(Json(Uploaded { entries: result? }))
}

/// The request body as a blocking reader for the extraction thread.
struct ChunkReader {
    received: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.received.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
