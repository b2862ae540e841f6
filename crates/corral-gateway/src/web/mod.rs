//! The gateway's web page, on its own host at `/` (the API stays under `/api/v1`): sign in,
//! the session picker, a terminal, a sandbox's activity and the admin's view. HTML is
//! rendered here (maud); a little JavaScript (htmx and corral's own scripts, all served
//! from [`assets`]) calls the JSON API with the page's session cookie and CSRF token, so
//! every action the page offers goes through the same checks as the API. The page has one
//! JSON endpoint of its own, which turns a typed custom command line into the API's
//! `command` and `ports` ([`custom_command`]).
//!
//! Every page and asset carries a strict Content-Security-Policy: scripts and styles only
//! from this origin, no inline script or style, no framing; pages are never cached and
//! hold no secret but the session's own CSRF token.

mod admin;
mod assets;
mod custom_command;
mod layout;
mod login;
mod sandbox_pages;
mod session;
mod sessions;

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

pub use session::cookie_caller;

use crate::api::AppState;

/// The policy every response of the page's routes carries.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   font-src 'self'; connect-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The page's routes; with `https` (browsers reach the gateway over HTTPS) its cookies are
/// marked `Secure`.
pub fn router(https: bool) -> Router<AppState> {
    Router::new()
        .route("/", get(sessions::home))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/fragments/sessions", get(sessions::fragment))
        .route("/new-session/command", post(custom_command::parse))
        .route("/sessions/{id}/open", get(sandbox_pages::open))
        .route("/sessions/{id}/terminal", get(sandbox_pages::terminal))
        .route("/sessions/{id}/activity", get(sandbox_pages::activity))
        .route("/sessions/{id}/sharing", get(sandbox_pages::sharing))
        .route("/admin", get(admin::page))
        .route("/fragments/users", get(admin::users_fragment))
        .route("/fragments/tokens", get(admin::tokens_fragment))
        .route("/assets/{file}", get(assets::serve))
        .layer(middleware::map_response(move |response| {
            security_headers(response, https)
        }))
}

/// Adds the security headers; pages (not assets) are also marked uncacheable; over HTTPS
/// every cookie set is `Secure`.
async fn security_headers(mut response: Response, https: bool) -> Response {
    let headers = response.headers_mut();
    if https {
        session::mark_cookies_secure(headers);
    }
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A rendered page or fragment as a response.
fn html(markup: maud::Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// A page that says what went wrong and what to do, with `status`.
fn error_page(viewer: Option<&session::Viewer>, status: StatusCode, message: &str) -> Response {
    let body = maud::html! {
        section.card {
            h1 { "Something went wrong" }
            p.error role="alert" { (message) }
            p { a href="/" { "Back to your sessions" } }
        }
    };
    (status, html(layout::page(viewer, "Error", &[], body))).into_response()
}
