//! Audit events: every decision, allow or deny, as one JSON object.
//!
//! `corral run` appends them to a JSON-lines file; the gateway stores them. Events carry what
//! was decided and why, never a secret: requests hold host names, paths and branch names,
//! not headers, bodies or credentials.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::decide::{Action, Decision, Request};

/// One decision, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// Sandbox id.
    pub sandbox: String,
    /// The sandbox owner's email (empty for `corral run`).
    pub user: String,
    /// Profile that decided.
    pub profile: String,
    /// Action name (`connect`, `git_push`, …).
    pub action: String,
    /// The resource in one line (`github.com:443`, `github.com/acme/app.git#main`).
    pub resource: String,
    /// The request's fields (port, ip, method, …) as JSON.
    pub context: serde_json::Value,
    /// `allow`, `deny` or `audit-deny`.
    pub decision: String,
    /// The deciding policy ids.
    pub policies: Vec<String>,
    /// Errors met while deciding, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl AuditEvent {
    /// The event for `decision` on `request`, stamped now.
    pub fn new(request: &Request, profile: &str, decision: &Decision) -> Self {
        Self {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            sandbox: request.sandbox.id.clone(),
            user: request.sandbox.owner.clone(),
            profile: profile.to_string(),
            action: request.action.name().to_string(),
            resource: request.action.resource_label(),
            context: context_of(&request.action),
            decision: decision.verdict().to_string(),
            policies: decision.reasons.clone(),
            errors: decision.errors.clone(),
        }
    }
}

fn context_of(action: &Action) -> serde_json::Value {
    let mut value = serde_json::to_value(action).unwrap_or(serde_json::Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("action");
        map.retain(|_, v| !v.is_null());
    }
    value
}

/// An append-only JSON-lines file of audit events, created 0600.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
}

/// Why an audit event could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the audit log {}: {source}", path.display())]
pub struct AuditLogError {
    path: PathBuf,
    source: std::io::Error,
}

impl AuditLog {
    /// Opens (creating if needed) the log at `path` for appending.
    pub fn open(path: &Path) -> Result<Self, AuditLogError> {
        let fail = |source| AuditLogError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(fail)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(BufWriter::new(file)),
        })
    }

    /// Appends one event as a line, flushed so a reader following the file sees it now.
    pub fn record(&self, event: &AuditEvent) -> Result<(), AuditLogError> {
        let fail = |source| AuditLogError {
            path: self.path.clone(),
            source,
        };
        let line = serde_json::to_string(event).map_err(|e| fail(e.into()))?;
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        writeln!(file, "{line}").map_err(fail)?;
        file.flush().map_err(fail)
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
