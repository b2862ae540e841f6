//! One request on a sandbox's inference socket, from placeholder check to the metered stream
//! back. See the module above for the threat model.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use corral_policy::{Action, AuditEvent, SandboxIdentity};
use http_body_util::Full;
use hyper::body::{Frame, Incoming};
use serde_json::Value;

use super::by_kind;
use super::meter::Meter;
use super::upstream::{self, Destination};
use super::{Inference, today};
use crate::hop_by_hop;
use crate::store::{
    Budget, Provider, ProviderKind, Sandbox, Store, StoreError, UsageRow, UsageTotals,
};

/// Largest request body read (a prompt with images and a long context fits).
const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// Header naming the policies that denied a request (as the egress proxy's).
const DENY_HEADER: &str = "x-corral-deny";

/// Request headers not passed to the provider besides hop-by-hop ones: the agent's key
/// (replaced), ones recomputed here, and `accept-encoding` (usage is read from the body, so it
/// must arrive uncompressed).
const DROPPED_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "host",
    "content-length",
    "accept-encoding",
];

/// The router for sandbox `id`'s socket: every path goes to [`handle`].
pub(super) fn app(inference: Arc<Inference>, id: String) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(Arc::new(SandboxRoute { inference, id }))
}

/// What one socket's requests share.
struct SandboxRoute {
    inference: Arc<Inference>,
    id: String,
}

/// Why a request was not forwarded. Answered as JSON both SDK families read:
/// `{"type":"error","error":{"type","code","message"}}`.
#[derive(Debug)]
enum Refused {
    NotFound(String),
    Unauthorized(String),
    Denied { message: String, policies: String },
    Limited(String),
    RateLimited(String),
    BadRequest(String),
    Upstream(String),
    Internal(String),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let deny = match &self {
            Self::Denied { policies, .. } => Some(policies.clone()),
            _ => None,
        };
        let (status, kind, code, message) = match self {
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "not_found_error", "not_found", m),
            Self::Unauthorized(m) => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "unauthorized",
                m,
            ),
            Self::Denied { message, .. } => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "denied_by_policy",
                message,
            ),
            Self::Limited(m) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "budget_exceeded",
                m,
            ),
            Self::RateLimited(m) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limited",
                m,
            ),
            Self::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "bad_request",
                m,
            ),
            Self::Upstream(m) => (
                StatusCode::BAD_GATEWAY,
                "api_error",
                "provider_unreachable",
                m,
            ),
            Self::Internal(m) => {
                tracing::error!(error = %m, "inference router failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "api_error",
                    "internal",
                    "internal error in corral's inference router (see the gateway's log)".into(),
                )
            }
        };
        let body = serde_json::json!({
            "type": "error",
            "error": { "type": kind, "code": code, "message": format!("corral: {message}") },
        });
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(value) = deny.and_then(|p| HeaderValue::from_str(&p).ok()) {
            response.headers_mut().insert(DENY_HEADER, value);
        }
        response
    }
}

