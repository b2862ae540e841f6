//! Hot reload: a profile file that changes is re-read, re-validated and swapped in whole, so
//! running sandboxes' next decisions use it; a broken edit keeps the previous policy.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::decide::{Decision, PolicyEngine, Request};
use crate::error::PolicyError;
use crate::profile::Profile;

/// The current policy of one profile, swappable while decisions are being made.
#[derive(Debug)]
pub struct PolicyHandle {
    source: String,
    current: ArcSwap<PolicyEngine>,
    fingerprint: std::sync::Mutex<Vec<(PathBuf, Option<Vec<u8>>)>>,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// No source file changed.
    Unchanged,
    /// The new policy is in use.
    Swapped,
}

impl PolicyHandle {
    /// Loads a built-in name or a profile file, compiled and validated.
    pub fn load(name_or_path: &str) -> Result<Self, PolicyError> {
        let engine = PolicyEngine::new(Profile::resolve(name_or_path)?)?;
        let fingerprint = fingerprint(&engine);
        Ok(Self {
            source: name_or_path.to_string(),
            current: ArcSwap::from_pointee(engine),
            fingerprint: std::sync::Mutex::new(fingerprint),
        })
    }

    /// A handle around an engine built elsewhere (never reloads unless its sources change).
    pub fn from_engine(source: &str, engine: PolicyEngine) -> Self {
        let fingerprint = fingerprint(&engine);
        Self {
            source: source.to_string(),
            current: ArcSwap::from_pointee(engine),
            fingerprint: std::sync::Mutex::new(fingerprint),
        }
    }

    /// The policy in use now.
    pub fn current(&self) -> Arc<PolicyEngine> {
        self.current.load_full()
    }

    /// Decides with the policy in use now.
    pub fn decide(&self, request: &Request) -> Decision {
        self.current.load().decide(request)
    }

    /// Re-reads the profile if any of its files changed. On error the old policy stays in
    /// use and the error says what is wrong with the new one.
    pub fn reload(&self) -> Result<Reloaded, PolicyError> {
        let mut seen = self
            .fingerprint
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now: Vec<_> = seen
            .iter()
            .map(|(path, _)| (path.clone(), std::fs::read(path).ok()))
            .collect();
        if now == *seen {
            return Ok(Reloaded::Unchanged);
        }
        // Remember this version even if it is broken, so a broken edit is reported once.
        *seen = now;
        let engine = PolicyEngine::new(Profile::resolve(&self.source)?)?;
        *seen = fingerprint(&engine);
        self.current.store(Arc::new(engine));
        Ok(Reloaded::Swapped)
    }

    /// Checks for changes every `interval` on a background thread, calling `report` after
    /// each reload that swapped or failed. Stops when the returned watcher is dropped.
    pub fn watch(
        self: &Arc<Self>,
        interval: Duration,
        report: impl Fn(Result<Reloaded, PolicyError>) + Send + 'static,
    ) -> ProfileWatcher {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::clone(self);
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                std::thread::park_timeout(interval);
                match handle.reload() {
                    Ok(Reloaded::Unchanged) => {}
                    other => report(other),
                }
            }
        });
        ProfileWatcher {
            stop,
            thread: Some(thread),
        }
    }
}

/// The contents of every file the engine's profile came from.
fn fingerprint(engine: &PolicyEngine) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    engine
        .profile()
        .sources
        .iter()
        .map(|path| (path.clone(), std::fs::read(path).ok()))
        .collect()
}

/// A running profile watcher; dropping it stops the thread.
#[derive(Debug)]
pub struct ProfileWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ProfileWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
