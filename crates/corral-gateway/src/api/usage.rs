//! Inference usage and budgets: tokens counted per user, sandbox, provider, model and UTC
//! day; a budget per user (tokens or requests per day or month, requests per minute per
//! sandbox) that the router enforces with a 429.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::caller::Caller;
use super::error::ErrorBody;
use super::{ApiError, AppState, Json, Path};
use crate::store::{Budget, UsageRow};

#[derive(Serialize, ToSchema)]
pub(super) struct UsageView {
    user: String,
    sandbox: String,
    provider: String,
    model: String,
    /// UTC day, `YYYY-MM-DD`.
    day: String,
    requests: i64,
    input_tokens: i64,
    output_tokens: i64,
}

impl From<UsageRow> for UsageView {
    fn from(r: UsageRow) -> Self {
        Self {
            user: r.user,
            sandbox: r.sandbox,
            provider: r.provider,
            model: r.model,
            day: r.day,
            requests: r.totals.requests,
            input_tokens: r.totals.input_tokens,
            output_tokens: r.totals.output_tokens,
        }
    }
}

/// `GET /api/v1/usage`: the caller's inference usage (an admin's: everyone's), newest day
/// first.
#[utoipa::path(get, path = "/api/v1/usage", tag = "inference", security(("bearer" = [])), responses((status = 200, body = Vec<UsageView>), (status = 401, description = "no or bad credentials", body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<UsageView>>, ApiError> {
    let user = (!caller.is_admin()).then_some(caller.0.id);
    let rows = state.db(move |s| s.usage(user)).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// A user's budget; absent or null fields are no limit.
#[derive(Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct BudgetView {
    #[serde(default)]
    tokens_per_day: Option<i64>,
    #[serde(default)]
    tokens_per_month: Option<i64>,
    #[serde(default)]
    requests_per_day: Option<i64>,
    #[serde(default)]
    requests_per_month: Option<i64>,
    /// Requests per minute from any one of the user's sandboxes.
    #[serde(default)]
    sandbox_requests_per_minute: Option<i64>,
}

impl From<Budget> for BudgetView {
    fn from(b: Budget) -> Self {
        Self {
            tokens_per_day: b.tokens_per_day,
            tokens_per_month: b.tokens_per_month,
            requests_per_day: b.requests_per_day,
            requests_per_month: b.requests_per_month,
            sandbox_requests_per_minute: b.sandbox_requests_per_minute,
        }
    }
}

/// `GET /api/v1/budgets/{email}`: a user's budget (the user's own, or any for an admin).
#[utoipa::path(get, path = "/api/v1/budgets/{email}", tag = "inference", security(("bearer" = [])), params(("email" = String, Path, description = "the user's email")), responses((status = 200, body = BudgetView), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 404, description = "no such user", body = ErrorBody)))]
pub(super) async fn get_budget(
    State(state): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
) -> Result<Json<BudgetView>, ApiError> {
    let not_found = || ApiError::not_found(format!("no user {email:?}"));
    if !caller.is_admin() && !caller.0.email.eq_ignore_ascii_case(&email) {
        return Err(not_found());
    }
    let lookup = email.clone();
    let user = state
        .db(move |s| s.user_by_email(&lookup))
        .await?
        .ok_or_else(not_found)?;
    let budget = state.db(move |s| s.budget(user.id)).await?;
    Ok(Json(budget.into()))
}

/// `PUT /api/v1/budgets/{email}` (admin): sets (replaces) a user's budget.
#[utoipa::path(put, path = "/api/v1/budgets/{email}", tag = "inference", security(("bearer" = [])), params(("email" = String, Path, description = "the user's email")), request_body = BudgetView, responses((status = 200, body = BudgetView), (status = 400, description = "malformed or invalid request", body = ErrorBody), (status = 401, description = "no or bad credentials", body = ErrorBody), (status = 403, description = "not an admin", body = ErrorBody), (status = 404, description = "no such user", body = ErrorBody)))]
pub(super) async fn set_budget(
    State(state): State<AppState>,
    caller: Caller,
    Path(email): Path<String>,
    Json(req): Json<BudgetView>,
) -> Result<Json<BudgetView>, ApiError> {
    caller.require_admin()?;
    let limits = [
        req.tokens_per_day,
        req.tokens_per_month,
        req.requests_per_day,
        req.requests_per_month,
        req.sandbox_requests_per_minute,
    ];
    if limits.iter().flatten().any(|n| *n < 0) {
        return Err(ApiError::bad_request(
            "budget limits must be 0 or more (omit one for no limit)",
        ));
    }
    let lookup = email.clone();
    let user = state
        .db(move |s| s.user_by_email(&lookup))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user {email:?}")))?;
    let budget = Budget {
        tokens_per_day: req.tokens_per_day,
        tokens_per_month: req.tokens_per_month,
        requests_per_day: req.requests_per_day,
        requests_per_month: req.requests_per_month,
        sandbox_requests_per_minute: req.sandbox_requests_per_minute,
    };
    state.db(move |s| s.set_budget(user.id, &budget)).await?;
    Ok(Json(budget.into()))
}