/// Serves one request; every refusal is a JSON error naming what to do.
async fn handle(State(route): State<Arc<SandboxRoute>>, request: Request) -> Response {
    forward(&route, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// What the store says about one request.
struct Facts {
    sandbox: Sandbox,
    provider: Provider,
    budget: Budget,
    day: UsageTotals,
    month: UsageTotals,
}

fn facts(store: &Store, id: &str, provider: &str, day: &str) -> Result<Option<Facts>, StoreError> {
    let Some(sandbox) = store.sandbox(id)? else {
        return Ok(None);
    };
    let Some(provider) = by_kind::find(store, provider)? else {
        return Ok(None);
    };
    let budget = store.budget(sandbox.owner_id)?;
    let day_totals = store.usage_since(sandbox.owner_id, day)?;
    let month = store.usage_since(sandbox.owner_id, &day[..7])?;
    Ok(Some(Facts {
        sandbox,
        provider,
        budget,
        day: day_totals,
        month,
    }))
}

async fn forward(route: &SandboxRoute, request: Request) -> Result<Response, Refused> {
    let inference = &route.inference;
    let (parts, body) = request.into_parts();
    let (provider_name, api_path) = split_path(parts.uri.path())?;
    let day = today();
    let facts = {
        let (store, id, name, day) = (
            Arc::clone(&inference.store),
            route.id.clone(),
            provider_name.clone(),
            day.clone(),
        );
        tokio::task::spawn_blocking(move || facts(&store, &id, &name, &day))
            .await
            .map_err(|e| Refused::Internal(e.to_string()))?
            .map_err(|e| Refused::Internal(e.to_string()))?
    };
    let Some(facts) = facts else {
        return Err(Refused::NotFound(by_kind::missing(&provider_name)));
    };
    let keys = inference
        .keys()
        .map_err(|e| Refused::Internal(e.to_string()))?;
    check_placeholder(&parts.headers, &keys.placeholder(&route.id))?;
    if !inference.admit(&route.id, facts.budget.sandbox_requests_per_minute) {
        return Err(Refused::RateLimited(format!(
            "this sandbox may send {} inference requests per minute; wait a moment",
            facts.budget.sandbox_requests_per_minute.unwrap_or_default()
        )));
    }
    check_budget(&facts)?;
    let body = axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|_| {
            Refused::BadRequest(format!(
                "the request body could not be read, or is larger than {MAX_REQUEST_BYTES} bytes"
            ))
        })?;
    let (body, model) = rewrite_body(&facts.provider, &api_path, body)?;
    decide(inference, &facts, &route.id, &model)?;
    let real_key = keys
        .open(&facts.provider.name, &facts.provider.sealed_key)
        .map_err(|e| Refused::Internal(e.to_string()))?;
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let destination = Destination::new(&facts.provider, &format!("{api_path}{query}"))
        .map_err(|e| Refused::Upstream(e.to_string()))?;
    let mut upstream_request = axum::http::Request::new(Full::new(body));
    *upstream_request.method_mut() = parts.method.clone();
    *upstream_request.uri_mut() = destination.uri().clone();
    *upstream_request.headers_mut() = upstream_headers(
        &parts.headers,
        &destination.authority(),
        facts.provider.kind,
        &real_key,
    )?;
    drop(real_key);
    let response = upstream::send(&facts.provider, &destination, upstream_request)
        .await
        .map_err(|e| Refused::Upstream(e.to_string()))?;
    let usage = UsageRow {
        user: facts.sandbox.owner.clone(),
        sandbox: route.id.clone(),
        provider: facts.provider.name.clone(),
        model: if model.is_empty() { "-".into() } else { model },
        day,
        totals: UsageTotals {
            requests: 1,
            ..UsageTotals::default()
        },
    };
    Ok(metered_response(
        response,
        Recorder {
            store: Arc::clone(&inference.store),
            user_id: facts.sandbox.owner_id,
            row: usage,
        },
    ))
}

/// `/inference/PROVIDER/REST` → the provider's name and the API path to send: `/v1/...`
/// (`/v1` is added when the client's base URL left it out, as the Anthropic SDK and the AI
/// SDK differ on that).
fn split_path(path: &str) -> Result<(String, String), Refused> {
    let not_found = || {
        Refused::NotFound(format!(
            "{path} is not an inference path: use {}/PROVIDER/v1/...",
            super::ROUTER_URL
        ))
    };
    let rest = path.strip_prefix("/inference/").ok_or_else(not_found)?;
    let (provider, api) = rest.split_once('/').unwrap_or((rest, ""));
    if provider.is_empty() || api.split('/').any(|s| s == ".." || s == ".") {
        return Err(not_found());
    }
    let api = if api == "v1" || api.starts_with("v1/") {
        format!("/{api}")
    } else {
        format!("/v1/{api}")
    };
    Ok((provider.to_owned(), api))
}

/// The agent must send this sandbox's placeholder (as `x-api-key` or a bearer token).
fn check_placeholder(headers: &HeaderMap, placeholder: &str) -> Result<(), Refused> {
    let sent = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim);
    match sent {
        Some(key) if key == placeholder => Ok(()),
        Some(_) => Err(Refused::Unauthorized(
            "the API key is not this sandbox's: use the one in $ANTHROPIC_API_KEY or \
             $OPENAI_API_KEY inside the sandbox (corral adds the real key)"
                .into(),
        )),
        None => Err(Refused::Unauthorized(
            "no API key: send this sandbox's $ANTHROPIC_API_KEY (x-api-key) or \
             $OPENAI_API_KEY (Authorization: Bearer)"
                .into(),
        )),
    }
}

