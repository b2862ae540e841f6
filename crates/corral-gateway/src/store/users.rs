//! Users and their API tokens. A token is kept only as the hex SHA-256 of its value; the
//! value itself is shown once, when it is made, and never stored.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::{Store, StoreError, is_unique_violation, now};

/// What a user may do: an admin manages users and sees every sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages users and tokens; sees and touches every sandbox.
    Admin,
    /// Sees and touches only their own sandboxes.
    User,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    fn parse(text: &str) -> Self {
        // The CHECK constraint allows only these two values.
        if text == "admin" {
            Role::Admin
        } else {
            Role::User
        }
    }
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Email, unique ignoring case.
    pub email: String,
    /// Admin or user.
    pub role: Role,
    /// PHC-format argon2 hash, if the user may log in with a password.
    pub password_hash: Option<String>,
    /// Unix seconds.
    pub created: i64,
}

/// A token's metadata (never its value or hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Row id, used to revoke it.
    pub id: i64,
    /// What the owner called it.
    pub name: String,
    /// Unix seconds.
    pub created: i64,
}

const USER_COLUMNS: &str = "id, email, role, password_hash, created";
/// [`USER_COLUMNS`] for a query that joins `users` with another table.
pub(super) const JOINED_USER_COLUMNS: &str =
    "users.id, users.email, users.role, users.password_hash, users.created";

pub(super) fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        email: row.get(1)?,
        role: Role::parse(&row.get::<_, String>(2)?),
        password_hash: row.get(3)?,
        created: row.get(4)?,
    })
}

impl Store {
    /// How many users exist (0 means this is the first start).
    pub fn user_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
    }

    /// Adds a user; [`StoreError::EmailTaken`] if the email exists in any case.
    pub fn create_user(
        &self,
        email: &str,
        role: Role,
        password_hash: Option<&str>,
    ) -> Result<User, StoreError> {
        insert_user(&self.conn(), email, role, password_hash, now())
    }

    /// Creates a user and its first token in one transaction, so a user never exists
    /// without the token that was printed for it.
    pub fn create_user_with_token(
        &self,
        email: &str,
        role: Role,
        password_hash: Option<&str>,
        token_name: &str,
        token_hash: &str,
    ) -> Result<(User, TokenInfo), StoreError> {
        let created = now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let user = insert_user(&tx, email, role, password_hash, created)?;
        tx.execute(
            "INSERT INTO tokens (hash, user_id, name, created) VALUES (?1, ?2, ?3, ?4)",
            params![token_hash, user.id, token_name, created],
        )?;
        let token_id = tx.last_insert_rowid();
        tx.commit()?;
        let token = TokenInfo {
            id: token_id,
            name: token_name.into(),
            created,
        };
        Ok((user, token))
    }

    /// The user with this email (ignoring case).
    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?1"),
                [email],
                user_from_row,
            )
            .optional()?)
    }

    /// Every user, oldest first.
    pub fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))?;
        let users = stmt
            .query_map([], user_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(users)
    }

    /// Records a token (by its hash) for a user.
    pub fn add_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
    ) -> Result<TokenInfo, StoreError> {
        let created = now();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO tokens (hash, user_id, name, created) VALUES (?1, ?2, ?3, ?4)",
            params![token_hash, user_id, name, created],
        )?;
        Ok(TokenInfo {
            id: conn.last_insert_rowid(),
            name: name.into(),
            created,
        })
    }

    /// The user a token hash belongs to, if any.
    pub fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {JOINED_USER_COLUMNS} FROM tokens JOIN users ON users.id = tokens.user_id \
                     WHERE tokens.hash = ?1"
                ),
                [token_hash],
                user_from_row,
            )
            .optional()?)
    }

    /// A user's tokens, oldest first.
    pub fn list_tokens(&self, user_id: i64) -> Result<Vec<TokenInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, name, created FROM tokens WHERE user_id = ?1 ORDER BY id")?;
        let tokens = stmt
            .query_map([user_id], |r| {
                Ok(TokenInfo {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    created: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(tokens)
    }

    /// Deletes one of a user's tokens; false if the user has no token with that id.
    pub fn revoke_token(&self, user_id: i64, token_id: i64) -> Result<bool, StoreError> {
        let deleted = self.conn().execute(
            "DELETE FROM tokens WHERE id = ?1 AND user_id = ?2",
            params![token_id, user_id],
        )?;
        Ok(deleted > 0)
    }
}

/// Inserts a user on `conn` (a connection or a transaction);
/// [`StoreError::EmailTaken`] if the email exists in any case.
fn insert_user(
    conn: &rusqlite::Connection,
    email: &str,
    role: Role,
    password_hash: Option<&str>,
    created: i64,
) -> Result<User, StoreError> {
    conn.execute(
        "INSERT INTO users (email, role, password_hash, created) VALUES (?1, ?2, ?3, ?4)",
        params![email, role.as_str(), password_hash, created],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::EmailTaken(email.into())
        } else {
            e.into()
        }
    })?;
    Ok(User {
        id: conn.last_insert_rowid(),
        email: email.into(),
        role,
        password_hash: password_hash.map(Into::into),
        created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (admin, token) = store
            .create_user_with_token("Admin@X", Role::Admin, None, "first", "h1")
            .unwrap();
        assert_eq!(store.user_count().unwrap(), 1);
        assert!(matches!(
            store.create_user("admin@x", Role::User, None),
            Err(StoreError::EmailTaken(_))
        ));
        // A failed user+token creation leaves neither behind.
        assert!(
            store
                .create_user_with_token("admin@x", Role::User, None, "t", "h2")
                .is_err()
        );
        assert!(store.user_by_token_hash("h2").unwrap().is_none());

        let bob = store
            .create_user("bob@x", Role::User, Some("$argon2id$..."))
            .unwrap();
        assert_eq!(store.user_by_email("BOB@x").unwrap(), Some(bob.clone()));
        assert_eq!(store.user_by_token_hash("h1").unwrap(), Some(admin.clone()));
        assert!(store.user_by_token_hash("nope").unwrap().is_none());

        let bob_token = store.add_token(bob.id, "laptop", "h3").unwrap();
        assert_eq!(store.list_tokens(admin.id).unwrap(), vec![token.clone()]);
        assert!(
            !store.revoke_token(admin.id, bob_token.id).unwrap(),
            "not admin's token"
        );
        assert!(store.revoke_token(bob.id, bob_token.id).unwrap());
        assert!(store.user_by_token_hash("h3").unwrap().is_none());
        assert_eq!(
            store
                .list_users()
                .unwrap()
                .iter()
                .map(|u| u.role)
                .collect::<Vec<_>>(),
            [Role::Admin, Role::User]
        );
    }
}
