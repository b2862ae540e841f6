//! Signed-in browsers: the `corral_session` cookie, its CSRF token and the [`Viewer`] every
//! page is rendered for.
//!
//! Threat model: the page is on the gateway's own host, and the cookie is host-only
//! (no `Domain`), so session hosts (`<id>.<domain>`, where agents serve whatever they like)
//! never receive it. The cookie is 256 random bits, `HttpOnly` (scripts on the page cannot
//! read it) and `SameSite=Lax` (other sites' forms and scripts do not send it with unsafe
//! requests); the store keeps only its SHA-256, and it expires after [`LIFETIME`]. Because a
//! cookie is sent by the browser on its own, every unsafe request it authenticates must
//! also echo the session's CSRF token (`X-CSRF-Token`, or a `csrf` form field), which only
//! the page itself can read; a WebSocket upgrade (not covered by SameSite or CORS) must come
//! with an `Origin` equal to the gateway's own. The sign-in form, before any session
//! exists, uses a double-submit token in a short-lived cookie of its own.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE, UPGRADE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::api::{ApiError, AppState, user_for_proxy_email};
use crate::auth::{IDENTITY_HEADERS, is_trusted_peer, random_hex, token_hash};
use crate::store::{Role, User, WebSession};
use crate::validate::is_email;

/// The signed-in browser's cookie.
pub(super) const SESSION_COOKIE: &str = "corral_session";
/// The sign-in form's double-submit CSRF cookie.
pub(super) const LOGIN_COOKIE: &str = "corral_login";
/// How long a sign-in lasts.
const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// The header unsafe requests with cookie auth carry the CSRF token in.
pub(super) const CSRF_HEADER: &str = "x-csrf-token";

/// The user a page is rendered for, with the CSRF token its forms and scripts send back.
pub(super) struct Viewer {
    /// Who is signed in.
    pub(super) user: User,
    /// This session's CSRF token.
    pub(super) csrf: String,
    /// A new session's cookie, when this request signed in through the trusted header.
    set_cookie: Option<HeaderValue>,
}

impl Viewer {
    /// Whether the viewer is an admin.
    pub(super) fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    /// `response` with the new session's cookie, if this request made one.
    pub(super) fn with_cookie(&self, mut response: Response) -> Response {
        if let Some(cookie) = &self.set_cookie {
            response.headers_mut().append(SET_COOKIE, cookie.clone());
        }
        response
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if let Some(session) = session(&parts.headers, state)
            .await
            .map_err(IntoResponse::into_response)?
        {
            return Ok(Viewer {
                user: session.user,
                csrf: session.csrf,
                set_cookie: None,
            });
        }
        // Behind oauth2-proxy, arriving is signing in.
        if let Some(email) = trusted_email(parts, state) {
            let user = state
                .db(move |s| user_for_proxy_email(s, &email))
                .await
                .map_err(IntoResponse::into_response)?;
            let (session, cookie) = begin(state, user)
                .await
                .map_err(IntoResponse::into_response)?;
            return Ok(Viewer {
                user: session.user,
                csrf: session.csrf,
                set_cookie: Some(cookie),
            });
        }
        Err(sign_in_first(&parts.headers))
    }
}

/// Where a request without a session goes: the sign-in page, or for an htmx request (a
/// fragment), a 401 that tells htmx to go there.
fn sign_in_first(headers: &HeaderMap) -> Response {
    if headers.contains_key("hx-request") {
        (StatusCode::UNAUTHORIZED, [("hx-redirect", "/login")]).into_response()
    } else {
        Redirect::to("/login").into_response()
    }
}

/// The email a trusted auth proxy vouches for, if this request came through one.
fn trusted_email(parts: &Parts, state: &AppState) -> Option<String> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    if !is_trusted_peer(peer, &state.config.trusted_proxies) {
        return None;
    }
    IDENTITY_HEADERS
        .iter()
        .find_map(|name| parts.headers.get(*name))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|e| is_email(e))
        .map(str::to_owned)
}

