//! `/metrics` in the Prometheus text format: sandboxes by state (read from the store at
//! scrape time), starts on resume and idle stops, resume latency, proxied requests and bytes
//! by route kind, and WebSocket connections. Labels never carry a sandbox id or a user, so
//! the page reveals no names.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
    resume_starts: Counter,
    idle_stops: Counter,
    resume_seconds: Histogram,
    requests: Family<RouteLabels, Counter>,
    bytes: Family<RouteLabels, Counter<u64, AtomicU64>>,
    websockets: Counter,
    websockets_open: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("corral");
        let sandboxes = Family::<StateLabels, Gauge>::default();
        registry.register("sandboxes", "Sandboxes by state", sandboxes.clone());
        let resume_starts = Counter::default();
        registry.register(
            "resume_starts",
            "Sandboxes started because a request reached their stopped session",
            resume_starts.clone(),
        );
        let idle_stops = Counter::default();
        registry.register(
            "idle_stops",
            "Sandboxes stopped by the idle reaper",
            idle_stops.clone(),
        );
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
            resume_starts,
            idle_stops,
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

    /// A start on resume began.
    pub fn resume_started(&self) {
        self.resume_starts.inc();
    }

    /// An idle stop.
    pub fn idle_stopped(&self) {
        self.idle_stops.inc();
    }

    /// A WebSocket opened; the returned guard closes it when dropped.
    pub fn websocket_opened(&self) -> OpenWebSocket {
        self.websockets.inc();
        self.websockets_open.inc();
        OpenWebSocket(self.websockets_open.clone())
    }

    /// The text exposition, with sandbox counts by state from `states`.
    pub fn render(&self, states: &[(String, i64)]) -> String {
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
