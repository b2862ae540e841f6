//! Who is visiting a session host: its own cookie (made from a one-time ticket), a trusted
//! auth proxy's identity header, or a corral API token (Bearer), in that order; with the
//! cookie, an Authorization header is the sandbox's business and passed on. A session host
//! never looks at the gateway's own cookie. Whether the visitor may use the sandbox is
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
        if let Some(known) = remembered(ingress, hash, |s, hash| {
            Ok(s.host_cookie(hash)?.map(|c| Known {
                user_id: c.user_id,
                admin: c.admin,
                only_sandbox: Some(c.sandbox_id),
            }))
        })
        .await?
        {
            return Ok(known.visitor(false));
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
            .db(move |s| crate::api::user_for_proxy_email(s, &email))
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
        .filter(|t| !t.is_empty())
    {
        let hash = token_hash(token);
        let known = remembered(ingress, hash, |s, hash| {
            Ok(s.user_by_token_hash(hash)?.map(|user| Known {
                user_id: user.id,
                admin: user.role == Role::Admin,
                only_sandbox: None,
            }))
        })
        .await?;
        return match known {
            Some(known) => Ok(known.visitor(true)),
            None => Err(unauthorized("invalid token (unknown or revoked)")),
        };
    }
    Err(unauthorized(
        "not signed in at this host: open the sandbox from the gateway's page (which sends \
         you here with a one-time ticket), or send Authorization: Bearer <token>",
    ))
}

/// Who a credential stands for, as remembered between requests.
#[derive(Clone)]
pub struct Known {
    user_id: i64,
    admin: bool,
    only_sandbox: Option<String>,
}

impl Known {
    fn visitor(self, used_token: bool) -> Visitor {
        Visitor {
            user_id: self.user_id,
            admin: self.admin,
            only_sandbox: self.only_sandbox,
            used_token,
        }
    }
}

/// The credential with hash `hash`, from the memo or else from the store through `lookup`.
async fn remembered(
    ingress: &Ingress,
    hash: String,
    lookup: fn(&crate::store::Store, &str) -> Result<Option<Known>, crate::store::StoreError>,
) -> Result<Option<Known>, Response<Body>> {
    if let Some(known) = ingress.visitors.get(&hash) {
        return Ok(Some(known));
    }
    let key = hash.clone();
    let found = ingress.db(move |s| lookup(s, &key)).await?;
    if let Some(known) = &found {
        ingress.visitors.put(hash, known.clone());
    }
    Ok(found)
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