/// The value of cookie `name` in the request, if sent.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// The live session the request's cookie names, if any.
pub(super) async fn session(
    headers: &HeaderMap,
    state: &AppState,
) -> Result<Option<WebSession>, ApiError> {
    let Some(value) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let hash = token_hash(&value);
    state.db(move |s| s.web_session(&hash)).await
}

/// Starts a session for `user`: records it and returns it with its `Set-Cookie` value.
pub(super) async fn begin(
    state: &AppState,
    user: User,
) -> Result<(WebSession, HeaderValue), ApiError> {
    let value = random_hex(32).map_err(|e| ApiError::internal(&e))?;
    let csrf = random_hex(32).map_err(|e| ApiError::internal(&e))?;
    let hash = token_hash(&value);
    let expires = crate::store::now() + LIFETIME.as_secs() as i64;
    let (user_id, token) = (user.id, csrf.clone());
    state
        .db(move |s| s.create_web_session(&hash, user_id, &token, expires))
        .await?;
    let cookie = set_cookie(SESSION_COOKIE, &value, "/", LIFETIME.as_secs(), "Lax");
    Ok((WebSession { user, csrf }, cookie))
}

/// Ends the request's session, if any; returns the `Set-Cookie` value that clears it.
pub(super) async fn end(headers: &HeaderMap, state: &AppState) -> Result<HeaderValue, ApiError> {
    if let Some(value) = cookie(headers, SESSION_COOKIE) {
        let hash = token_hash(&value);
        state.db(move |s| s.delete_web_session(&hash)).await?;
    }
    Ok(set_cookie(SESSION_COOKIE, "", "/", 0, "Lax"))
}

/// Adds `Secure` to every `Set-Cookie` in `headers`: a browser then never sends them over
/// plain HTTP.
pub(super) fn mark_cookies_secure(headers: &mut HeaderMap) {
    let cookies: Vec<HeaderValue> = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|value| {
            let mut text = value.as_bytes().to_vec();
            text.extend_from_slice(b"; Secure");
            // Appending ASCII to a valid header value keeps it valid.
            HeaderValue::from_bytes(&text).unwrap_or_else(|_| value.clone())
        })
        .collect();
    headers.remove(SET_COOKIE);
    for cookie in cookies {
        headers.append(SET_COOKIE, cookie);
    }
}

/// A `Set-Cookie` value: host-only, `HttpOnly` (`Secure` is added on the way out when the
/// page is served over HTTPS: [`mark_cookies_secure`]).
pub(super) fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: u64,
    same_site: &str,
) -> HeaderValue {
    let text =
        format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}");
    // Names, paths and values are fixed ASCII or hex.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether two tokens are equal, in time that does not depend on where they differ.
pub(super) fn tokens_match(sent: &str, expected: &str) -> bool {
    sent.len() == expected.len()
        && sent
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether the request's `Origin` is this gateway (same host and port as `Host`).
fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let (Some(origin), Some(host)) = (header(ORIGIN), header(HOST)) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// The user a request signed in with the page's cookie acts as, once its CSRF token (unsafe
/// methods) and its `Origin` (WebSocket upgrades) are checked; `None` without a live session.
pub async fn cookie_caller(parts: &Parts, state: &AppState) -> Result<Option<User>, ApiError> {
    let Some(session) = session(&parts.headers, state).await? else {
        return Ok(None);
    };
    let upgrade = parts
        .headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade && !same_origin(&parts.headers) {
        return Err(ApiError::forbidden(
            "a WebSocket signed in with the page's cookie must be opened by the page itself \
             (its Origin is not this gateway); use a token from another origin",
        ));
    }
    if !parts.method.is_safe() {
        let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !sent.is_some_and(|t| tokens_match(t, &session.csrf)) {
            return Err(ApiError::forbidden(
                "missing or wrong X-CSRF-Token: a request signed in with the page's cookie \
                 must carry the page's CSRF token (reload the page and try again)",
            ));
        }
    }
    Ok(Some(session.user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:7070"));
        assert!(!same_origin(&headers), "no Origin");
        headers.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:7070"));
        assert!(same_origin(&headers));
        headers.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&headers));
        headers.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&headers));
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abd", "abc"));
        assert!(!tokens_match("ab", "abc"));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; corral_session=xyz"));
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&headers, "b"), None);
    }
}
