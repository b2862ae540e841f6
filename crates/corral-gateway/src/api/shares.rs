//! Sharing a sandbox: its owner (or an admin) lets other users of the gateway open its
//! session host, for pairing on an agent's UI or showing a dev server. Someone it is shared
//! with sees it in their list and may get a ticket to its session host (which starts it when
//! it sleeps), nothing more: start, stop, exec, terminals, files, logs, activity, delete and
//! sharing stay with its owner and admins. A share ends when the owner removes it or the
//! sandbox or user is deleted; session hosts honour that within the credential cache's TTL.

use axum::Json;
use axum::extract::{Path, State};

use super::AppState;
use super::caller::Caller;
use super::error::{ApiError, ErrorBody};
use super::sandboxes::{SandboxView, visible};
use crate::validate;

/// `PUT /api/v1/sandboxes/{id}/shares/{email}`: shares the sandbox with that user.
#[utoipa::path(put, path = "/api/v1/sandboxes/{id}/shares/{email}", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id"), ("email" = String, Path, description = "the user to share it with")), responses((status = 200, description = "shared (again is fine)", body = SandboxView), (status = 400, description = "not an email, or the owner's", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such sandbox of the caller's, or no such user", body = ErrorBody)))]
pub(super) async fn share(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, email)): Path<(String, String)>,
) -> Result<Json<SandboxView>, ApiError> {
    let sandbox = visible(&state, &caller, id).await?;
    if !validate::is_email(&email) {
        return Err(ApiError::bad_request(format!(
            "{email:?} is not an email address: share with a user's email"
        )));
    }
    if email.eq_ignore_ascii_case(&sandbox.owner) {
        return Err(ApiError::bad_request(format!(
            "{email} owns sandbox {:?}: share it with someone else",
            sandbox.id
        )));
    }
    let (target, who) = (sandbox.id.clone(), email.clone());
    if !state.db(move |s| s.share_sandbox(&target, &who)).await? {
        return Err(ApiError::not_found(format!(
            "no user with email {email:?}: an admin adds users with `corral user add`"
        )));
    }
    tracing::info!(sandbox = %sandbox.id, with = %email, "sandbox shared");
    current(&state, sandbox.id).await
}

/// `DELETE /api/v1/sandboxes/{id}/shares/{email}`: stops sharing the sandbox with that user.
#[utoipa::path(delete, path = "/api/v1/sandboxes/{id}/shares/{email}", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id"), ("email" = String, Path, description = "the user to stop sharing it with")), responses((status = 200, description = "no longer shared", body = SandboxView), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such sandbox of the caller's, or not shared with that user", body = ErrorBody)))]
pub(super) async fn unshare(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, email)): Path<(String, String)>,
) -> Result<Json<SandboxView>, ApiError> {
    let sandbox = visible(&state, &caller, id).await?;
    let (target, who) = (sandbox.id.clone(), email.clone());
    if !state.db(move |s| s.unshare_sandbox(&target, &who)).await? {
        return Err(ApiError::not_found(format!(
            "sandbox {:?} is not shared with {email:?}",
            sandbox.id
        )));
    }
    tracing::info!(sandbox = %sandbox.id, with = %email, "sandbox no longer shared");
    current(&state, sandbox.id).await
}

/// The sandbox's record as it is now.
async fn current(state: &AppState, id: String) -> Result<Json<SandboxView>, ApiError> {
    let lookup = id.clone();
    let sandbox = state
        .db(move |s| s.sandbox(&lookup))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no sandbox with id {id:?}")))?;
    Ok(Json(SandboxView::new(state, sandbox)))
}
