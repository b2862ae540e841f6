//! A sandbox's policy decisions: its `audit.jsonl` (one `corral_policy::AuditEvent` per
//! line, newest last) as NDJSON, optionally followed while the sandbox runs. The web page's
//! activity view reads it; like every sandbox endpoint, only the owner and admins see it.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use super::caller::Caller;
use super::error::ErrorBody;
use super::lifecycle::{SandboxFile, file_stream};
use super::sandboxes::visible;
use super::{ApiError, AppState, Path};

/// Query of the audit endpoint.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Keep the response open and send new decisions until the sandbox stops (or the
    /// gateway shuts down).
    #[serde(default)]
    follow: bool,
}

/// `GET /api/v1/sandboxes/{id}/audit`: every policy decision made for the sandbox (allowed
/// and denied, with the deciding policies), one JSON object per line, newest last.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/audit", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id"), AuditQuery), responses((status = 200, description = "the decisions, as NDJSON", content_type = "application/x-ndjson", body = String), (status = 400, description = "bad query", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such id, or not the caller's", body = ErrorBody)))]
pub(super) async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let sandbox = visible(&state, &caller, id).await?;
    Ok(file_stream(
        &state,
        sandbox.id,
        SandboxFile::Audit(0),
        query.follow,
        "application/x-ndjson",
    ))
}
