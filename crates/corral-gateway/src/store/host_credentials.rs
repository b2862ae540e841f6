//! Credentials for session hosts: one-time tickets (made by the API for the web page, spent
//! by `<session host>/_corral/auth`) and the host-only cookies a spent ticket becomes. Both
//! are random values the store keeps only as SHA-256 hashes, each bound to one user and one
//! sandbox, with an expiry; deleting the user or the sandbox deletes them.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, now};

/// What a host credential is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A one-time ticket, spent by the session host's `/_corral/auth`.
    Ticket,
    /// A session-host cookie.
    Cookie,
}

impl CredentialKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ticket => "ticket",
            Self::Cookie => "cookie",
        }
    }
}

/// Who a valid host credential stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCredential {
    /// The user.
    pub user_id: i64,
    /// The one sandbox it opens.
    pub sandbox_id: String,
    /// Unix seconds after which it is void.
    pub expires: i64,
    /// Whether the user is an admin (who may open any sandbox).
    pub admin: bool,
}

fn credential_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<HostCredential> {
    Ok(HostCredential {
        user_id: row.get(0)?,
        sandbox_id: row.get(1)?,
        expires: row.get(2)?,
        admin: row.get::<_, Option<bool>>(3)?.unwrap_or(false),
    })
}

impl Store {
    /// Records a credential (by its hash) for `user_id` and `sandbox_id`, valid until
    /// `expires`. Expired ones are swept on the way.
    pub fn add_host_credential(
        &self,
        kind: CredentialKind,
        hash: &str,
        user_id: i64,
        sandbox_id: &str,
        expires: i64,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute("DELETE FROM host_credentials WHERE expires < ?1", [now()])?;
        conn.execute(
            "INSERT INTO host_credentials (hash, kind, user_id, sandbox_id, expires) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hash, kind.as_str(), user_id, sandbox_id, expires],
        )?;
        Ok(())
    }

    /// Spends a ticket: returns what it was for and deletes it in the same statement, so two
    /// gateways (or two requests) cannot both spend it. None if unknown, spent or expired.
    pub fn spend_ticket(&self, hash: &str) -> Result<Option<HostCredential>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "DELETE FROM host_credentials WHERE hash = ?1 AND kind = 'ticket' \
                 RETURNING user_id, sandbox_id, expires, \
                 (SELECT role = 'admin' FROM users WHERE users.id = user_id)",
                [hash],
                credential_from_row,
            )
            .optional()?
            .filter(|c| c.expires >= now()))
    }

    /// The unexpired cookie with this hash.
    pub fn host_cookie(&self, hash: &str) -> Result<Option<HostCredential>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT c.user_id, c.sandbox_id, c.expires, u.role = 'admin' \
                 FROM host_credentials c JOIN users u ON u.id = c.user_id \
                 WHERE c.hash = ?1 AND c.kind = 'cookie' AND c.expires >= ?2",
                params![hash, now()],
                credential_from_row,
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NewSandbox, Role};
    use super::*;

    #[test]
    fn a_ticket_is_spent_once_and_a_cookie_is_not_a_ticket() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let user = store.create_user("a@x", Role::User, None).unwrap();
        store
            .insert_sandbox(&NewSandbox {
                id: "s1".into(),
                owner_id: user.id,
                name: "s1".into(),
                profile: "restricted".into(),
                repo: None,
                branch: None,
                agent: "shell".into(),
                ports: vec![],
                command: None,
            })
            .unwrap();
        let later = now() + 60;
        store
            .add_host_credential(CredentialKind::Ticket, "t", user.id, "s1", later)
            .unwrap();
        store
            .add_host_credential(CredentialKind::Cookie, "c", user.id, "s1", later)
            .unwrap();
        store
            .add_host_credential(CredentialKind::Ticket, "old", user.id, "s1", now() - 1)
            .unwrap();
        assert_eq!(store.spend_ticket("t").unwrap().unwrap().sandbox_id, "s1");
        assert_eq!(store.spend_ticket("t").unwrap(), None, "spent");
        assert_eq!(store.spend_ticket("old").unwrap(), None, "expired");
        assert_eq!(store.spend_ticket("c").unwrap(), None, "a cookie");
        assert_eq!(store.host_cookie("c").unwrap().unwrap().user_id, user.id);
        assert!(store.host_cookie("t").unwrap().is_none());
        store.delete_sandbox("s1").unwrap();
        assert!(store.host_cookie("c").unwrap().is_none(), "cascades");
    }
}
