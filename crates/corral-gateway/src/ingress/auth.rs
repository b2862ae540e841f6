//! Who is visiting a session host: its own cookie (made from a one-time ticket), a corral
//! API token (Bearer), or a trusted auth proxy's identity header, in that order. A session
//! host never looks at the gateway's own cookie. Whether the visitor may use the sandbox is
//! decided afterwards, against the sandbox's owner.

use std::net::IpAddr;

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, COOKIE, HeaderMap};
use axum::http::{Response, StatusCode};

use super::Ingress;
use super::reply;
use super::tickets;
use crate::auth::{IDENTITY_HEADERS, is_trusted_peer, token_hash};
use crate::store::Role;

/// An authenticated visitor.
pub struct Visitor {
    /// The user.
    pub user_id: i64,
    /// Whether the user is an admin.
    pub admin: bool,
    /// The one sandbox a session-host cookie opens (none for a token or a proxy identity).
    pub only_sandbox: Option<String>,
    /// Whether Authorization held a corral token (removed before proxying).
    pub used_token: bool,
}

/// The visitor, or the 401 that says how to sign in. `cookies` is false on the gateway's
/// own host (the `/s/` paths), where the session-host cookie is never set.
pub async fn visitor(
    ingress: &Ingress,
    headers: &HeaderMap,
    peer: IpAddr,
    cookies: bool,
) -> Result<Visitor, Response<Body>> {
    if cookies && let Some(secret) = cookie(headers, tickets::COOKIE) {
        let hash = token_hash(&secret);
        if let Some(credential) = ingress.db(move |s| s.host_cookie(&hash)).await? {
            return Ok(Visitor {
                user_id: credential.user_id,
                admin: credential.admin,
                only_sandbox: Some(credential.sandbox_id),
                used_token: false,
            });
        }
    }
    let trusted = is_trusted_peer(peer, &ingress.config.trusted_proxies);
    let identity = IDENTITY_HEADERS
        .iter()
        .find_map(|name| headers.get(*name))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|_| trusted);
    if let Some(email) = identity {
        if !crate::validate::is_email(&email) {
            return Err(unauthorized(
                "the auth proxy's identity header is not an email",
            ));
        }
        let user = ingress
            .db(move |s| crate::api::caller::user_for_proxy_email(s, &email))
            .await?;
        return Ok(Visitor {
            user_id: user.id,
            admin: user.role == Role::Admin,
            only_sandbox: None,
            used_token: false,
        });
    }
    if let Some(token) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with(crate::auth::TOKEN_PREFIX))
    {
        let hash = token_hash(token);
        return match ingress.db(move |s| s.user_by_token_hash(&hash)).await? {
            Some(user) => Ok(Visitor {
                user_id: user.id,
                admin: user.role == Role::Admin,
                only_sandbox: None,
                used_token: true,
            }),
            None => Err(unauthorized("invalid token (unknown or revoked)")),
        };
    }
    Err(unauthorized(
        "not signed in at this host: open the sandbox from the gateway's page (which sends \
         you here with a one-time ticket), or send Authorization: Bearer <token>",
    ))
}

fn unauthorized(message: &str) -> Response<Body> {
    reply::error(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().to_owned())
}
