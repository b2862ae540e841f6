//! Running sandboxes: start, stop, exec and logs. Like the record endpoints, a sandbox the
//! caller may not see is a 404. Start and stop are idempotent: they answer with the state the
//! sandbox is in afterwards.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa::{IntoParams, ToSchema};

use super::caller::Caller;
use super::error::ErrorBody;
use super::sandboxes::{SandboxView, visible};
use super::{ApiError, AppState, Json, Path};
use crate::runtime::{ExecOutput, RuntimeError};

/// Most arguments (and, separately, environment variables) an exec may pass.
const MAX_ARGS: usize = 1024;
/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Bytes read from a log file at a time.
const LOG_CHUNK: usize = 64 * 1024;

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::NotFound(id) => ApiError::not_found(format!("no sandbox with id {id:?}")),
            RuntimeError::NotRunning(_) => ApiError::conflict(e.to_string()),
            RuntimeError::Exec(_) => ApiError::bad_request(e.to_string()),
            RuntimeError::UnknownProfile(_) | RuntimeError::UnknownAgent(_) => {
                ApiError::conflict(e.to_string())
            }
            RuntimeError::Clone { .. } => ApiError::clone_failed(e.to_string()),
            RuntimeError::ShuttingDown => ApiError::unavailable(e.to_string()),
            RuntimeError::Store(e) => e.into(),
            other => ApiError::internal(&other),
        }
    }
}

/// `POST /api/v1/sandboxes/{id}/start`: starts the sandbox (if it is not running) and
/// answers once it accepts commands, or once it ended (`exited`; its log says why). A repo
/// session's first start also clones the repo into the workspace and checks out the branch.
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/start", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id")), responses((status = 200, description = "the sandbox after the start: running, or exited if it failed at once", body = SandboxView), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such id, or not the caller's", body = ErrorBody), (status = 409, description = "its profile is no longer configured", body = ErrorBody), (status = 422, description = "a repo session's repo could not be cloned (the sandbox is stopped again)", body = ErrorBody)))]
pub(super) async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, ApiError> {
    let sandbox = visible(&state, &caller, id).await?;
    let started = state.runtime.start(&sandbox.id).await?;
    Ok(Json(SandboxView::new(&state, started)))
}

/// `POST /api/v1/sandboxes/{id}/stop`: stops the sandbox if it runs (SIGTERM, then SIGKILL
/// after a grace period). Its workspace and home are kept.
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/stop", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id")), responses((status = 200, description = "the sandbox after the stop", body = SandboxView), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such id, or not the caller's", body = ErrorBody)))]
pub(super) async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, ApiError> {
    let sandbox = visible(&state, &caller, id).await?;
    let stopped = state.runtime.stop(&sandbox.id).await?;
    Ok(Json(SandboxView::new(&state, stopped)))
}

/// A command to run in a running sandbox, non-interactively (stdin is empty).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecBody {
    /// The command and its arguments, looked up in the sandbox's `PATH`.
    argv: Vec<String>,
    /// Variables added to the sandbox's environment.
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    /// Working directory inside the sandbox (absolute; default `/workspace`).
    cwd: Option<String>,
}

/// How the command ended. Output is UTF-8 (invalid bytes replaced), at most 1 MiB per stream.
#[derive(Serialize, ToSchema)]
pub(super) struct ExecResult {
    /// Exit status (128 + N when signal N killed it).
    exit_code: i32,
    stdout: String,
    stderr: String,
    /// Whether stdout was longer than 1 MiB and cut.
    stdout_truncated: bool,
    /// Whether stderr was longer than 1 MiB and cut.
    stderr_truncated: bool,
}

impl From<ExecOutput> for ExecResult {
    fn from(o: ExecOutput) -> Self {
        Self {
            exit_code: o.exit_code,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            stdout_truncated: o.stdout_truncated,
            stderr_truncated: o.stderr_truncated,
        }
    }
}

