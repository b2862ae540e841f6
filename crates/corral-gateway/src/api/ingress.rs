//! The API side of ingress: the agent templates on offer, choosing one at create, the session
//! host URL in a sandbox's JSON, and one-time tickets that let the web page send a browser to
//! a session host (see `crate::ingress` for the host side).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::caller::Caller;
use super::error::ErrorBody;
use super::sandboxes::viewable;
use super::{ApiError, AppState, Json, Path};
use crate::agents::{self, CUSTOM};
use crate::ingress::{SessionHosts, tickets};
use crate::store::Sandbox;

/// An agent template as the API shows it.
#[derive(Serialize, ToSchema)]
pub(super) struct AgentView {
    name: String,
    description: String,
    ports: Vec<u16>,
    /// The port its session host reaches (null: it serves nothing).
    primary_port: Option<u16>,
}

/// `GET /api/v1/agents`: the built-in and configured agent templates.
#[utoipa::path(get, path = "/api/v1/agents", tag = "sandboxes", security(("bearer" = [])), responses((status = 200, body = Vec<AgentView>), (status = 401, description = "no or bad credentials", body = ErrorBody)))]
pub(super) async fn list_agents(
    State(state): State<AppState>,
    _caller: Caller,
) -> Json<Vec<AgentView>> {
    let all = agents::catalog(&state.config.agents);
    Json(
        all.into_iter()
            .map(|(name, t)| AgentView {
                primary_port: t.primary(),
                name,
                description: t.description,
                ports: t.ports,
            })
            .collect(),
    )
}

/// What a create request asked to run.
pub(super) struct Chosen {
    /// The template's name, or `custom`.
    pub agent: String,
    /// The ports, the one its session host reaches first.
    pub ports: Vec<u16>,
    /// The custom command, if any.
    pub command: Option<Vec<String>>,
}

/// Reads a create request's agent, command and ports.
pub(super) fn choose_agent(
    state: &AppState,
    agent: Option<String>,
    command: Option<Vec<String>>,
    extra_ports: Vec<u16>,
) -> Result<Chosen, ApiError> {
    agents::check_ports(&extra_ports).map_err(ApiError::bad_request)?;
    if let Some(command) = command {
        if agent.as_deref().is_some_and(|a| a != CUSTOM) {
            return Err(ApiError::bad_request(
                "give either agent or command, not both",
            ));
        }
        if command.first().is_none_or(|c| c.is_empty())
            || command.len() > 1024
            || command.iter().any(|a| a.contains('\0'))
        {
            return Err(ApiError::bad_request(
                "command must name a program (at most 1024 arguments, no NUL)",
            ));
        }
        return Ok(Chosen {
            agent: CUSTOM.into(),
            ports: extra_ports,
            command: Some(command),
        });
    }
    let name = agent.unwrap_or_else(|| "shell".into());
    let all = agents::catalog(&state.config.agents);
    let Some(template) = all.get(&name) else {
        let names: Vec<&str> = all.keys().map(String::as_str).collect();
        return Err(ApiError::bad_request(format!(
            "unknown agent {name:?}: valid agents are {} (or give a command)",
            names.join(", ")
        )));
    };
    // The template's primary port first, then its others, then the caller's extras.
    let mut ports: Vec<u16> = template.primary().into_iter().collect();
    for port in template.ports.iter().chain(&extra_ports) {
        if !ports.contains(port) {
            ports.push(*port);
        }
    }
    agents::check_ports(&ports).map_err(ApiError::bad_request)?;
    Ok(Chosen {
        agent: name,
        ports,
        command: None,
    })
}

/// The session host URL of `sandbox`, if it serves a port.
pub(super) fn session_url(state: &AppState, sandbox: &Sandbox) -> Option<String> {
    sandbox.ports.first()?;
    Some(SessionHosts::new(&state.config).url(&sandbox.id, None))
}

/// Query of the ticket endpoint.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct TicketQuery {
    /// A port other than the primary one (its host is `<id>-<port><suffix>.<domain>`).
    port: Option<u16>,
}

/// A one-time ticket in a URL.
#[derive(Serialize, ToSchema)]
pub(super) struct TicketView {
    /// Open this in the browser: the session host spends the ticket, sets its own cookie and
    /// redirects to `/`.
    url: String,
    /// Seconds the ticket stays valid (it is spent on first use).
    expires_in: u64,
}

/// `POST /api/v1/sandboxes/{id}/ticket`: a one-time, short-lived ticket for the caller and
/// this sandbox's session host.
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/ticket", tag = "sandboxes", security(("bearer" = [])), params(("id" = String, Path, description = "sandbox id"), TicketQuery), responses((status = 200, body = TicketView), (status = 400, description = "bad query", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such id, not the caller's, or no such port", body = ErrorBody), (status = 409, description = "the sandbox serves no port", body = ErrorBody)))]
pub(super) async fn ticket(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<TicketQuery>, QueryRejection>,
) -> Result<Json<TicketView>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let sandbox = viewable(&state, &caller, id).await?;
    if sandbox.ports.is_empty() {
        return Err(ApiError::conflict(format!(
            "sandbox {:?} serves no port (agent {}): there is no session host to open",
            sandbox.id, sandbox.agent
        )));
    }
    if let Some(port) = query.port
        && !sandbox.ports.contains(&port)
    {
        return Err(ApiError::not_found(format!(
            "sandbox {:?} does not serve port {port}",
            sandbox.id
        )));
    }
    let (ticket, hash) = tickets::new_secret().map_err(|e| ApiError::internal(&e))?;
    let (user_id, sandbox_id) = (caller.0.id, sandbox.id.clone());
    let expires = tickets::expiry(tickets::TICKET_TTL);
    state
        .db(move |s| {
            s.add_host_credential(
                crate::store::CredentialKind::Ticket,
                &hash,
                user_id,
                &sandbox_id,
                expires,
            )
        })
        .await?;
    let base = SessionHosts::new(&state.config).url(&sandbox.id, query.port);
    Ok(Json(TicketView {
        url: format!("{base}{}?ticket={ticket}", tickets::AUTH_PATH),
        expires_in: tickets::TICKET_TTL.as_secs(),
    }))
}
