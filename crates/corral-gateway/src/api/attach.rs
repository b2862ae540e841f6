//! `GET /api/v1/sandboxes/{id}/attach`: an interactive terminal over a WebSocket. Binary
//! frames carry terminal bytes both ways; the client sends `{"type":"resize","cols","rows"}`
//! as text; the server ends with `{"type":"exit","code"}` and a normal close. Everything that
//! can be refused (credentials, ownership, a stopped sandbox, a bad query) is refused with a
//! JSON error before the upgrade.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use super::caller::Caller;
use super::error::ErrorBody;
use super::sandboxes::visible;
use super::{ApiError, AppState, Path};
use crate::runtime::{Runtime, Terminal, TerminalCommand, TerminalEnd, TerminalSize};

/// The command a terminal runs when none is given: the login shell, in the workspace.
const LOGIN_SHELL: &str = "if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh";
/// Largest terminal side accepted, in cells.
const MAX_CELLS: u16 = 4096;
/// Largest text frame (a resize message) read.
const MAX_TEXT: usize = 1024;
/// Exit status reported when the command could not be started (as a shell does).
const NOT_STARTED: i32 = 127;
/// Exit status reported when the sandbox went away under the command (as ssh does).
const LOST: i32 = 255;

/// Query of the attach endpoint.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AttachQuery {
    /// Terminal width in columns (default 80).
    cols: Option<u16>,
    /// Terminal height in rows (default 24).
    rows: Option<u16>,
    /// A command line to run with `/bin/sh -c` instead of the login shell (`/bin/bash -l`,
    /// else `/bin/sh`). It runs in `/workspace` under the sandbox's restrictions.
    command: Option<String>,
}

/// What a client sends as a text frame.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum ClientMessage {
    Resize { cols: u16, rows: u16 },
}

fn size(cols: u16, rows: u16) -> Result<TerminalSize, String> {
    if cols == 0 || rows == 0 || cols > MAX_CELLS || rows > MAX_CELLS {
        return Err(format!(
            "cols and rows must be between 1 and {MAX_CELLS} (got {cols}x{rows})"
        ));
    }
    Ok(TerminalSize { cols, rows })
}

/// `GET /api/v1/sandboxes/{id}/attach`: upgrades to a WebSocket relaying a terminal.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/attach", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id"), AttachQuery), responses((status = 101, description = "upgraded to a WebSocket: binary frames are terminal bytes both ways; the client sends text `{\"type\":\"resize\",\"cols\":N,\"rows\":N}`; the server sends text `{\"type\":\"exit\",\"code\":N}` when the command ends, then closes"), (status = 400, description = "not a WebSocket request, or a bad query", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such id, or not the caller's", body = ErrorBody), (status = 409, description = "the sandbox is not running", body = ErrorBody)))]
pub(super) async fn attach(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<AttachQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let sandbox = visible(&state, &caller, id).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::bad_request(format!(
            "{}: connect with a WebSocket client",
            e.body_text()
        ))
    })?;
    let size =
        size(query.cols.unwrap_or(80), query.rows.unwrap_or(24)).map_err(ApiError::bad_request)?;
    let command = match query.command {
        Some(line) if line.contains('\0') => {
            return Err(ApiError::bad_request("command must not contain NUL"));
        }
        Some(line) => line,
        None => LOGIN_SHELL.to_owned(),
    };
    let request = corral_sandbox::control::ExecRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), command],
        env: vec![("TERM".into(), "xterm-256color".into())],
        cwd: Some("/workspace".into()),
        tty: true,
    };
    let (terminal, command) = state.runtime.attach(&sandbox.id, request, size)?;
    let runtime = state.runtime.clone();
    tracing::info!(sandbox = %sandbox.id, "terminal attached");
    Ok(upgrade
        .max_message_size(1024 * 1024)
        .on_upgrade(move |socket| relay(socket, terminal, command, runtime)))
}

/// Relays until the command ends (exit frame, close), the client goes away (the terminal is
/// dropped: the command gets SIGHUP) or the gateway shuts down.
async fn relay(
    mut socket: WebSocket,
    terminal: Terminal,
    mut command: TerminalCommand,
    runtime: Arc<Runtime>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut reading = true;
    loop {
        tokio::select! {
            read = terminal.read(&mut buf), if reading => match read {
                Ok(n) if n > 0 => {
                    let frame = Message::Binary(buf[..n].to_vec().into());
                    if socket.send(frame).await.is_err() {
                        return;
                    }
                }
                // Wait for the command's status instead.
                _ => reading = false,
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(input))) => {
                    if terminal.write_all(&input).await.is_err() {
                        reading = false;
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if let Err(reason) = resize(&terminal, text.as_str()) {
                        close(&mut socket, close_code::INVALID, reason).await;
                        return;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
            },
            end = command.wait() => {
                finish(&mut socket, &terminal, end).await;
                return;
            }
            () = runtime.shutting_down() => {
                close(&mut socket, close_code::AWAY, "the gateway is shutting down".into()).await;
                return;
            }
        }
    }
}

/// Applies a resize message; the reason it is refused otherwise.
fn resize(terminal: &Terminal, text: &str) -> Result<(), String> {
    if text.len() > MAX_TEXT {
        return Err("text frame too large".into());
    }
    let ClientMessage::Resize { cols, rows } = serde_json::from_str(text)
        .map_err(|e| format!("expected {{\"type\":\"resize\",\"cols\":N,\"rows\":N}}: {e}"))?;
    terminal
        .resize(size(cols, rows)?)
        .map_err(|e| format!("cannot resize: {e}"))
}

/// Sends the rest of the output and the exit frame, then closes.
async fn finish(socket: &mut WebSocket, terminal: &Terminal, end: TerminalEnd) {
    let mut tail = terminal.tail().await;
    let code = match end {
        TerminalEnd::Exited(code) => code,
        TerminalEnd::Refused(reason) => {
            tail.extend_from_slice(
                format!("corral: cannot run the command: {reason}\r\n").as_bytes(),
            );
            NOT_STARTED
        }
        TerminalEnd::Lost(e) => {
            tracing::info!(error = %e, "the sandbox went away under an attached terminal");
            tail.extend_from_slice(b"corral: the sandbox stopped\r\n");
            LOST
        }
    };
    if !tail.is_empty() && socket.send(Message::Binary(tail.into())).await.is_err() {
        return;
    }
    let exit = serde_json::json!({ "type": "exit", "code": code }).to_string();
    if socket.send(Message::Text(exit.into())).await.is_ok() {
        close(socket, close_code::NORMAL, String::new()).await;
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: String) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}
