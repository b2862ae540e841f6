//! Sandbox records: what a user asked for (profile, repo, branch, agent, ports) and the state
//! the gateway last knew. Only `stopped` exists until the runtime arrives.

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
    /// Last known state.
    pub state: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds of the last request that touched it.
    pub last_activity: i64,
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
                      s.agent, s.ports, s.state, s.created, s.last_activity \
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
        tx.execute(
            "INSERT INTO sandboxes (id, owner_id, name, profile, repo, branch, agent, ports, \
             state, created, last_activity) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'stopped', ?9, ?9)",
            params![
                new.id,
                new.owner_id,
                new.name,
                new.profile,
                new.repo,
                new.branch,
                new.agent,
                ports,
                created
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
            "{SELECT} WHERE ?1 IS NULL OR s.owner_id = ?1 ORDER BY s.created, s.id"
        ))?;
        let rows = stmt
            .query_map([owner_id], sandbox_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Deletes a sandbox record; false if there was none.
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
        assert!(store.delete_sandbox("r1").unwrap());
        assert!(!store.delete_sandbox("r1").unwrap());
        assert!(store.sandbox("r1").unwrap().is_none());
    }
}
