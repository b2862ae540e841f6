//! Policy decisions and egress bytes, read from each sandbox's own records.
//!
//! Decisions are made in two places: each sandbox's `corral run` (its egress proxy decides
//! `connect`, `http_request` and `git_push`) and the gateway (its inference router decides
//! `inference`). Both append every decision to the sandbox's audit log, and the proxy writes
//! each connection's byte counts to the sandbox's traffic log when the connection ends (see
//! `runtime::usage`). These files are already the record `GET /audit` and the web page
//! serve, so the counters are read from them rather than sent over a second channel that
//! could disagree with them, and `corral run` needs no connection to the gateway.
//!
//! # How the files are followed
//! On each scrape, for every sandbox the store holds, the bytes appended since the last
//! scrape are read (whole lines only; a line still being written waits for the next scrape)
//! and counted; an offset per file says where the last read stopped. A scrape therefore
//! costs two `stat`s per sandbox plus the new lines — about 400 `stat`s with 200 sandboxes,
//! nothing in the background, and no work at all while nobody scrapes. One scrape reads at
//! most [`MAX_READ`] of each file; the rest waits for the next.
//!
//! # What is counted once, and what not
//! - The counters belong to this gateway process, like every Prometheus counter: they start
//!   at zero. Files that exist when the gateway starts are followed from their end then, so
//!   nothing recorded before is counted again after a restart; what sandboxes recorded while
//!   no gateway ran is not counted at all.
//! - A file is known by its device and inode. A new file (the sandbox's first, or one that
//!   replaced a rotated or purged log) is read from its start; a file shorter than the
//!   offset (truncated) too. Lines appended to a file after the last scrape and before it
//!   was replaced are not counted; nothing is counted twice.
//! - A deleted sandbox's series go at the next scrape, when the store no longer holds it.
//!   Its offsets stay (a few dozen bytes, until the gateway restarts), so a sandbox created
//!   again under the same name, in the directory a delete without purge left, goes on from
//!   where the deleted one stopped instead of counting its history again.
//!
//! Labels: decisions by action (one of the actions corral decides, else `other`) and
//! outcome (`allow`, `deny`, `audit-deny`, else `other`), so the files cannot grow the label
//! set; egress bytes by sandbox id and direction, the only per-sandbox series.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use corral_policy::TrafficRecord;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::runtime::Runtime;

/// Most bytes of one file read by one scrape.
const MAX_READ: u64 = 4 * 1024 * 1024;

/// The verdicts `corral_policy::Decision::verdict` gives.
const OUTCOMES: &[&str] = &["allow", "deny", "audit-deny"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    action: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EgressLabels {
    sandbox: String,
    /// `up`: sent by the sandbox; `down`: received by it.
    direction: &'static str,
}

/// The fields of an audit event that are counted.
#[derive(Deserialize)]
struct DecisionLine {
    action: String,
    decision: String,
}

/// Where reading one file stopped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    /// Device and inode of the file read (none: not seen yet, read it from its start).
    file: Option<(u64, u64)>,
    offset: u64,
}

impl Cursor {
    /// A cursor at the present end of `path` (none there yet: its start).
    fn at_end(path: &Path) -> Self {
        match std::fs::metadata(path) {
            Ok(meta) => Self {
                file: Some((meta.dev(), meta.ino())),
                offset: meta.len(),
            },
            Err(_) => Self::default(),
        }
    }

    /// The whole lines appended to `path` since the last read (at most [`MAX_READ`]
    /// bytes), moving past them.
    fn read_new(&mut self, path: &Path) -> std::io::Result<Vec<u8>> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *self = Self::default();
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let identity = (meta.dev(), meta.ino());
        if self.file != Some(identity) || meta.len() < self.offset {
            *self = Self {
                file: Some(identity),
                offset: 0,
            };
        }
        if meta.len() == self.offset {
            return Ok(Vec::new());
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut chunk = Vec::new();
        file.take(MAX_READ).read_to_end(&mut chunk)?;
        let whole = match chunk.iter().rposition(|b| *b == b'\n') {
            Some(last) => last + 1,
            // A "line" longer than a whole read is no record: skipped, a piece at a time.
            None if chunk.len() as u64 == MAX_READ => chunk.len(),
            None => 0,
        };
        chunk.truncate(whole);
        self.offset += whole as u64;
        Ok(chunk)
    }
}

