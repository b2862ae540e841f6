//! Sandbox records: what a user asked for (profile, repo, branch, agent, ports) and the state
//! the gateway last knew: `stopped`, `running` or `stopping` (with the process that runs it)
//! or `exited` (with its exit code, when known).

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError, is_unique_violation, now};

/// A sandbox to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSandbox {
    /// Its id: the repo-session hash or a random one.
    pub id: String,
    /// Owner's user id.
    pub owner_id: i64,
    /// Name, unique per owner.
    pub name: String,
    /// Built-in profile name.
    pub profile: String,
    /// Repo to clone, for a repo session.
    pub repo: Option<String>,
    /// Branch to check out, for a repo session.
    pub branch: Option<String>,
    /// Agent template.
    pub agent: String,
    /// Ports the agent serves.
    pub ports: Vec<u16>,
    /// The caller's own command (agent `custom`); none for a template.
    pub command: Option<Vec<String>>,
}

/// A recorded sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Its id.
    pub id: String,
    /// Owner's user id.
    pub owner_id: i64,
    /// Owner's email.
    pub owner: String,
    /// Name, unique per owner.
    pub name: String,
    /// Built-in profile name.
    pub profile: String,
    /// Repo to clone, for a repo session.
    pub repo: Option<String>,
    /// Branch, for a repo session.
    pub branch: Option<String>,
    /// Agent template.
    pub agent: String,
    /// Ports the agent serves.
    pub ports: Vec<u16>,
    /// Last known state: `stopped`, `running`, `stopping` or `exited`.
    pub state: String,
    /// The `corral run` process, while `running` or `stopping`.
    pub process: Option<ProcessId>,
    /// How the last run ended, when it ended by itself and the gateway saw it.
    pub exit_code: Option<i32>,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds of the last request that touched it.
    pub last_activity: i64,
    /// The caller's own command (agent `custom`); none for a template.
    pub command: Option<Vec<String>>,
    /// Users the owner shared it with (they may open its session host), by email.
    pub shared_with: Vec<SharedUser>,
}

/// A user a sandbox is shared with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SharedUser {
    /// Their user id.
    pub id: i64,
    /// Their email.
    pub email: String,
}

impl Sandbox {
    /// Whether `user_id` may open this sandbox's session host: its owner, or someone it is
    /// shared with (admins are let in by their role, not by this).
    pub fn opens_for(&self, user_id: i64) -> bool {
        self.owner_id == user_id || self.shared_with.iter().any(|u| u.id == user_id)
    }
}

/// A process, named so that a reused pid is not mistaken for it: its pid and its start time
/// (field 22 of `/proc/PID/stat`, in clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The pid.
    pub pid: i32,
    /// Its start time in clock ticks since boot.
    pub start_time: u64,
}

/// What [`Store::insert_sandbox`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// A new row.
    Created(Sandbox),
    /// The owner's repo session with this id already existed; it is returned unchanged.
    Existing(Sandbox),
}

const SELECT: &str = "SELECT s.id, s.owner_id, u.email, s.name, s.profile, s.repo, s.branch, \
                      s.agent, s.ports, s.state, s.created, s.last_activity, s.pid, s.start_time, \
                      s.exit_code, s.command, \
                      (SELECT json_group_array(json_object('id', su.id, 'email', su.email)) \
                       FROM sandbox_shares sh JOIN users su ON su.id = sh.user_id \
                       WHERE sh.sandbox_id = s.id) \
                      FROM sandboxes s JOIN users u ON u.id = s.owner_id";

fn sandbox_from_row(row: &Row<'_>) -> rusqlite::Result<Sandbox> {
    let ports: String = row.get(8)?;
    Ok(Sandbox {
        id: row.get(0)?,
        owner_id: row.get(1)?,
        owner: row.get(2)?,
        name: row.get(3)?,
        profile: row.get(4)?,
        repo: row.get(5)?,
        branch: row.get(6)?,
        agent: row.get(7)?,
        // Written by `insert_sandbox` from a Vec<u16>, so it always parses.
        ports: serde_json::from_str(&ports).unwrap_or_default(),
        state: row.get(9)?,
        created: row.get(10)?,
        last_activity: row.get(11)?,
        process: match (
            row.get::<_, Option<i32>>(12)?,
            row.get::<_, Option<i64>>(13)?,
        ) {
            (Some(pid), Some(start_time)) => Some(ProcessId {
                pid,
                start_time: start_time as u64,
            }),
            _ => None,
        },
        exit_code: row.get(14)?,
        // Written by `insert_sandbox` from a Vec<String>, so it always parses.
        command: row
            .get::<_, Option<String>>(15)?
            .and_then(|c| serde_json::from_str(&c).ok()),
        // Made by SQLite's json_group_array just above, so it always parses.
        shared_with: row
            .get::<_, Option<String>>(16)?
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or_default(),
    })
}

