//! Egress traffic records: how many bytes one connection carried to and from the host it was
//! allowed to reach, written by the egress proxy when the connection ends.
//!
//! They are kept apart from the audit log (a file of their own, `egress.jsonl` under a
//! gateway sandbox's directory) so readers of decisions (`corral audit`, the web page's
//! activity view, `GET /audit`) see decisions only. A record names the host and port, never
//! a path, a header or a body.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The bytes one upstream connection carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficRecord {
    /// The host the connection was allowed to.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Bytes sent to the host.
    pub sent: u64,
    /// Bytes received from the host.
    pub received: u64,
}

/// An append-only JSON-lines file of [`TrafficRecord`]s, created 0600.
#[derive(Debug)]
pub struct TrafficLog {
    path: PathBuf,
    file: Mutex<File>,
}

/// Why a traffic record could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the egress traffic log {}: {source}", path.display())]
pub struct TrafficLogError {
    path: PathBuf,
    source: std::io::Error,
}

impl TrafficLog {
    /// Opens (creating if needed) the log at `path` for appending.
    pub fn open(path: &Path) -> Result<Self, TrafficLogError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| TrafficLogError {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Appends one record as a line with a single write, so a reader never sees half of it
    /// unless the disk is full.
    pub fn record(&self, record: &TrafficRecord) -> Result<(), TrafficLogError> {
        let fail = |source| TrafficLogError {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(record).map_err(|e| fail(e.into()))?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_appended_one_json_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.jsonl");
        let log = TrafficLog::open(&path).unwrap();
        let record = TrafficRecord {
            host: "example.com".into(),
            port: 443,
            sent: 12,
            received: 3400,
        };
        log.record(&record).unwrap();
        log.record(&record).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<TrafficRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, vec![record.clone(), record]);
    }
}