/// One sandbox's two files.
#[derive(Debug, Default)]
struct Followed {
    audit: Cursor,
    traffic: Cursor,
    /// The sandbox was deleted (its series removed).
    gone: bool,
}

/// A sandbox to read: its id, audit log and traffic log.
pub struct SandboxLogs {
    /// The sandbox id.
    pub id: String,
    /// Its audit log.
    pub audit: PathBuf,
    /// Its traffic log.
    pub traffic: PathBuf,
}

/// Policy decisions and egress bytes, counted from the sandboxes' files.
pub struct Usage {
    followed: Mutex<HashMap<String, Followed>>,
    decisions: Family<DecisionLabels, Counter>,
    egress: Family<EgressLabels, Counter<u64, AtomicU64>>,
}

impl Usage {
    /// Counters that start now: every file already there is followed from its end.
    pub fn starting_now(runtime: &Runtime) -> Self {
        let ids = std::fs::read_dir(runtime.sandboxes_dir())
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok());
        let followed = ids
            .map(|id| {
                let (audit, traffic) = runtime.usage_logs(&id);
                let at_end = Followed {
                    audit: Cursor::at_end(&audit),
                    traffic: Cursor::at_end(&traffic),
                    gone: false,
                };
                (id, at_end)
            })
            .collect();
        Self::following(followed)
    }

    fn following(followed: HashMap<String, Followed>) -> Self {
        Self {
            followed: Mutex::new(followed),
            decisions: Family::default(),
            egress: Family::default(),
        }
    }

    /// Registers the counters in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "policy_decisions",
            "Policy decisions made for sandboxes, by action and outcome",
            self.decisions.clone(),
        );
        registry.register(
            "egress_bytes",
            "Bytes each sandbox's egress connections carried (up: sent to hosts, down: received)",
            self.egress.clone(),
        );
    }

    /// Counts what `sandboxes` (every sandbox there is) recorded since the last call, and
    /// drops the series of sandboxes that are gone. Blocking file reads.
    pub fn collect(&self, sandboxes: &[SandboxLogs]) {
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        let live: HashSet<&str> = sandboxes.iter().map(|s| s.id.as_str()).collect();
        for (id, files) in followed.iter_mut() {
            if !files.gone && !live.contains(id.as_str()) {
                files.gone = true;
                self.forget(id);
            }
        }
        for sandbox in sandboxes {
            let files = followed.entry(sandbox.id.clone()).or_default();
            files.gone = false;
            match files.audit.read_new(&sandbox.audit) {
                Ok(lines) => self.count_decisions(&lines),
                Err(e) => {
                    tracing::debug!(sandbox = %sandbox.id, error = %e, "cannot read the audit log")
                }
            }
            match files.traffic.read_new(&sandbox.traffic) {
                Ok(lines) => self.count_traffic(&sandbox.id, &lines),
                Err(e) => {
                    tracing::debug!(sandbox = %sandbox.id, error = %e, "cannot read the traffic log")
                }
            }
        }
    }

    fn count_decisions(&self, lines: &[u8]) {
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(event) = serde_json::from_slice::<DecisionLine>(line) else {
                continue;
            };
            let labels = DecisionLabels {
                action: known(corral_policy::ACTION_NAMES, &event.action),
                outcome: known(OUTCOMES, &event.decision),
            };
            self.decisions.get_or_create(&labels).inc();
        }
    }

    fn count_traffic(&self, id: &str, lines: &[u8]) {
        let (mut up, mut down) = (0u64, 0u64);
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(record) = serde_json::from_slice::<TrafficRecord>(line) {
                up = up.saturating_add(record.sent);
                down = down.saturating_add(record.received);
            }
        }
        for (direction, bytes) in [("up", up), ("down", down)] {
            if bytes > 0 {
                let labels = EgressLabels {
                    sandbox: id.to_owned(),
                    direction,
                };
                self.egress.get_or_create(&labels).inc_by(bytes);
            }
        }
    }

    fn forget(&self, id: &str) {
        for direction in ["up", "down"] {
            self.egress.remove(&EgressLabels {
                sandbox: id.to_owned(),
                direction,
            });
        }
    }
}

