//! The admin's page: every user's sessions, the users (and adding one) and the admin's API
//! tokens (create, revoke). Forms post JSON to the API (corral.js), which checks the admin
//! role again; a new token is shown once, by the script, and never rendered by the server.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::session::Viewer;
use super::{error_page, html, layout, sessions};
use crate::api::{AppState, rfc3339};

/// For a viewer who is not an admin, the page that says only admins may look.
fn refuse_non_admin(viewer: &Viewer) -> Option<Response> {
    (!viewer.is_admin()).then(|| {
        error_page(
            Some(viewer),
            StatusCode::FORBIDDEN,
            "Only an admin may see this page. Ask your corral admin if you need users or tokens.",
        )
    })
}

/// `GET /admin`.
pub(super) async fn page(State(state): State<AppState>, viewer: Viewer) -> Response {
    if let Some(page) = refuse_non_admin(&viewer) {
        return page;
    }
    let (sessions, users, tokens) = match (
        sessions::list_markup(&state, &viewer).await,
        users(&state).await,
        tokens(&state, &viewer).await,
    ) {
        (Ok(s), Ok(u), Ok(t)) => (s, u, t),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
    };
    let body = html! {
        h1 { "Admin" }
        section {
            h2 { "All sessions" }
            (sessions::list_container(sessions))
        }
        section.card {
            h2 { "Users" }
            div #users hx-get="/fragments/users" hx-trigger="corral:refresh from:body" { (users) }
            h3 { "Add a user" }
            form #add-user data-api="/api/v1/users" data-result="#add-user-result" {
                label { "Email" input name="email" type="email" required autocomplete="off"; }
                label { "Password (optional, 8+ characters; without one they sign in with a token or your login proxy)"
                    input name="password" type="password" autocomplete="new-password" minlength="8"; }
                label { "Role" select name="role" { option value="user" { "user" } option value="admin" { "admin" } } }
                button.primary type="submit" { "Add user" }
            }
            div #add-user-result .result aria-live="polite" {}
        }
        section.card {
            h2 { "Your API tokens" }
            div #tokens hx-get="/fragments/tokens" hx-trigger="corral:refresh from:body" { (tokens) }
            h3 { "New token" }
            form #new-token data-api="/api/v1/tokens" data-result="#new-token-result" {
                label { "Name" input name="name" type="text" required placeholder="laptop" autocomplete="off"; }
                button.primary type="submit" { "Create token" }
            }
            div #new-token-result .result aria-live="polite" {}
        }
    };
    viewer.with_cookie(html(layout::page(Some(&viewer), "Admin", &[], body)))
}

/// `GET /fragments/users` (admin).
pub(super) async fn users_fragment(State(state): State<AppState>, viewer: Viewer) -> Response {
    if let Some(page) = refuse_non_admin(&viewer) {
        return page;
    }
    users(&state).await.map_or_else(|e| e, html)
}

/// `GET /fragments/tokens` (admin).
pub(super) async fn tokens_fragment(State(state): State<AppState>, viewer: Viewer) -> Response {
    if let Some(page) = refuse_non_admin(&viewer) {
        return page;
    }
    tokens(&state, &viewer).await.map_or_else(|e| e, html)
}

async fn users(state: &AppState) -> Result<Markup, Response> {
    let users = state
        .db(|s| s.list_users())
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(html! {
        table {
            thead { tr { th { "Email" } th { "Role" } th { "Password" } th { "Since" } } }
            tbody {
                @for u in &users {
                    tr {
                        td { (u.email) }
                        td { (format!("{:?}", u.role).to_lowercase()) }
                        td { @if u.password_hash.is_some() { "yes" } @else { "no" } }
                        td { (rfc3339(u.created)) }
                    }
                }
            }
        }
    })
}

async fn tokens(state: &AppState, viewer: &Viewer) -> Result<Markup, Response> {
    let user_id = viewer.user.id;
    let tokens = state
        .db(move |s| s.list_tokens(user_id))
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(html! {
        @if tokens.is_empty() {
            p.empty { "You have no API tokens. Create one below to use the corral CLI or the API." }
        } @else {
            table {
                thead { tr { th { "Name" } th { "Created" } th { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { (t.name) }
                            td { (rfc3339(t.created)) }
                            td {
                                button.danger type="button" hx-delete={"/api/v1/tokens/" (t.id)} hx-swap="none"
                                    data-refresh="" hx-confirm={"Revoke token " (t.name) "? Programs using it stop working."} { "Revoke" }
                            }
                        }
                    }
                }
            }
        }
    })
}
