//! The idle reaper: stops sandboxes nobody has used for `idle_timeout`. Their workspace and
//! home stay; the next request to their session host starts them again (see `resume`).
//!
//! What counts as use: proxied requests, body bytes and WebSocket frames (recorded by
//! `activity`, in the store for every gateway to see), and whatever `Reaper::in_use` says
//! about the present moment (an attached terminal, say). The decision is the store's: each gateway only stops what the
//! store still says is idle, with a claim that fails if anyone touched it meanwhile.

use std::sync::Arc;
use std::time::Duration;

use super::Ingress;
use super::activity::unix_now;

/// How often activity is written to the store and the reaper looks: a quarter of the idle
/// timeout, between 1 s and 60 s.
pub fn throttle(idle_timeout: Duration) -> Duration {
    (idle_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The idle reaper of one gateway.
pub struct Reaper {
    ingress: Arc<Ingress>,
}

impl Reaper {
    /// A reaper over the ingress's activity and runtime.
    pub fn new(ingress: Arc<Ingress>) -> Self {
        Self { ingress }
    }

    /// Looks for idle sandboxes every [`throttle`] until the gateway shuts down.
    pub async fn run(self) {
        let period = throttle(self.ingress.config.idle_timeout);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.sweep().await,
                () = self.ingress.runtime.shutting_down() => return,
            }
        }
    }

    /// One look: stops every sandbox running here that is idle by the store and not in use.
    async fn sweep(&self) {
        let cutoff = unix_now() - self.ingress.config.idle_timeout.as_secs() as i64;
        let idle = match self.ingress.db(move |s| s.idle_sandboxes(cutoff)).await {
            Ok(idle) => idle,
            Err(_) => return,
        };
        for id in idle {
            // Another gateway's sandbox (or one ending): not ours to stop.
            if !self.ingress.runtime.is_running(&id) {
                continue;
            }
            if self.in_use(&id, cutoff) {
                self.ingress.activity.touch(&id);
                continue;
            }
            match self.ingress.runtime.stop_if_idle(&id, cutoff).await {
                Ok(true) => {
                    tracing::info!(sandbox = %id, "idle: stopped");
                    self.ingress.upstream.forget(&id);
                    self.ingress.activity.forget(&id);
                    self.ingress.sandboxes.forget(&id);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(sandbox = %id, error = %e, "idle stop failed"),
            }
        }
    }

    /// Whether anyone is using sandbox `id` right now although the store says it has been
    /// idle since `cutoff`: the one place that decides it. Activity this gateway saw but has
    /// not written yet (writes are throttled), or a terminal attached here.
    fn in_use(&self, id: &str, cutoff: i64) -> bool {
        self.ingress.activity.since(id) >= cutoff || self.ingress.runtime.attached_terminals(id) > 0
    }
}