/// `name` if it is one of `names`, else `other`.
fn known(names: &[&'static str], name: &str) -> &'static str {
    names
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    }

    fn text(usage: &Usage) -> String {
        let mut registry = Registry::default();
        usage.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    fn decision(action: &str, verdict: &str) -> String {
        format!(
            "{{\"time\":\"t\",\"sandbox\":\"s\",\"user\":\"\",\"profile\":\"p\",\"action\":\"{action}\",\
             \"resource\":\"r\",\"context\":{{}},\"decision\":\"{verdict}\",\"policies\":[]}}\n"
        )
    }

    #[test]
    fn a_cursor_reads_whole_lines_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut cursor = Cursor::default();
        assert!(cursor.read_new(&path).unwrap().is_empty(), "no file yet");
        append(&path, "one\ntw");
        assert_eq!(cursor.read_new(&path).unwrap(), b"one\n");
        assert!(
            cursor.read_new(&path).unwrap().is_empty(),
            "half a line waits"
        );
        append(&path, "o\n");
        assert_eq!(cursor.read_new(&path).unwrap(), b"two\n");
        assert!(cursor.read_new(&path).unwrap().is_empty());
    }

    #[test]
    fn a_replaced_or_truncated_file_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        append(&path, "old\nolder\n");
        let mut cursor = Cursor::at_end(&path);
        assert!(
            cursor.read_new(&path).unwrap().is_empty(),
            "history skipped"
        );
        // Rotated: moved away, a new file in its place.
        std::fs::rename(&path, dir.path().join("log.1")).unwrap();
        append(&path, "new\n");
        assert_eq!(cursor.read_new(&path).unwrap(), b"new\n");
        // Truncated in place.
        std::fs::write(&path, "").unwrap();
        append(&path, "x\n");
        assert_eq!(cursor.read_new(&path).unwrap(), b"x\n");
    }

    #[test]
    fn decisions_are_counted_by_known_action_and_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let (audit, traffic) = (dir.path().join("audit"), dir.path().join("traffic"));
        append(&audit, &decision("connect", "allow"));
        append(&audit, &decision("connect", "deny"));
        append(&audit, &decision("connect", "deny"));
        append(&audit, &decision("made_up", "maybe"));
        append(&audit, "not json\n");
        let usage = Usage::following(HashMap::new());
        let logs = [SandboxLogs {
            id: "a".into(),
            audit,
            traffic,
        }];
        usage.collect(&logs);
        usage.collect(&logs);
        let text = text(&usage);
        for line in [
            "policy_decisions_total{action=\"connect\",outcome=\"allow\"} 1",
            "policy_decisions_total{action=\"connect\",outcome=\"deny\"} 2",
            "policy_decisions_total{action=\"other\",outcome=\"other\"} 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn egress_bytes_are_per_sandbox_and_go_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (audit, traffic) = (dir.path().join("audit"), dir.path().join("traffic"));
        append(
            &traffic,
            "{\"host\":\"h\",\"port\":443,\"sent\":10,\"received\":1000}\n\
             {\"host\":\"h\",\"port\":80,\"sent\":5,\"received\":0}\n",
        );
        let usage = Usage::following(HashMap::new());
        let logs = [SandboxLogs {
            id: "web".into(),
            audit,
            traffic,
        }];
        usage.collect(&logs);
        let exposed = text(&usage);
        assert!(
            exposed.contains("egress_bytes_total{sandbox=\"web\",direction=\"up\"} 15"),
            "{exposed}"
        );
        assert!(
            exposed.contains("egress_bytes_total{sandbox=\"web\",direction=\"down\"} 1000"),
            "{exposed}"
        );
        usage.collect(&[]);
        assert!(!text(&usage).contains("sandbox=\"web\""), "deleted");
        // Created again under the same name, in the same directory: only what is new counts.
        usage.collect(&logs);
        assert!(!text(&usage).contains("sandbox=\"web\""));
        append(
            &logs[0].traffic,
            "{\"host\":\"h\",\"port\":443,\"sent\":1,\"received\":2}\n",
        );
        usage.collect(&logs);
        assert!(
            text(&usage).contains("egress_bytes_total{sandbox=\"web\",direction=\"down\"} 2"),
            "{}",
            text(&usage)
        );
    }
}