/// 429 once the owner's budget for the day or month is spent.
fn check_budget(facts: &Facts) -> Result<(), Refused> {
    let budget = &facts.budget;
    let owner = &facts.sandbox.owner;
    let checks = [
        (
            budget.tokens_per_day,
            facts.day.tokens(),
            "tokens",
            "today (UTC)",
        ),
        (
            budget.tokens_per_month,
            facts.month.tokens(),
            "tokens",
            "this month (UTC)",
        ),
        (
            budget.requests_per_day,
            facts.day.requests,
            "requests",
            "today (UTC)",
        ),
        (
            budget.requests_per_month,
            facts.month.requests,
            "requests",
            "this month (UTC)",
        ),
    ];
    for (limit, used, what, when) in checks {
        if let Some(limit) = limit
            && used >= limit
        {
            return Err(Refused::Limited(format!(
                "the inference budget of {owner} is spent: {used} of {limit} {what} {when}; \
                 it renews with the next period, or an admin can raise it (corral budget set)"
            )));
        }
    }
    Ok(())
}

/// Reads the model from a JSON body, applies the provider's alias for it and, for an OpenAI
/// chat stream, asks for the usage chunk (`stream_options.include_usage`) so tokens can be
/// counted. Returns the body to send and the model it names ("" when none: an empty body).
/// A body that is not a JSON object is refused: its model could not be decided on.
fn rewrite_body(
    provider: &Provider,
    api_path: &str,
    body: Bytes,
) -> Result<(Bytes, String), Refused> {
    if body.is_empty() {
        return Ok((body, String::new()));
    }
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&body) else {
        return Err(Refused::BadRequest(
            "corral routes JSON request bodies only (the model must be readable for the \
             [inference] policy)"
                .into(),
        ));
    };
    let mut changed = false;
    let asked = object
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let model = match provider.aliases.get(&asked) {
        Some(real) => {
            object.insert("model".into(), real.clone().into());
            changed = true;
            real.clone()
        }
        None => asked,
    };
    let streaming = object.get("stream") == Some(&Value::Bool(true));
    if provider.kind.is_openai() && streaming && api_path.ends_with("/chat/completions") {
        let options = object
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(options) = options
            && !options.contains_key("include_usage")
        {
            options.insert("include_usage".into(), true.into());
            changed = true;
        }
    }
    if !changed {
        return Ok((body, model));
    }
    match serde_json::to_vec(&object) {
        Ok(rewritten) => Ok((Bytes::from(rewritten), model)),
        Err(_) => Ok((body, model)),
    }
}

/// Decides `inference` (provider, model) with the sandbox's profile and records it.
fn decide(inference: &Inference, facts: &Facts, id: &str, model: &str) -> Result<(), Refused> {
    let engine = inference
        .engine(&facts.sandbox.profile)
        .map_err(|e| Refused::Internal(format!("profile {}: {e}", facts.sandbox.profile)))?;
    let request = corral_policy::Request {
        sandbox: SandboxIdentity {
            id: id.to_owned(),
            owner: facts.sandbox.owner.clone(),
            repo: facts.sandbox.repo.clone().unwrap_or_default(),
            branch: facts.sandbox.branch.clone().unwrap_or_default(),
        },
        action: Action::Inference {
            provider: facts.provider.name.clone(),
            model: model.to_owned(),
        },
    };
    let decision = engine.decide(&request);
    let profile = engine.profile().name.clone();
    let event = AuditEvent::new(&request, &profile, &decision);
    tracing::info!(
        sandbox = %id,
        user = %facts.sandbox.owner,
        resource = %event.resource,
        decision = %event.decision,
        policies = %decision.reasons_text(),
        "inference decision"
    );
    if let Some(audit) = inference.audit(id)
        && let Err(e) = audit.record(&event)
    {
        tracing::warn!(sandbox = %id, error = %e, "audit log write failed");
    }
    if decision.allowed {
        return Ok(());
    }
    let policies = decision.reasons.join(", ");
    Err(Refused::Denied {
        message: format!(
            "inference {} denied by policy {policies} (profile {profile}); an [inference] allow \
             rule in the profile would permit it",
            event.resource
        ),
        policies,
    })
}

