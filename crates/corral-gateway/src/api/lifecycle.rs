//! Running sandboxes: start, stop, exec and logs. Like the record endpoints, a sandbox the
//! caller may not see is a 404. Start and stop are idempotent: they answer with the state the
//! sandbox is in afterwards.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::caller::Caller;
use super::error::ErrorBody;
use super::sandboxes::{SandboxView, visible};
use super::{ApiError, AppState, Json, Path};
use crate::runtime::{ExecOutput, LogCursor, Runtime, RuntimeError};

/// Most arguments (and, separately, environment variables) an exec may pass.
const MAX_ARGS: usize = 1024;
/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

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
    #[schema(min_items = 1)]
    argv: Vec<String>,
    /// Variables added to the sandbox's environment.
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    /// Working directory inside the sandbox (absolute; default `/workspace`).
    cwd: Option<String>,
    /// Seconds the command may run before it is killed (default: the gateway's
    /// `exec_timeout`; at most its `max_exec_timeout`).
    #[schema(minimum = 1)]
    timeout_secs: Option<u64>,
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
    /// Whether the command ran out of time and was killed (its process group, with
    /// SIGKILL; `exit_code` is then 137).
    timed_out: bool,
}

impl From<ExecOutput> for ExecResult {
    fn from(o: ExecOutput) -> Self {
        Self {
            exit_code: o.exit_code,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            stdout_truncated: o.stdout_truncated,
            stderr_truncated: o.stderr_truncated,
            timed_out: o.timed_out,
        }
    }
}

impl ExecBody {
    /// How long the command may run: `timeout_secs`, checked against the gateway's bound.
    fn timeout(&self, config: &crate::config::Config) -> Result<Duration, ApiError> {
        let Some(secs) = self.timeout_secs else {
            return Ok(config.exec_timeout);
        };
        let max = config.max_exec_timeout.as_secs();
        if secs == 0 || secs > max {
            return Err(ApiError::bad_request(format!(
                "timeout_secs must be between 1 and {max} (this gateway's max_exec_timeout)"
            )));
        }
        Ok(Duration::from_secs(secs))
    }

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
/// sandbox's restrictions, and answers when it ends, or when its time is up (it is then
/// killed). A client that disconnects before the answer kills the command.
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/exec", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id")), request_body = ExecBody, responses((status = 200, description = "the command ended", body = ExecResult), (status = 400, description = "malformed request, or the command could not be started", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such id, or not the caller's", body = ErrorBody), (status = 409, description = "the sandbox is not running", body = ErrorBody), (status = 503, description = "the gateway is shutting down", body = ErrorBody)))]
pub(super) async fn exec(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ExecBody>,
) -> Result<Json<ExecResult>, ApiError> {
    let sandbox = visible(&state, &caller, id).await?;
    let timeout = body.timeout(&state.config)?;
    let request = body.into_request()?;
    let output = state
        .runtime
        .exec_with_timeout(&sandbox.id, request, timeout)
        .await?;
    Ok(Json(output.into()))
}

/// Query of the logs endpoint.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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
    let cursor = state.runtime.log_cursor(&sandbox.id);
    Ok(file_stream(
        &state,
        sandbox.id,
        SandboxFile::Log(cursor),
        query.follow,
        "text/plain; charset=utf-8",
    ))
}

/// Which of a sandbox's files a streamed body reads, and where it is in it.
pub(super) enum SandboxFile {
    /// The agent log, followed across rotations.
    Log(LogCursor),
    /// The audit log (never rotated), at this offset.
    Audit(u64),
}

impl SandboxFile {
    /// The next bytes after the position, empty when there are none yet.
    async fn next(&mut self, runtime: &Runtime, id: &str) -> std::io::Result<Vec<u8>> {
        match self {
            SandboxFile::Log(cursor) => runtime.read_log(id, cursor).await,
            SandboxFile::Audit(offset) => runtime.read_audit(id, offset).await,
        }
    }
}

/// A sandbox's file as a streamed body of `content_type`, from `file`'s position; with
/// `follow`, new bytes are sent as they are appended while sandbox `id` runs (and the gateway
/// is not shutting down). A file not there yet is empty.
pub(super) fn file_stream(
    state: &AppState,
    id: String,
    file: SandboxFile,
    follow: bool,
    content_type: &'static str,
) -> Response {
    let runtime = state.runtime.clone();
    // (file, done): the stream reads from where it was, and on reaching the end either
    // stops or, when following a running sandbox, waits for more.
    let stream = futures_util::stream::unfold((file, false), move |(mut file, done)| {
        let runtime = runtime.clone();
        let id = id.clone();
        async move {
            if done {
                return None;
            }
            loop {
                match file.next(&runtime, &id).await {
                    Ok(chunk) if !chunk.is_empty() => {
                        return Some((Ok::<_, std::io::Error>(chunk), (file, false)));
                    }
                    Ok(_) if follow && runtime.is_running(&id) && !runtime.is_shutting_down() => {
                        tokio::time::sleep(FOLLOW_POLL).await;
                    }
                    Ok(_) => return None,
                    Err(e) => return Some((Err(e), (file, true))),
                }
            }
        }
    });
    ([(CONTENT_TYPE, content_type)], Body::from_stream(stream)).into_response()
}
