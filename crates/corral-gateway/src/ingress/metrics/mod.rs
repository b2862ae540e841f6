//! `/metrics` in the Prometheus text format: sandboxes by state (read from the store at
//! scrape time), starts and stops by cause (counted by the runtime), resume latency, proxied
//! requests and bytes by route kind, WebSocket connections, policy decisions by action and
//! outcome, and egress bytes per sandbox (both read from the sandboxes' records at scrape
//! time, see [`usage`]).
//!
//! Only egress bytes carry a sandbox id (no label carries a user); since ids are names
//! people chose, the page is for admins: a scraper sends an admin's API token (or comes
//! through the trusted auth proxy as an admin).

mod usage;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use axum::http::{Response, StatusCode};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use self::usage::{SandboxLogs, Usage};
use super::{Ingress, auth, reply};
use crate::runtime::Runtime;

/// How a request reached a sandbox.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RouteKind {
    /// A session host, `<id><suffix>.<domain>`.
    Host,
    /// The path fallback, `/s/<id>/...`.
    Path,
}

impl EncodeLabelValue for RouteKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            Self::Host => "host",
            Self::Path => "path",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: RouteKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    sandboxes: Family<StateLabels, Gauge>,
    usage: Usage,
    resume_seconds: Histogram,
    requests: Family<RouteLabels, Counter>,
    bytes: Family<RouteLabels, Counter<u64, AtomicU64>>,
    websockets: Counter,
    websockets_open: Gauge,
}

impl Metrics {
    /// Registers every metric: `runtime`'s starts and stops, and decisions and egress bytes
    /// recorded from now on.
    pub fn new(runtime: &Runtime) -> Self {
        let mut registry = Registry::with_prefix("corral");
        let sandboxes = Family::<StateLabels, Gauge>::default();
        registry.register("sandboxes", "Sandboxes by state", sandboxes.clone());
        runtime.lifecycle().register(&mut registry);
        let usage = Usage::starting_now(runtime);
        usage.register(&mut registry);
        // 10 ms .. ~40 s.
        let resume_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 13));
        registry.register(
            "resume_seconds",
            "Time from a request reaching a stopped session to its port accepting",
            resume_seconds.clone(),
        );
        let requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "proxied_requests",
            "Requests proxied to sandboxes, by route kind",
            requests.clone(),
        );
        let bytes = Family::<RouteLabels, Counter<u64, AtomicU64>>::default();
        registry.register(
            "proxied_bytes",
            "Body and WebSocket bytes proxied to and from sandboxes, by route kind",
            bytes.clone(),
        );
        let websockets = Counter::default();
        registry.register(
            "websocket_connections",
            "WebSocket (and other upgraded) connections proxied to sandboxes",
            websockets.clone(),
        );
        let websockets_open = Gauge::default();
        registry.register(
            "websocket_connections_open",
            "Proxied WebSocket connections open now",
            websockets_open.clone(),
        );
        Self {
            registry,
            sandboxes,
            usage,
            resume_seconds,
            requests,
            bytes,
            websockets,
            websockets_open,
        }
    }

    /// A proxied request.
    pub fn proxied_request(&self, route: RouteKind) {
        self.requests.get_or_create(&RouteLabels { route }).inc();
    }

    /// Proxied bytes.
    pub fn proxied_bytes(&self, route: RouteKind, n: usize) {
        self.bytes
            .get_or_create(&RouteLabels { route })
            .inc_by(n as u64);
    }

    /// A start on resume, and how long until its port accepted.
    pub fn resumed(&self, seconds: f64) {
        self.resume_seconds.observe(seconds);
    }

    /// A WebSocket opened; the returned guard closes it when dropped.
    pub fn websocket_opened(&self) -> OpenWebSocket {
        self.websockets.inc();
        self.websockets_open.inc();
        OpenWebSocket(self.websockets_open.clone())
    }

    /// The text exposition, with sandbox counts by state from `states` and what `sandboxes`
    /// (all there are) recorded since the last scrape. Blocking: reads their files.
    fn render(&self, states: &[(String, i64)], sandboxes: &[SandboxLogs]) -> String {
        self.usage.collect(sandboxes);
        self.sandboxes.clear();
        for (state, count) in states {
            self.sandboxes
                .get_or_create(&StateLabels {
                    state: state.clone(),
                })
                .set(*count);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Counts an open WebSocket until dropped.
pub struct OpenWebSocket(Gauge);

impl Drop for OpenWebSocket {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET /metrics` on the gateway's host, for admins.
pub(super) async fn page(ingress: &Ingress, headers: &HeaderMap, peer: IpAddr) -> Response<Body> {
    match scrape(ingress, headers, peer).await {
        Ok(response) | Err(response) => response,
    }
}

async fn scrape(
    ingress: &Ingress,
    headers: &HeaderMap,
    peer: IpAddr,
) -> Result<Response<Body>, Response<Body>> {
    let anonymous = !headers.contains_key(AUTHORIZATION)
        && !crate::auth::IDENTITY_HEADERS
            .iter()
            .any(|name| headers.contains_key(*name));
    if anonymous {
        return Err(reply::error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "/metrics is for admins: send Authorization: Bearer <an admin's API token>",
        ));
    }
    let visitor = auth::visitor(ingress, headers, peer, false).await?;
    if !visitor.admin {
        return Err(reply::error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "/metrics is for admins (it names sandboxes): scrape it with an admin's API token",
        ));
    }
    let (states, sandboxes) = ingress
        .db(|s| Ok((s.sandbox_states()?, s.list_sandboxes(None)?)))
        .await?;
    let logs: Vec<SandboxLogs> = sandboxes
        .into_iter()
        .map(|sandbox| {
            let (audit, traffic) = ingress.runtime.usage_logs(&sandbox.id);
            SandboxLogs {
                id: sandbox.id,
                audit,
                traffic,
            }
        })
        .collect();
    let metrics = Arc::clone(&ingress.metrics);
    let text = tokio::task::spawn_blocking(move || metrics.render(&states, &logs))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "metrics scrape failed");
            reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error (see the gateway's log)",
            )
        })?;
    Ok(Response::builder()
        .header(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Body::from(text))
        .unwrap_or_default())
}