/// The agent's headers minus its key and hop-by-hop headers, plus the host and the real key
/// (marked sensitive so it is never logged).
fn upstream_headers(
    from: &HeaderMap,
    authority: &str,
    kind: ProviderKind,
    key: &str,
) -> Result<HeaderMap, Refused> {
    let named_by_connection: Vec<String> = hop_by_hop::connection_tokens(from).collect();
    let mut headers = HeaderMap::new();
    for (name, value) in from {
        let dropped = hop_by_hop::is_hop_by_hop(name)
            || named_by_connection.iter().any(|n| n == name.as_str())
            || DROPPED_HEADERS.contains(&name.as_str())
            || name.as_str().starts_with("x-corral-");
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    let bad_key =
        || Refused::Internal("the provider's key holds characters a header cannot carry".into());
    headers.insert(
        HOST,
        HeaderValue::from_str(authority).map_err(|_| Refused::Internal("bad host".into()))?,
    );
    let (name, mut value) = match kind {
        ProviderKind::Anthropic => (
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_str(key).map_err(|_| bad_key())?,
        ),
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => (
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| bad_key())?,
        ),
    };
    value.set_sensitive(true);
    headers.insert(name, value);
    Ok(headers)
}

/// Records one request's usage when its response has been read.
struct Recorder {
    store: Arc<Store>,
    user_id: i64,
    row: UsageRow,
}

