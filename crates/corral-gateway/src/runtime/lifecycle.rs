//! Counting sandbox starts and stops by cause, for `/metrics`.
//!
//! A start is counted where a new `corral run` process is recorded running (so a start of a
//! sandbox that already runs, or one that fails before its process exists, counts nothing);
//! a stop where a stop of a running process has ended, or where the gateway records that a
//! process ended by itself (`exited`) or while the gateway was down (`reconcile`). Each
//! process start and end is therefore counted once, whichever path led to it.
//!
//! The cause is carried as task-local context set by the caller ([`because`]), not as an
//! argument: `start`, `stop` and `delete` are shared by the API, the web page, resume, the
//! idle reaper and reconcile, and the cause matters to nothing but these counters (as a
//! tracing span's fields matter only to the log). Without one, the cause is [`Cause::Api`]:
//! the API (and the web page, which uses it) is the path that names none.

use std::future::Future;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Why a sandbox was started or stopped.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Cause {
    /// A user's start or stop through the API or the web page.
    Api,
    /// A user deleted the sandbox while it ran.
    Delete,
    /// A request reached its stopped session.
    Resume,
    /// The idle reaper.
    Idle,
    /// The gateway, starting, found it ended or finished a stop begun before a restart.
    Reconcile,
    /// Its process ended by itself.
    Exited,
}

impl EncodeLabelValue for Cause {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            Self::Api => "api",
            Self::Delete => "delete",
            Self::Resume => "resume",
            Self::Idle => "idle",
            Self::Reconcile => "reconcile",
            Self::Exited => "exited",
        })
    }
}

tokio::task_local! {
    static CAUSE: Cause;
}

/// Runs `work` (a runtime start, stop or delete) with `cause` as the reason it counts under.
pub async fn because<F: Future>(cause: Cause, work: F) -> F::Output {
    CAUSE.scope(cause, work).await
}

/// The cause set by [`because`] for the running task, else [`Cause::Api`].
fn current() -> Cause {
    CAUSE.try_with(|c| *c).unwrap_or(Cause::Api)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: Cause,
}

/// Starts and stops by cause, shared with `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    starts: Family<CauseLabels, Counter>,
    stops: Family<CauseLabels, Counter>,
}

impl super::Runtime {
    /// Starts and stops counted so far.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }
}

impl Lifecycle {
    /// A sandbox process started, for the current cause.
    pub(super) fn started(&self) {
        self.starts
            .get_or_create(&CauseLabels { cause: current() })
            .inc();
    }

    /// A stop of a running sandbox ended, for the current cause.
    pub(super) fn stopped(&self) {
        self.stopped_because(current());
    }

    /// A sandbox process ended for `cause`.
    pub(super) fn stopped_because(&self, cause: Cause) {
        self.stops.get_or_create(&CauseLabels { cause }).inc();
    }

    /// Registers both counters in `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "sandbox_starts",
            "Sandbox processes started, by cause",
            self.starts.clone(),
        );
        registry.register(
            "sandbox_stops",
            "Sandbox processes ended, by cause",
            self.stops.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lifecycle: &Lifecycle) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        lifecycle.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[tokio::test]
    async fn each_count_goes_under_the_cause_its_caller_set() {
        let lifecycle = Lifecycle::default();
        lifecycle.started();
        because(Cause::Resume, async { lifecycle.started() }).await;
        because(Cause::Idle, async { lifecycle.stopped() }).await;
        lifecycle.stopped_because(Cause::Exited);
        let text = text(&lifecycle);
        for line in [
            "sandbox_starts_total{cause=\"api\"} 1",
            "sandbox_starts_total{cause=\"resume\"} 1",
            "sandbox_stops_total{cause=\"idle\"} 1",
            "sandbox_stops_total{cause=\"exited\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
