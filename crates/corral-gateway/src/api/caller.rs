//! Who is calling: the [`Caller`] extractor turns a request's credentials into a user, or
//! refuses with a 401 that says what was missing or wrong. See `crate::auth` for the threat
//! model.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::auth::{IDENTITY_HEADERS, is_trusted_peer, token_hash};
use crate::store::{Role, StoreError, User};
use crate::validate::is_email;

/// The authenticated user a request acts as.
pub struct Caller(pub User);

impl Caller {
    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.0.role == Role::Admin
    }

    /// A 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("only an admin may do this"))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let identity = IDENTITY_HEADERS
            .iter()
            .find_map(|name| parts.headers.get(*name).map(|v| (*name, v)));
        let trusted = peer.is_some_and(|ip| is_trusted_peer(ip, &state.config.trusted_proxies));

        let user = match (identity, trusted) {
            (Some((name, value)), true) => {
                let email = value
                    .to_str()
                    .ok()
                    .map(str::trim)
                    .filter(|e| is_email(e))
                    .ok_or_else(|| ApiError::unauthorized(format!("{name} is not an email")))?
                    .to_owned();
                state.db(move |s| user_for_proxy_email(s, &email)).await?
            }
            _ => match parts.headers.get(AUTHORIZATION) {
                Some(value) => {
                    let token = value
                        .to_str()
                        .ok()
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .ok_or_else(|| {
                            ApiError::unauthorized("Authorization must be `Bearer <token>`")
                        })?;
                    let hash = token_hash(token);
                    state
                        .db(move |s| s.user_by_token_hash(&hash))
                        .await?
                        .ok_or_else(|| {
                            ApiError::unauthorized("invalid token (unknown or revoked)")
                        })?
                }
                // The web page's session cookie, with its CSRF and Origin checks.
                None => match crate::web::cookie_caller(parts, state).await? {
                    Some(user) => user,
                    None => {
                        return Err(ApiError::unauthorized(match identity {
                            Some((name, _)) => format!(
                                "{name} is ignored from this address (not in trusted_proxies); \
                                 send Authorization: Bearer <token>"
                            ),
                            None => "missing credentials: send Authorization: Bearer <token>, \
                                     or sign in on the gateway's page"
                                .into(),
                        }));
                    }
                },
            },
        };
        tracing::Span::current().record("user", user.email.as_str());
        Ok(Caller(user))
    }
}

/// The user a trusted proxy vouches for, created as a plain user on first sight: the proxy
/// already decided who may sign in.
pub(crate) fn user_for_proxy_email(
    store: &crate::store::Store,
    email: &str,
) -> Result<User, StoreError> {
    if let Some(user) = store.user_by_email(email)? {
        return Ok(user);
    }
    match store.create_user(email, Role::User, None) {
        // Another request created it between our look-up and insert.
        Err(StoreError::EmailTaken(_)) => store
            .user_by_email(email)?
            .ok_or(StoreError::EmailTaken(email.into())),
        other => other,
    }
}
