//! The store: users, API tokens and sandboxes in one SQLite file (`corral.db`, WAL mode) in
//! the data directory. Migrations run when the store opens; the file is created 0600 inside
//! a 0700 directory because it holds password hashes.
//!
//! The store is synchronous; the API calls it from a blocking thread. Every method is one
//! statement or one transaction, so a crash leaves either the old or the new row.

mod activity;
mod host_credentials;
mod inference;
mod sandboxes;
mod users;
mod web_sessions;

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

pub use host_credentials::{CredentialKind, HostCredential};
pub use inference::{Budget, Provider, ProviderKind, UsageRow, UsageTotals};
pub use sandboxes::{Inserted, NewSandbox, ProcessId, Sandbox, SharedUser};
pub use users::{Role, TokenInfo, User};
pub use web_sessions::WebSession;

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "corral.db";

/// Schema migrations, in order; `PRAGMA user_version` counts how many have run. Append only.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    password_hash TEXT,
    created       INTEGER NOT NULL
);
CREATE TABLE tokens (
    id      INTEGER PRIMARY KEY,
    hash    TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE sandboxes (
    id            TEXT PRIMARY KEY,
    owner_id      INTEGER NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    profile       TEXT NOT NULL,
    repo          TEXT,
    branch        TEXT,
    agent         TEXT NOT NULL,
    ports         TEXT NOT NULL,
    state         TEXT NOT NULL,
    created       INTEGER NOT NULL,
    last_activity INTEGER NOT NULL,
    UNIQUE (owner_id, name)
);
"#,
    r#"
ALTER TABLE sandboxes ADD COLUMN pid INTEGER;
ALTER TABLE sandboxes ADD COLUMN start_time INTEGER;
ALTER TABLE sandboxes ADD COLUMN exit_code INTEGER;
"#,
    r#"
CREATE TABLE web_sessions (
    hash    TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf    TEXT NOT NULL,
    expires INTEGER NOT NULL
);
"#,
    // Inference: providers (keys sealed with the gateway's provider key), token usage per
    // user, sandbox, provider, model and UTC day, and per-user budgets.
    r#"
CREATE TABLE providers (
    name          TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('anthropic', 'openai', 'openai-compatible')),
    base_url      TEXT NOT NULL,
    sealed_key    BLOB NOT NULL,
    allow_private INTEGER NOT NULL,
    aliases       TEXT NOT NULL,
    created       INTEGER NOT NULL
);
CREATE TABLE inference_usage (
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sandbox_id    TEXT NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    day           TEXT NOT NULL,
    requests      INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    PRIMARY KEY (user_id, sandbox_id, provider, model, day)
);
CREATE TABLE inference_budgets (
    user_id                     INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    tokens_per_day              INTEGER,
    tokens_per_month            INTEGER,
    requests_per_day            INTEGER,
    requests_per_month          INTEGER,
    sandbox_requests_per_minute INTEGER
);
"#,
    // Ingress: a sandbox's custom command, and the one-time tickets and session-host cookies
    // (stored as SHA-256 hashes, like tokens, so several gateways can share them).
    r#"
ALTER TABLE sandboxes ADD COLUMN command TEXT;
CREATE TABLE host_credentials (
    hash       TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('ticket', 'cookie')),
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    expires    INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE sandbox_shares (
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (sandbox_id, user_id)
);
CREATE INDEX sandbox_shares_by_user ON sandbox_shares(user_id);
"#,
];

/// Why a store operation failed. Conflicts are their own variants so the API can answer
/// 409 instead of 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The database file could not be created or opened.
    #[error("cannot open store {}: {reason}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A migration failed; the store is left at the version before it.
    #[error("store migration {version} failed: {source}")]
    Migrate {
        /// 1-based number of the migration.
        version: usize,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database was written by a newer corral.
    #[error(
        "the store has schema version {found} but this corral knows only {known}: upgrade corral"
    )]
    NewerSchema {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        known: usize,
    },
    /// A user with this email already exists.
    #[error("a user with email {0:?} already exists")]
    EmailTaken(String),
    /// The owner already has a sandbox with this name.
    #[error("you already have a sandbox named {0:?}")]
    NameTaken(String),
    /// A provider with this name already exists.
    #[error("a provider named {0:?} already exists: remove it first to replace it")]
    ProviderTaken(String),
    /// A sandbox already has this id (a named sandbox's id is its name, unique on the
    /// gateway across all users, since it names the session host).
    #[error(
        "sandbox id {0:?} is taken: a sandbox's name is its id and its session host, unique \
         on this gateway across all users; choose another name"
    )]
    IdTaken(String),
    /// Any other SQLite failure: a bug or a broken disk, never the caller's mistake.
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// The gateway's database. Cheap to share behind an `Arc`.
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir` and runs pending migrations.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|source| StoreError::CreateDir {
                path: data_dir.to_owned(),
                source,
            })?;
        let path = data_dir.join(DB_FILE);
        let open_err = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        // Create the file ourselves so it is 0600 from its first byte; SQLite gives the -wal
        // and -shm files the same mode.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| open_err(e.to_string()))?;
        let conn = Connection::open(&path).map_err(|e| open_err(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| conn.pragma_update(None, "foreign_keys", "ON"))
            .and_then(|()| conn.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|()| conn.busy_timeout(std::time::Duration::from_secs(5)))
            .map_err(|e| open_err(e.to_string()))?;
        let mut store = Store {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let conn = self.conn.get_mut().unwrap_or_else(|e| e.into_inner());
        let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if found > MIGRATIONS.len() as i64 {
            return Err(StoreError::NewerSchema {
                found,
                known: MIGRATIONS.len(),
            });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = index + 1;
            let run = |conn: &mut Connection| -> rusqlite::Result<()> {
                let tx = conn.transaction()?;
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", version as i64)?;
                tx.commit()
            };
            run(conn).map_err(|source| StoreError::Migrate { version, source })?;
        }
        Ok(())
    }

    /// The schema version the store is at (the number of migrations run).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |row| row.get(0))?)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done write: every write is a
        // single statement or a transaction that rolls back when dropped.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether `e` is a UNIQUE constraint failure.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn opens_migrates_once_and_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = Store::open(&data).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        store.create_user("a@x", Role::Admin, None).unwrap();
        drop(store);

        let store = Store::open(&data).unwrap();
        assert_eq!(store.user_count().unwrap(), 1);
        store.create_user("b@x", Role::User, None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        for file in [DB_FILE, "corral.db-wal", "corral.db-shm"] {
            assert_eq!(mode(&data.join(file)), 0o600, "{file}");
        }
        let journal: String = store
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::NewerSchema { found: 99, .. })
        ));
    }
}
