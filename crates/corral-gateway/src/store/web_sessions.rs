//! Signed-in browsers: one row per `corral_session` cookie, kept as the SHA-256 of the
//! cookie's value (like API tokens) with the session's CSRF token and when it expires.

use rusqlite::{OptionalExtension, params};

use super::users::{JOINED_USER_COLUMNS, user_from_row};
use super::{Store, StoreError, now};
use crate::store::User;

/// A live web session: who it is and the CSRF token its unsafe requests must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    /// The signed-in user.
    pub user: User,
    /// The value every unsafe request of this session must echo (`X-CSRF-Token` or form field).
    pub csrf: String,
}

impl Store {
    /// Records a web session (by the hash of its cookie) that ends at `expires` (Unix
    /// seconds), and drops every expired one.
    pub fn create_web_session(
        &self,
        hash: &str,
        user_id: i64,
        csrf: &str,
        expires: i64,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute("DELETE FROM web_sessions WHERE expires <= ?1", [now()])?;
        conn.execute(
            "INSERT INTO web_sessions (hash, user_id, csrf, expires) VALUES (?1, ?2, ?3, ?4)",
            params![hash, user_id, csrf, expires],
        )?;
        Ok(())
    }

    /// The unexpired web session whose cookie hashes to `hash`.
    pub fn web_session(&self, hash: &str) -> Result<Option<WebSession>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {JOINED_USER_COLUMNS}, web_sessions.csrf FROM web_sessions \
                     JOIN users ON users.id = web_sessions.user_id \
                     WHERE web_sessions.hash = ?1 AND web_sessions.expires > ?2"
                ),
                params![hash, now()],
                |row| {
                    Ok(WebSession {
                        user: user_from_row(row)?,
                        csrf: row.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// Ends a web session (sign out); false if there was none.
    pub fn delete_web_session(&self, hash: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM web_sessions WHERE hash = ?1", [hash])?
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;

    #[test]
    fn sessions_expire_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let user = store.create_user("a@x", Role::User, None).unwrap();
        store
            .create_web_session("live", user.id, "c1", now() + 60)
            .unwrap();
        store
            .create_web_session("old", user.id, "c2", now() - 1)
            .unwrap();
        let live = store.web_session("live").unwrap().unwrap();
        assert_eq!(
            (live.user.email.as_str(), live.csrf.as_str()),
            ("a@x", "c1")
        );
        assert_eq!(store.web_session("old").unwrap(), None, "expired");
        assert!(store.delete_web_session("live").unwrap());
        assert_eq!(store.web_session("live").unwrap(), None, "signed out");
        assert!(!store.delete_web_session("live").unwrap());
    }
}
