//! When sandboxes were last used, for the idle reaper. Every gateway writes `last_activity`
//! (throttled) and the reaper decides from the store, so several gateways sharing the store
//! agree on what is idle; the claim that starts an idle stop is one conditional statement, so
//! a sandbox touched meanwhile (by any gateway) is not stopped.

use rusqlite::params;

use super::{Store, StoreError};

impl Store {
    /// Records activity at unix second `at` (never moving `last_activity` back).
    pub fn touch_sandbox(&self, id: &str, at: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE sandboxes SET last_activity = ?2 WHERE id = ?1 AND last_activity < ?2",
            params![id, at],
        )?;
        Ok(())
    }

    /// Ids of running sandboxes with no activity since unix second `cutoff`.
    pub fn idle_sandboxes(&self, cutoff: i64) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id FROM sandboxes WHERE state = 'running' AND last_activity < ?1 ORDER BY id",
        )?;
        let ids = stmt
            .query_map([cutoff], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    /// Claims an idle stop: moves a running sandbox still idle since `cutoff` to `stopping`.
    /// False if it was touched meanwhile, is no longer running, or another gateway claimed it.
    pub fn claim_idle_stop(&self, id: &str, cutoff: i64) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE sandboxes SET state = 'stopping' \
             WHERE id = ?1 AND state = 'running' AND last_activity < ?2",
            params![id, cutoff],
        )? > 0)
    }

    /// How many sandboxes are in each state.
    pub fn sandbox_states(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT state, COUNT(*) FROM sandboxes GROUP BY state ORDER BY state")?;
        let counts = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NewSandbox, ProcessId, Role};
    use super::*;

    #[test]
    fn only_an_untouched_running_sandbox_is_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let user = store.create_user("a@x", Role::User, None).unwrap();
        for id in ["a", "b"] {
            store
                .insert_sandbox(&NewSandbox {
                    id: id.into(),
                    owner_id: user.id,
                    name: id.into(),
                    profile: "restricted".into(),
                    repo: None,
                    branch: None,
                    agent: "shell".into(),
                    ports: vec![],
                    command: None,
                })
                .unwrap();
        }
        let process = ProcessId {
            pid: 1,
            start_time: 1,
        };
        store.mark_running("a", process).unwrap();
        let started = store.sandbox("a").unwrap().unwrap().last_activity;
        let cutoff = started + 10;
        assert_eq!(store.idle_sandboxes(cutoff).unwrap(), ["a"], "b is stopped");
        store.touch_sandbox("a", started + 20).unwrap();
        store.touch_sandbox("a", started + 5).unwrap();
        assert_eq!(
            store.sandbox("a").unwrap().unwrap().last_activity,
            started + 20,
            "never moves back"
        );
        assert!(!store.claim_idle_stop("a", cutoff).unwrap(), "touched");
        assert!(store.claim_idle_stop("a", started + 30).unwrap());
        assert!(!store.claim_idle_stop("a", started + 30).unwrap(), "once");
    }
}
