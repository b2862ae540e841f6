//! Sandbox records: create (idempotent for repo sessions), list, get, delete. Only the owner
//! and admins see a sandbox; to everyone else it does not exist (404, not 403), so ids are
//! not confirmed to strangers. Starting and stopping are in `lifecycle`; delete stops first.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::caller::Caller;
use super::error::ErrorBody;
use super::{ApiError, AppState, Json, Path, rfc3339};
use crate::auth::{hex, random_hex};
use crate::store::{Inserted, NewSandbox, Sandbox};
use crate::validate;

/// Branch a repo session uses when none is given.
const DEFAULT_BRANCH: &str = "main";
/// Profile used when none is given (as for `corral run`).
const DEFAULT_PROFILE: &str = "restricted";

/// A repo session's id: the first 12 hex digits of sha256(email "\n" repo "\n" branch), so
/// the same user, repo and branch always reach the same sandbox.
pub fn repo_session_id(email: &str, repo: &str, branch: &str) -> String {
    let digest = Sha256::digest(format!("{email}\n{repo}\n{branch}").as_bytes());
    hex(&digest)[..12].to_owned()
}

#[derive(Serialize, ToSchema)]
pub(super) struct SandboxView {
    id: String,
    name: String,
    owner: String,
    profile: String,
    repo: Option<String>,
    branch: Option<String>,
    agent: String,
    /// Ports it serves; the first is the one its session host reaches.
    ports: Vec<u16>,
    /// The custom command it runs (agent `custom`); null for a template.
    command: Option<Vec<String>>,
    /// Its session host's base URL (null when it serves no port).
    url: Option<String>,
    /// `stopped`, `running`, `stopping` or `exited`.
    state: String,
    /// How the last run ended by itself (null while running, after a stop, or if unknown).
    exit_code: Option<i32>,
    /// Users it is shared with (they may open its session host), by email.
    shared_with: Vec<String>,
    /// While a start runs: what it is doing ("starting the sandbox", or for a repo session's
    /// first start "cloning URL: Receiving objects:  45% (450/1000)" as git reports it).
    progress: Option<String>,
    created: String,
    last_activity: String,
}

