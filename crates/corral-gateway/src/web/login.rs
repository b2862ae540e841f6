//! Signing in with a password (or one of the user's API tokens) and signing out. The sign-in form carries a double-submit
//! token (the same random value in a cookie of its own and in the form) so another site
//! cannot sign a browser in to an account of its choosing.

use axum::Form;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::session::{self, LOGIN_COOKIE, Viewer, set_cookie, tokens_match};
use super::{error_page, html, layout};
use crate::api::{ApiError, AppState};
use crate::auth::{random_hex, token_hash, verify_password};

/// Longest password tried (argon2 takes anything; this bounds the work per request).
const MAX_PASSWORD_LEN: usize = 1024;
/// How long a sign-in form stays valid.
const FORM_LIFETIME_SECS: u64 = 60 * 60;

/// What the sign-in form posts.
#[derive(Deserialize)]
pub(super) struct SignIn {
    email: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

/// `GET /login`: the sign-in form (or the sessions page, for a signed-in browser).
pub(super) async fn form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match session::session(&headers, &state).await {
        Ok(Some(_)) => Redirect::to("/").into_response(),
        _ => fresh_form(StatusCode::OK, "", None),
    }
}

/// The form with a new double-submit token, `email` filled in and an optional error.
fn fresh_form(status: StatusCode, email: &str, error: Option<&str>) -> Response {
    let Ok(token) = random_hex(32) else {
        return ApiError::internal(&"no randomness").into_response();
    };
    let body = html! {
        section.card.narrow {
            h1 { "Sign in to corral" }
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(token);
                label { "Email" input #email name="email" type="email" autocomplete="username" required autofocus value=(email); }
                label { "Password or API token" input #password name="password" type="password" autocomplete="current-password" required; }
                button.primary type="submit" { "Sign in" }
            }
            p.hint { "No password? Ask your corral admin for one, or sign in through your organisation's login if it is set up." }
        }
    };
    let cookie = set_cookie(LOGIN_COOKIE, &token, "/login", FORM_LIFETIME_SECS, "Strict");
    (
        status,
        [(SET_COOKIE, cookie)],
        html(layout::page(None, "Sign in", &[], body)),
    )
        .into_response()
}

/// `POST /login`: checks the password and starts a session.
pub(super) async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let expected = session::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !tokens_match(&form.csrf, &expected) {
        return fresh_form(
            StatusCode::FORBIDDEN,
            &form.email,
            Some("This sign-in form expired or came from another site. Enter your password again."),
        );
    }
    let wrong = |email: &str| {
        fresh_form(
            StatusCode::UNAUTHORIZED,
            email,
            Some("Wrong email or password. Check both and try again."),
        )
    };
    if form.password.len() > MAX_PASSWORD_LEN {
        return wrong(&form.email);
    }
    let email = form.email.trim().to_owned();
    let lookup = email.clone();
    let user = match state.db(move |s| s.user_by_email(&lookup)).await {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    let phc = user.as_ref().and_then(|u| u.password_hash.clone());
    let password = form.password;
    // An API token of this user signs in too: the first admin has only the token `corral up`
    // printed. Tokens are 256-bit random values, so this adds nothing to guess.
    let by_token = {
        let hash = token_hash(&password);
        match state.db(move |s| s.user_by_token_hash(&hash)).await {
            Ok(owner) => owner,
            Err(e) => return e.into_response(),
        }
    };
    let token_matches =
        matches!((&by_token, &user), (Some(owner), Some(user)) if owner.id == user.id);
    // argon2 takes tens of milliseconds: keep it off the async threads.
    let ok = token_matches
        || tokio::task::spawn_blocking(move || verify_password(&password, phc.as_deref()))
            .await
            .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        return wrong(&email);
    };
    tracing::info!(user = %user.email, "web sign-in");
    match session::begin(&state, user).await {
        Ok((_, cookie)) => {
            let mut response = Redirect::to("/").into_response();
            let headers = response.headers_mut();
            headers.append(SET_COOKIE, cookie);
            headers.append(
                SET_COOKIE,
                set_cookie(LOGIN_COOKIE, "", "/login", 0, "Strict"),
            );
            response
        }
        Err(e) => e.into_response(),
    }
}

/// What the sign-out form posts.
#[derive(Deserialize)]
pub(super) struct SignOut {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session (the form must carry its CSRF token).
pub(super) async fn logout(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<SignOut>,
) -> Response {
    if !tokens_match(&form.csrf, &viewer.csrf) {
        return error_page(
            Some(&viewer),
            StatusCode::FORBIDDEN,
            "This form is missing its CSRF token (or it came from another site), so it was \
             refused. Reload the page and try again.",
        );
    }
    match session::end(&headers, &state).await {
        Ok(cookie) => ([(SET_COOKIE, cookie)], Redirect::to("/login")).into_response(),
        Err(e) => e.into_response(),
    }
}
