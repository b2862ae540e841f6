//! Users, tokens and password login. Admins create users; everyone manages their own
//! tokens. A token's value appears in exactly one response, the one that made it.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::caller::Caller;
use super::error::ErrorBody;
use super::{ApiError, AppState, Json, Path, rfc3339};
use crate::auth::{hash_password, new_token, token_hash, verify_password};
use crate::store::{Role, TokenInfo, User};
use crate::validate::is_email;

/// Longest password accepted (argon2 would take anything; this bounds the work per request).
const MAX_PASSWORD_LEN: usize = 1024;
/// Longest token name accepted.
const MAX_TOKEN_NAME_LEN: usize = 100;

#[derive(Serialize, ToSchema)]
pub(super) struct UserView {
    email: String,
    role: Role,
    created: String,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            email: u.email,
            role: u.role,
            created: rfc3339(u.created),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct TokenView {
    id: i64,
    name: String,
    created: String,
    /// The token itself, only in the response that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl TokenView {
    fn new(info: TokenInfo, token: Option<String>) -> Self {
        Self {
            id: info.id,
            name: info.name,
            created: rfc3339(info.created),
            token,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct LoginResponse {
    user: UserView,
    token: String,
}

/// `POST /api/v1/login`: a password login; answers with a new API token.
#[utoipa::path(post, path = "/api/v1/login", tag = "users", request_body = LoginRequest, responses((status = 200, body = LoginResponse), (status = 400, description = "malformed or invalid request", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody)))]
pub(super) async fn login(
    State(state): State<AppState>,
    Json(req): Json<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let wrong = || ApiError::unauthorized("wrong email or password");
    if req.password.len() > MAX_PASSWORD_LEN {
        return Err(wrong());
    }
    let email = req.email.clone();
    let user = state.db(move |s| s.user_by_email(&email)).await?;
    let phc = user.as_ref().and_then(|u| u.password_hash.clone());
    let password = req.password;
    // argon2 takes tens of milliseconds: keep it off the async threads.
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, phc.as_deref()))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let user = user.filter(|_| ok).ok_or_else(wrong)?;
    let token = new_token().map_err(|e| ApiError::internal(&e))?;
    let hash = token_hash(&token);
    let user_id = user.id;
    state
        .db(move |s| s.add_token(user_id, "login", &hash))
        .await?;
    tracing::info!(user = %user.email, "password login");
    Ok(Json(LoginResponse {
        user: user.into(),
        token,
    }))
}

/// `GET /api/v1/me`: who the credentials belong to.
#[utoipa::path(get, path = "/api/v1/me", tag = "users", security(("bearer" = [])), responses((status = 200, body = UserView), (status = 401, description = "no or bad credentials", body = ErrorBody)))]
pub(super) async fn me(caller: Caller) -> Json<UserView> {
    Json(caller.0.into())
}

/// `GET /api/v1/users` (admin): every user.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])), responses((status = 200, body = Vec<UserView>), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not an admin", body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<UserView>>, ApiError> {
    caller.require_admin()?;
    let users = state.db(|s| s.list_users()).await?;
    Ok(Json(users.into_iter().map(Into::into).collect()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateUser {
    email: String,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct CreatedUser {
    user: UserView,
    token: TokenView,
}

/// `POST /api/v1/users` (admin): a new user and its first token.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("bearer" = [])), request_body = CreateUser, responses((status = 201, body = CreatedUser), (status = 400, description = "malformed or invalid request", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not an admin", body = ErrorBody), (status = 409, description = "already exists", body = ErrorBody)))]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateUser>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    caller.require_admin()?;
    let email = req.email.trim().to_owned();
    if !is_email(&email) {
        return Err(ApiError::bad_request(format!(
            "{email:?} is not an email address"
        )));
    }
    let password_hash = match req.password {
        Some(p) if p.len() < 8 || p.len() > MAX_PASSWORD_LEN => {
            return Err(ApiError::bad_request(format!(
                "password must be 8 to {MAX_PASSWORD_LEN} bytes"
            )));
        }
        Some(p) => Some(
            tokio::task::spawn_blocking(move || hash_password(&p))
                .await
                .map_err(|e| ApiError::internal(&e))?
                .map_err(|e| ApiError::internal(&e))?,
        ),
        None => None,
    };
    let token = new_token().map_err(|e| ApiError::internal(&e))?;
    let hash = token_hash(&token);
    let role = req.role.unwrap_or(Role::User);
    let (user, info) = state
        .db(move |s| {
            s.create_user_with_token(&email, role, password_hash.as_deref(), "first", &hash)
        })
        .await?;
    tracing::info!(created = %user.email, ?role, "user created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            user: user.into(),
            token: TokenView::new(info, Some(token)),
        }),
    ))
}

/// `GET /api/v1/tokens`: the caller's tokens (names and dates, never values).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])), responses((status = 200, body = Vec<TokenView>), (status = 401, description = "no or bad credentials", body = ErrorBody)))]
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    let user_id = caller.0.id;
    let tokens = state.db(move |s| s.list_tokens(user_id)).await?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| TokenView::new(t, None))
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateToken {
    name: String,
    /// Whose token it is (admins only; default: the caller).
    #[serde(default)]
    user: Option<String>,
}

/// `POST /api/v1/tokens`: a new token for the caller, or (admin) for another user.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])), request_body = CreateToken, responses((status = 201, body = TokenView), (status = 400, description = "malformed or invalid request", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not an admin", body = ErrorBody), (status = 404, description = "no such id, or not the caller's", body = ErrorBody)))]
pub(super) async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateToken>,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    let name = req.name.trim().to_owned();
    if name.is_empty() || name.len() > MAX_TOKEN_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "token name must be 1 to {MAX_TOKEN_NAME_LEN} printable characters"
        )));
    }
    let owner = match req.user {
        Some(email) if !email.eq_ignore_ascii_case(&caller.0.email) => {
            if !caller.is_admin() {
                return Err(ApiError::forbidden(
                    "only an admin may create tokens for another user",
                ));
            }
            let lookup = email.clone();
            state
                .db(move |s| s.user_by_email(&lookup))
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no user {email:?}")))?
        }
        _ => caller.0,
    };
    let token = new_token().map_err(|e| ApiError::internal(&e))?;
    let hash = token_hash(&token);
    let info = state
        .db(move |s| s.add_token(owner.id, &name, &hash))
        .await?;
    Ok((StatusCode::CREATED, Json(TokenView::new(info, Some(token)))))
}

/// `DELETE /api/v1/tokens/{id}`: revokes one of the caller's tokens.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", security(("bearer" = [])), params(("id" = String, Path, description = "token id")), responses((status = 204, description = "revoked"), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such id, or not the caller's", body = ErrorBody)))]
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::not_found(format!("you have no token with id {id:?}"));
    let token_id: i64 = id.parse().map_err(|_| not_found())?;
    let user_id = caller.0.id;
    if state.db(move |s| s.revoke_token(user_id, token_id)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}
