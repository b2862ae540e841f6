//! Stopping a sandbox because it is idle. The decision that it is idle is the store's (see
//! `Store::claim_idle_stop`): the claim and the check that nothing touched it since `cutoff`
//! are one statement, so activity recorded by any gateway wins over a stop.

use super::{Runtime, RuntimeError};

impl Runtime {
    /// Stops the sandbox if it runs here and the store still says it has been idle since
    /// `cutoff` (unix seconds). True if it was stopped.
    pub async fn stop_if_idle(
        self: &std::sync::Arc<Self>,
        id: &str,
        cutoff: i64,
    ) -> Result<bool, RuntimeError> {
        let _guard = self.lock(id).await;
        if !self.is_running(id) {
            return Ok(false);
        }
        let target = id.to_owned();
        if !self.db(move |s| s.claim_idle_stop(&target, cutoff)).await? {
            return Ok(false);
        }
        super::because(super::Cause::Idle, self.stop_locked(id)).await?;
        Ok(true)
    }
}