impl Recorder {
    /// Writes the row on a blocking thread (inline when no runtime is left to run one).
    fn record(self) -> Option<tokio::task::JoinHandle<()>> {
        let write = move || {
            if let Err(e) = self.store.add_usage(&self.row, self.user_id) {
                tracing::error!(sandbox = %self.row.sandbox, error = %e, "cannot record inference usage");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Some(runtime.spawn_blocking(write)),
            Err(_) => {
                write();
                None
            }
        }
    }
}

/// The provider's response, streamed back as it arrives. `content-length` is dropped so
/// the end of the body is the end of the chunked stream, sent only once the usage is
/// recorded: a client that has read the whole answer sees its tokens counted.
fn metered_response(response: axum::http::Response<Incoming>, recorder: Recorder) -> Response {
    let (mut parts, body) = response.into_parts();
    for name in [
        CONTENT_LENGTH.as_str(),
        "connection",
        "keep-alive",
        "transfer-encoding",
    ] {
        parts.headers.remove(name);
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let meter = Meter::for_content_type(content_type);
    let body = Metered {
        body,
        meter: Some(meter),
        recorder: Some(recorder),
        recording: None,
    };
    Response::from_parts(parts, Body::new(body))
}

/// A response body that feeds each chunk to a [`Meter`] on its way through and records the
/// usage when the body ends (or the client goes away).
struct Metered {
    body: Incoming,
    meter: Option<Meter>,
    recorder: Option<Recorder>,
    recording: Option<tokio::task::JoinHandle<()>>,
}

impl Metered {
    fn start_recording(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        let mut recorder = self.recorder.take()?;
        if let Some(meter) = self.meter.take() {
            let tokens = meter.finish();
            recorder.row.totals.input_tokens = tokens.input;
            recorder.row.totals.output_tokens = tokens.output;
        }
        recorder.record()
    }
}

impl hyper::body::Body for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(recording) = &mut this.recording {
            return match Pin::new(recording).poll(cx) {
                Poll::Ready(_) => {
                    this.recording = None;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
        if this.recorder.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(meter)) = (frame.data_ref(), this.meter.as_mut()) {
                    meter.feed(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.recording = this.start_recording();
                // Poll again so the finished recording ends the body.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // The client went away mid-answer: the tokens seen so far still count.
        let _ = self.start_recording();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn provider(kind: ProviderKind) -> Provider {
        Provider {
            name: "p".into(),
            kind,
            base_url: "http://x".into(),
            sealed_key: Vec::new(),
            allow_private: false,
            aliases: BTreeMap::from([("fast".into(), "real-model".into())]),
            created: 0,
        }
    }

    #[test]
    fn paths_name_the_provider_and_gain_v1_when_the_client_left_it_out() {
        let split = |p: &str| split_path(p).map_err(|e| format!("{e:?}"));
        assert_eq!(
            split("/inference/a/v1/messages").unwrap(),
            ("a".into(), "/v1/messages".into())
        );
        assert_eq!(
            split("/inference/a/messages").unwrap(),
            ("a".into(), "/v1/messages".into())
        );
        for bad in [
            "/v1/messages",
            "/inference/",
            "/inference/a/../b",
            "/inference//v1",
        ] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn aliases_are_rewritten_and_openai_streams_ask_for_usage() {
        let body = Bytes::from(r#"{"model":"fast","stream":true,"messages":[]}"#);
        let (sent, model) = rewrite_body(
            &provider(ProviderKind::OpenAi),
            "/v1/chat/completions",
            body,
        )
        .unwrap();
        let sent: Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(
            (sent["model"].as_str(), model.as_str()),
            (Some("real-model"), "real-model")
        );
        assert_eq!(sent["stream_options"]["include_usage"], true);
        // Anthropic streams report usage anyway; an unknown model passes unchanged.
        let body = Bytes::from(r#"{"model":"other","stream":true}"#);
        let (sent, model) = rewrite_body(
            &provider(ProviderKind::Anthropic),
            "/v1/messages",
            body.clone(),
        )
        .unwrap();
        assert_eq!((sent, model.as_str()), (body, "other"));
        // A body whose model cannot be read is refused; no body names no model.
        let files = |body: &'static str| {
            rewrite_body(
                &provider(ProviderKind::OpenAi),
                "/v1/files",
                Bytes::from(body),
            )
        };
        assert!(matches!(
            files("model=whisper-1"),
            Err(Refused::BadRequest(_))
        ));
        assert_eq!(files("").unwrap(), (Bytes::new(), String::new()));
    }

    #[test]
    fn the_real_key_goes_in_the_kind_s_header_and_the_agent_s_is_dropped() {
        let mut from = HeaderMap::new();
        from.insert("x-api-key", HeaderValue::from_static("sk-corral-x"));
        from.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-corral-x"),
        );
        from.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        from.insert("accept-encoding", HeaderValue::from_static("gzip"));
        from.insert("connection", HeaderValue::from_static("keep-alive, x-hop"));
        from.insert("x-hop", HeaderValue::from_static("1"));
        from.insert("te", HeaderValue::from_static("trailers"));
        let anthropic =
            upstream_headers(&from, "api.example", ProviderKind::Anthropic, "real").unwrap();
        assert_eq!(anthropic["x-api-key"], "real");
        assert!(anthropic["x-api-key"].is_sensitive());
        assert!(
            anthropic.get(AUTHORIZATION).is_none() && anthropic.get("accept-encoding").is_none()
        );
        assert_eq!(anthropic["anthropic-version"], "2023-06-01");
        for hop in ["connection", "x-hop", "te"] {
            assert!(anthropic.get(hop).is_none(), "{hop} is not passed on");
        }
        let openai = upstream_headers(&from, "api.example", ProviderKind::OpenAi, "real").unwrap();
        assert_eq!(openai[AUTHORIZATION], "Bearer real");
        assert!(openai.get("x-api-key").is_none());
        assert_eq!(openai[HOST], "api.example");
    }
}