impl ExecBody {
    fn into_request(self) -> Result<corral_sandbox::control::ExecRequest, ApiError> {
        let has_nul = |s: &str| s.contains('\0');
        if self.argv.first().is_none_or(|a| a.is_empty()) {
            return Err(ApiError::bad_request("argv must name a command"));
        }
        if self.argv.len() > MAX_ARGS || self.env.len() > MAX_ARGS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_ARGS} arguments and {MAX_ARGS} variables"
            )));
        }
        if self.argv.iter().any(|a| has_nul(a)) {
            return Err(ApiError::bad_request("argv must not contain NUL"));
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains('=') || has_nul(name) || has_nul(value) {
                return Err(ApiError::bad_request(format!(
                    "invalid environment variable name {name:?} (or a NUL in its value)"
                )));
            }
        }
        if let Some(cwd) = &self.cwd
            && (!cwd.starts_with('/') || has_nul(cwd))
        {
            return Err(ApiError::bad_request("cwd must be an absolute path"));
        }
        Ok(corral_sandbox::control::ExecRequest {
            argv: self.argv,
            env: self.env.into_iter().collect(),
            cwd: self.cwd.map(Into::into),
            tty: false,
        })
    }
}

/// `POST /api/v1/sandboxes/{id}/exec`: runs a command in the running sandbox, under the
/// sandbox's restrictions, and answers when it ends.
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/exec", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id")), request_body = ExecBody, responses((status = 200, description = "the command ended", body = ExecResult), (status = 400, description = "malformed request, or the command could not be started", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such id, or not the caller's", body = ErrorBody), (status = 409, description = "the sandbox is not running", body = ErrorBody), (status = 503, description = "the gateway is shutting down", body = ErrorBody)))]
pub(super) async fn exec(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ExecBody>,
) -> Result<Json<ExecResult>, ApiError> {
    let sandbox = visible(&state, &caller, id).await?;
    let request = body.into_request()?;
    let output = state.runtime.exec(&sandbox.id, request).await?;
    Ok(Json(output.into()))
}

/// Query of the logs endpoint.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsQuery {
    /// Keep the response open and send new output until the sandbox stops (or the gateway
    /// shuts down).
    #[serde(default)]
    follow: bool,
}

/// `GET /api/v1/sandboxes/{id}/logs`: the agent's stdout and stderr (and corral's own
/// messages about the sandbox), across runs, as text. `?follow=true` keeps sending new
/// output while the sandbox runs.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/logs", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id"), LogsQuery), responses((status = 200, description = "the log", content_type = "text/plain", body = String), (status = 400, description = "bad query", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such id, or not the caller's", body = ErrorBody)))]
pub(super) async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let sandbox = visible(&state, &caller, id).await?;
    let path = state.runtime.log_file(&sandbox.id);
    let runtime = state.runtime.clone();
    let id = sandbox.id;
    // (offset, done): the stream reads from where it was, and on reaching the end either
    // stops or, when following a running sandbox, waits for more.
    let stream = futures_util::stream::unfold((0u64, false), move |(offset, done)| {
        let path = path.clone();
        let runtime = runtime.clone();
        let id = id.clone();
        async move {
            if done {
                return None;
            }
            loop {
                match read_chunk(&path, offset).await {
                    Ok(chunk) if !chunk.is_empty() => {
                        let next = offset + chunk.len() as u64;
                        return Some((Ok::<_, std::io::Error>(chunk), (next, false)));
                    }
                    Ok(_)
                        if query.follow
                            && runtime.is_running(&id)
                            && !runtime.is_shutting_down() =>
                    {
                        tokio::time::sleep(FOLLOW_POLL).await;
                    }
                    Ok(_) => return None,
                    Err(e) => return Some((Err(e), (offset, true))),
                }
            }
        }
    });
    Ok((
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Up to [`LOG_CHUNK`] bytes of the file at `offset`; empty at its end or if it does not
/// exist yet (never started).
async fn read_chunk(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut chunk = vec![0; LOG_CHUNK];
    let n = file.read(&mut chunk).await?;
    chunk.truncate(n);
    Ok(chunk)
}