impl Store {
    /// Records a sandbox in state `stopped`. If the owner already has a repo session with
    /// this id, returns it as [`Inserted::Existing`]; another owner's id is
    /// [`StoreError::IdTaken`] and a name the owner already uses is [`StoreError::NameTaken`].
    pub fn insert_sandbox(&self, new: &NewSandbox) -> Result<Inserted, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let existing = tx
            .query_row(
                &format!("{SELECT} WHERE s.id = ?1"),
                [&new.id],
                sandbox_from_row,
            )
            .optional()?;
        if let Some(existing) = existing {
            return if existing.owner_id == new.owner_id && existing.repo.is_some() {
                Ok(Inserted::Existing(existing))
            } else {
                Err(StoreError::IdTaken(new.id.clone()))
            };
        }
        let created = now();
        let ports = serde_json::to_string(&new.ports).unwrap_or_else(|_| "[]".into());
        let command = new
            .command
            .as_ref()
            .map(|c| serde_json::to_string(c).unwrap_or_else(|_| "[]".into()));
        tx.execute(
            "INSERT INTO sandboxes (id, owner_id, name, profile, repo, branch, agent, ports, \
             state, created, last_activity, command) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'stopped', ?9, ?9, ?10)",
            params![
                new.id,
                new.owner_id,
                new.name,
                new.profile,
                new.repo,
                new.branch,
                new.agent,
                ports,
                created,
                command
            ],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::NameTaken(new.name.clone())
            } else {
                e.into()
            }
        })?;
        let sandbox = tx.query_row(
            &format!("{SELECT} WHERE s.id = ?1"),
            [&new.id],
            sandbox_from_row,
        )?;
        tx.commit()?;
        Ok(Inserted::Created(sandbox))
    }

    /// The sandbox with this id.
    pub fn sandbox(&self, id: &str) -> Result<Option<Sandbox>, StoreError> {
        Ok(self
            .conn()
            .query_row(&format!("{SELECT} WHERE s.id = ?1"), [id], sandbox_from_row)
            .optional()?)
    }

    /// Sandboxes of one owner, or of everyone when `owner_id` is `None`, oldest first.
    pub fn list_sandboxes(&self, owner_id: Option<i64>) -> Result<Vec<Sandbox>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{SELECT} WHERE ?1 IS NULL OR s.owner_id = ?1 \
             OR s.id IN (SELECT sandbox_id FROM sandbox_shares WHERE user_id = ?1) \
             ORDER BY s.created, s.id"
        ))?;
        let rows = stmt
            .query_map([owner_id], sandbox_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Sandboxes recorded as `running` or `stopping` (with a process), for reconciling after
    /// a restart.
    pub fn running_sandboxes(&self) -> Result<Vec<Sandbox>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{SELECT} WHERE s.state IN ('running', 'stopping') ORDER BY s.id"
        ))?;
        let rows = stmt
            .query_map([], sandbox_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Records that `process` now runs the sandbox; false if there is no such sandbox.
    pub fn mark_running(&self, id: &str, process: ProcessId) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE sandboxes SET state = 'running', pid = ?2, start_time = ?3, \
             exit_code = NULL, last_activity = ?4 WHERE id = ?1",
            params![id, process.pid, process.start_time as i64, now()],
        )? > 0)
    }

    /// Records that a stop of `process` has begun (state `stopping`), so a gateway that dies
    /// before the process ends still finishes the stop after it restarts. Only if `process`
    /// is still the recorded one.
    pub fn mark_stopping(&self, id: &str, process: ProcessId) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE sandboxes SET state = 'stopping' WHERE id = ?1 AND pid = ?2 AND start_time = ?3",
            params![id, process.pid, process.start_time as i64],
        )? > 0)
    }

    /// Records that `process` ended, leaving the sandbox in `state` (`stopped` or `exited`)
    /// with `exit_code`. Only if `process` is still the recorded one: a late report about an
    /// earlier run must not overwrite a newer one. False if nothing changed.
    pub fn mark_ended(
        &self,
        id: &str,
        process: ProcessId,
        state: &str,
        exit_code: Option<i32>,
    ) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE sandboxes SET state = ?4, pid = NULL, start_time = NULL, exit_code = ?5, \
             last_activity = ?6 WHERE id = ?1 AND pid = ?2 AND start_time = ?3",
            params![
                id,
                process.pid,
                process.start_time as i64,
                state,
                exit_code,
                now()
            ],
        )? > 0)
    }

    /// Shares sandbox `id` with the user with `email` (again is a no-op); `Ok(false)` if
    /// there is no such user.
    pub fn share_sandbox(&self, id: &str, email: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        let user: Option<i64> = conn
            .query_row("SELECT id FROM users WHERE email = ?1", [email], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(user) = user else {
            return Ok(false);
        };
        conn.execute(
            "INSERT OR IGNORE INTO sandbox_shares (sandbox_id, user_id) VALUES (?1, ?2)",
            params![id, user],
        )?;
        Ok(true)
    }

    /// Stops sharing sandbox `id` with the user with `email`; `Ok(false)` if it was not.
    pub fn unshare_sandbox(&self, id: &str, email: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM sandbox_shares WHERE sandbox_id = ?1 \
             AND user_id = (SELECT id FROM users WHERE email = ?2)",
            params![id, email],
        )? > 0)
    }

    /// Deletes a sandbox record (and its shares); false if there was none.
    pub fn delete_sandbox(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM sandboxes WHERE id = ?1", [id])?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Role;
    use super::*;

    fn new(id: &str, owner_id: i64, name: &str, repo: Option<&str>) -> NewSandbox {
        NewSandbox {
            id: id.into(),
            owner_id,
            name: name.into(),
            profile: "restricted".into(),
            repo: repo.map(Into::into),
            branch: repo.map(|_| "main".into()),
            agent: "shell".into(),
            ports: vec![8080],
            command: None,
        }
    }

    #[test]
    fn insert_is_idempotent_for_the_owners_repo_session_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.create_user("a@x", Role::User, None).unwrap();
        let b = store.create_user("b@x", Role::User, None).unwrap();

        let Inserted::Created(first) = store
            .insert_sandbox(&new("r1", a.id, "app", Some("repo")))
            .unwrap()
        else {
            panic!("first insert must create")
        };
        assert_eq!(
            (first.state.as_str(), first.owner.as_str()),
            ("stopped", "a@x")
        );
        assert_eq!(first.ports, [8080]);
        assert_eq!(
            store
                .insert_sandbox(&new("r1", a.id, "other", Some("repo")))
                .unwrap(),
            Inserted::Existing(first.clone())
        );
        assert!(matches!(
            store.insert_sandbox(&new("r1", b.id, "app", Some("repo"))),
            Err(StoreError::IdTaken(_))
        ));
        assert!(matches!(
            store.insert_sandbox(&new("x2", a.id, "app", None)),
            Err(StoreError::NameTaken(_))
        ));
        // Names are per owner.
        store.insert_sandbox(&new("x3", b.id, "app", None)).unwrap();

        assert_eq!(
            store.list_sandboxes(Some(a.id)).unwrap(),
            vec![first.clone()]
        );
        assert_eq!(store.list_sandboxes(None).unwrap().len(), 2);
        let process = ProcessId {
            pid: 42,
            start_time: 7,
        };
        assert!(store.mark_running("r1", process).unwrap());
        let running = store.running_sandboxes().unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].process, Some(process));
        assert!(store.mark_stopping("r1", process).unwrap());
        assert_eq!(store.running_sandboxes().unwrap()[0].state, "stopping");
        let stale = ProcessId {
            pid: 42,
            start_time: 6,
        };
        assert!(!store.mark_ended("r1", stale, "exited", Some(1)).unwrap());
        assert!(store.mark_ended("r1", process, "exited", Some(3)).unwrap());
        let ended = store.sandbox("r1").unwrap().unwrap();
        assert_eq!(
            (ended.state.as_str(), ended.exit_code, ended.process),
            ("exited", Some(3), None)
        );
        assert!(store.running_sandboxes().unwrap().is_empty());

        assert!(store.delete_sandbox("r1").unwrap());
        assert!(!store.delete_sandbox("r1").unwrap());
        assert!(store.sandbox("r1").unwrap().is_none());
    }
}