impl SandboxView {
    /// The view of `s` on a gateway whose session hosts `state` describes.
    pub(super) fn new(state: &AppState, s: Sandbox) -> Self {
        Self {
            url: super::ingress::session_url(state, &s),
            progress: state.runtime.progress(&s.id),
            shared_with: s.shared_with.into_iter().map(|u| u.email).collect(),
            command: s.command,
            id: s.id,
            name: s.name,
            owner: s.owner,
            profile: s.profile,
            repo: s.repo,
            branch: s.branch,
            agent: s.agent,
            ports: s.ports,
            state: s.state,
            exit_code: s.exit_code,
            created: rfc3339(s.created),
            last_activity: rfc3339(s.last_activity),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateSandbox {
    /// A DNS label, unique on the gateway: the sandbox's id (and session host) unless it is a
    /// repo session, whose id is the hash of owner, repo and branch. Without a name (and
    /// repo) the id is 12 random hex digits.
    name: Option<String>,
    profile: Option<String>,
    repo: Option<String>,
    branch: Option<String>,
    /// Agent template (see `GET /api/v1/agents`; default `shell`).
    agent: Option<String>,
    /// Ports to serve besides the template's (with `command`: the ports it serves, the first
    /// reached at the session host).
    #[serde(default)]
    ports: Vec<u16>,
    /// A custom command instead of a template.
    command: Option<Vec<String>>,
}

/// `POST /api/v1/sandboxes`: 201 with a new record, or 200 with the caller's existing repo
/// session for the same repo and branch.
#[utoipa::path(post, path = "/api/v1/sandboxes", tag = "sandboxes", security(("bearer" = [])), request_body = CreateSandbox, responses((status = 201, description = "recorded", body = SandboxView), (status = 200, description = "the caller's existing repo session", body = SandboxView), (status = 400, description = "malformed or invalid request", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 409, description = "already exists", body = ErrorBody)))]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateSandbox>,
) -> Result<(StatusCode, Json<SandboxView>), ApiError> {
    let profile = req.profile.unwrap_or_else(|| DEFAULT_PROFILE.into());
    // Only names (built-in or configured by the operator): a path here would have the
    // gateway read files a caller chose.
    let mut valid: Vec<&str> = corral_policy::builtin_names().collect();
    valid.extend(state.config.profiles.keys().map(String::as_str));
    if !valid.contains(&profile.as_str()) {
        return Err(ApiError::bad_request(format!(
            "unknown profile {profile:?}: valid profiles are {}",
            valid.join(", ")
        )));
    }
    let chosen = super::ingress::choose_agent(&state, req.agent, req.command, req.ports)?;
    if let Some(name) = &req.name {
        validate::sandbox_name(name).map_err(ApiError::bad_request)?;
    }
    let (id, repo, branch) = match req.repo {
        Some(repo) => {
            validate::repo(&repo).map_err(ApiError::bad_request)?;
            let branch = req.branch.unwrap_or_else(|| DEFAULT_BRANCH.into());
            validate::branch(&branch).map_err(ApiError::bad_request)?;
            let id = repo_session_id(&caller.0.email, &repo, &branch);
            (id, Some(repo), Some(branch))
        }
        None if req.branch.is_some() => {
            return Err(ApiError::bad_request("branch needs a repo"));
        }
        // A named sandbox's id is its name; an unnamed one gets 12 random hex digits (no
        // '-', so never mistaken for `<id>-<port>`).
        None => match &req.name {
            Some(name) => (name.clone(), None, None),
            None => (
                random_hex(6).map_err(|e| ApiError::internal(&e))?,
                None,
                None,
            ),
        },
    };
    let new = NewSandbox {
        name: req.name.unwrap_or_else(|| id.clone()),
        id,
        owner_id: caller.0.id,
        profile,
        repo,
        branch,
        agent: chosen.agent,
        ports: chosen.ports,
        command: chosen.command,
    };
    match state.db(move |s| s.insert_sandbox(&new)).await? {
        Inserted::Created(sandbox) => {
            // A new sandbox starts empty, even on an id whose files an older gateway kept.
            state.runtime.retire_files(&sandbox.id)?;
            tracing::info!(sandbox = %sandbox.id, "sandbox created");
            Ok((StatusCode::CREATED, Json(SandboxView::new(&state, sandbox))))
        }
        Inserted::Existing(sandbox) => {
            Ok((StatusCode::OK, Json(SandboxView::new(&state, sandbox))))
        }
    }
}

/// `GET /api/v1/sandboxes`: the caller's sandboxes and those shared with them (an admin's:
/// everyone's).
#[utoipa::path(get, path = "/api/v1/sandboxes", tag = "sandboxes", security(("bearer" = [])), responses((status = 200, body = Vec<SandboxView>), (status = 401, description = "no or bad credentials", body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<SandboxView>>, ApiError> {
    let owner = (!caller.is_admin()).then_some(caller.0.id);
    let sandboxes = state.db(move |s| s.list_sandboxes(owner)).await?;
    Ok(Json(
        sandboxes
            .into_iter()
            .map(|s| SandboxView::new(&state, s))
            .collect(),
    ))
}

/// The sandbox `id` if the caller may look at it and open its session host (its owner, an
/// admin, or someone it is shared with); 404 otherwise.
pub(super) async fn viewable(
    state: &AppState,
    caller: &Caller,
    id: String,
) -> Result<Sandbox, ApiError> {
    find(state, id, |s| s.opens_for(caller.0.id) || caller.is_admin()).await
}

/// The sandbox `id` if the caller may act on it (its owner or an admin); 404 otherwise.
pub(super) async fn visible(
    state: &AppState,
    caller: &Caller,
    id: String,
) -> Result<Sandbox, ApiError> {
    find(state, id, |s| {
        s.owner_id == caller.0.id || caller.is_admin()
    })
    .await
}

/// The sandbox `id` if `allowed`; the same 404 as for no such id otherwise, so ids of
/// others' sandboxes are not confirmed.
async fn find(
    state: &AppState,
    id: String,
    allowed: impl Fn(&Sandbox) -> bool,
) -> Result<Sandbox, ApiError> {
    let not_found = || ApiError::not_found(format!("no sandbox with id {id:?}"));
    let lookup = id.clone();
    let sandbox = state.db(move |s| s.sandbox(&lookup)).await?;
    sandbox.filter(|s| allowed(s)).ok_or_else(not_found)
}

/// `GET /api/v1/sandboxes/{id}`.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id")), responses((status = 200, body = SandboxView), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such id, or not the caller's", body = ErrorBody)))]
pub(super) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, ApiError> {
    let sandbox = viewable(&state, &caller, id).await?;
    Ok(Json(SandboxView::new(&state, sandbox)))
}

/// Query of the delete endpoint.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteQuery {
    /// Also remove the workspace, the home and the logs (default: keep them on the host).
    #[serde(default)]
    purge: bool,
}

/// `DELETE /api/v1/sandboxes/{id}`: stops the sandbox if it runs and removes the record; the
/// workspace and home stay on the host unless `?purge=true`.
#[utoipa::path(delete, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id"), DeleteQuery), responses((status = 204, description = "deleted"), (status = 400, description = "bad query", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such id, or not the caller's", body = ErrorBody)))]
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let sandbox = visible(&state, &caller, id).await?;
    let deleting = state.runtime.delete(&sandbox.id, query.purge);
    crate::runtime::because(crate::runtime::Cause::Delete, deleting).await?;
    tracing::info!(sandbox = %sandbox.id, purge = query.purge, "sandbox deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_session_id_is_sha256_of_email_repo_branch() {
        // printf 'a@x\nhttps://h/r.git\nmain' | sha256sum
        let id = repo_session_id("a@x", "https://h/r.git", "main");
        assert_eq!(id, "5a9c329fdedb");
        assert_ne!(id, repo_session_id("b@x", "https://h/r.git", "main"));
        assert_ne!(id, repo_session_id("a@x", "https://h/r.git", "dev"));
    }
}
