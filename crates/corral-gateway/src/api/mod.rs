//! The HTTP API under `/api/v1`: JSON in and out, errors as
//! `{"error": {"code", "message"}}` (see [`ApiError`]).

mod attach;
mod audit;
pub(crate) mod caller;
mod error;
mod files;
mod ingress;
mod lifecycle;
mod openapi;
mod openapi_common;
mod profiles;
mod providers;
mod sandboxes;
mod shares;
mod usage;
mod users;

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use tracing::Instrument;

pub(crate) use caller::user_for_proxy_email;
pub use error::ApiError;
pub use profiles::available as available_profiles;

use crate::config::Config;
use crate::runtime::Runtime;
use crate::store::{Store, StoreError};

/// Largest request body accepted; every request body is a small JSON object.
const MAX_BODY: usize = 64 * 1024;

/// What every handler shares: the store, the configuration and the runtime.
#[derive(Clone)]
pub struct AppState {
    pub(crate) store: Arc<Store>,
    pub(crate) config: Arc<Config>,
    pub(crate) runtime: Arc<Runtime>,
}

impl AppState {
    /// State over an opened store and a reconciled runtime.
    pub fn new(store: Arc<Store>, config: Arc<Config>, runtime: Arc<Runtime>) -> Self {
        Self {
            store,
            config,
            runtime,
        }
    }

    /// Runs a store call on a blocking thread (SQLite blocks).
    pub(crate) async fn db<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map_err(ApiError::from)
    }
}

/// A JSON body whose rejections (malformed, unknown field, too large) are [`ApiError`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
struct Json<T>(T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A path parameter whose rejection (e.g. invalid UTF-8) is an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
struct Path<T>(T);

/// The API router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/login", post(users::login))
        .route("/me", get(users::me))
        .route("/users", get(users::list).post(users::create))
        .route("/tokens", get(users::list_tokens).post(users::create_token))
        .route("/tokens/{id}", delete(users::revoke_token))
        .route("/sandboxes", get(sandboxes::list).post(sandboxes::create))
        .route(
            "/sandboxes/{id}",
            get(sandboxes::get).delete(sandboxes::delete),
        )
        .route("/sandboxes/{id}/start", post(lifecycle::start))
        .route("/sandboxes/{id}/stop", post(lifecycle::stop))
        .route("/sandboxes/{id}/exec", post(lifecycle::exec))
        .route("/sandboxes/{id}/logs", get(lifecycle::logs))
        // web: the page's activity view and session picker
        .route("/sandboxes/{id}/audit", get(audit::audit))
        .route("/profiles", get(profiles::list_profiles))
        // Inference: providers (admins), usage and budgets.
        .route("/providers", get(providers::list).post(providers::add))
        .route("/providers/{name}", delete(providers::remove))
        .route("/usage", get(usage::list))
        .route(
            "/budgets/{email}",
            get(usage::get_budget).put(usage::set_budget),
        )
        .route("/sandboxes/{id}/attach", get(attach::attach))
        // Ingress: agent templates and session-host tickets.
        .route("/agents", get(ingress::list_agents))
        .route("/sandboxes/{id}/ticket", post(ingress::ticket))
        .route(
            "/sandboxes/{id}/shares/{email}",
            put(shares::share).delete(shares::unshare),
        );
    // Uploads are archives, not small JSON documents: their own limit, added after the
    // JSON limit's layers so those do not apply to them.
    let max_upload = state.config.max_upload;
    // Browsers reach the page over HTTPS (the listener's TLS, or a proxy's): its cookies are
    // then Secure.
    let https = state.config.browser_scheme() == "https";
    let files = Router::new().route(
        "/api/v1/sandboxes/{id}/files",
        get(files::download)
            .put(files::upload)
            .layer(middleware::from_fn(move |request: Request, next: Next| {
                refuse_larger_than(max_upload, request, next)
            })),
    );
    Router::new()
        .nest("/api/v1", api)
        .merge(crate::web::router(https))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(refuse_oversized))
        .merge(files)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Like [`refuse_oversized`], with `limit` bytes.
async fn refuse_larger_than(limit: u64, request: Request, next: Next) -> Response {
    match declared_length(&request) {
        Some(length) if length > limit => {
            ApiError::payload_too_large(usize::try_from(limit).unwrap_or(usize::MAX))
                .into_response()
        }
        _ => next.run(request).await,
    }
}

fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Refuses a body whose declared length is over [`MAX_BODY`] before reading any of it, so a
/// client that sent `Expect: 100-continue` is told at once and never sends it. (A body
/// without a length is still cut off at the limit while it is read.)
async fn refuse_oversized(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > MAX_BODY as u64 => {
            ApiError::payload_too_large(MAX_BODY).into_response()
        }
        _ => next.run(request).await,
    }
}

/// One log line per request, in a span the caller's email is recorded into. Only the method
/// and path are logged: never headers (credentials) or bodies (passwords).
async fn log_request(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        user = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "handled"
        );
    });
    response
}

/// Unix seconds as RFC 3339 (UTC).
pub(crate) fn rfc3339(unix: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}
