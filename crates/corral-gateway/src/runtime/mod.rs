//! The native runtime: each running sandbox is one detached `corral run` process (the same
//! binary as the gateway), with its workspace, home, sockets, audit log and log file in
//! `DATA_DIR/sandboxes/ID/`.
//!
//! A sandbox must outlive the gateway, so its process is never tied to the gateway's life:
//! it gets its own process group (a Ctrl-C or a signal to the gateway's group does not reach
//! it), no parent-death signal, stdin from `/dev/null` and its output in a file (never a pipe
//! the gateway holds). The store records the process (pid and start time) in the same
//! transaction that marks the sandbox running; at start the gateway [`Runtime::reconcile`]s:
//! a recorded process that still runs, started when it was recorded, as `corral run` with
//! this sandbox's control socket, is adopted; anything else is marked ended.
//!
//! One lock per sandbox orders start, stop and delete, so two starts never make two
//! processes.

mod attach;
mod clone;
mod exec;
mod extract;
mod files;
mod idle;
mod lifecycle;
mod logs;
mod process;
mod progress;
mod usage;

use std::collections::{BTreeMap, HashMap};
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;

pub use attach::{Terminal, TerminalCommand, TerminalEnd, TerminalSize};
pub use exec::{ExecOutput, MAX_OUTPUT};
pub use files::{Download, FilesError, SandboxFiles};
pub use lifecycle::{Cause, Lifecycle, because};
pub use logs::LogCursor;

use crate::agents::AgentTemplate;
use crate::config::Config;
use crate::git_tokens::GitTokenSource;
use crate::store::{ProcessId, Sandbox, Store, StoreError};

/// The `state` of a sandbox whose process runs.
pub const RUNNING: &str = "running";
/// The `state` of a sandbox stopped on request (or never started).
pub const STOPPED: &str = "stopped";
/// The `state` of a sandbox being stopped: its process has been asked to end.
pub const STOPPING: &str = "stopping";
/// The `state` of a sandbox whose process ended by itself.
pub const EXITED: &str = "exited";

/// How long a stop waits after SIGTERM before it kills the sandbox's process group.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a stop waits after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long a start waits for the sandbox's control socket to appear.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How often an adopted process (not the gateway's child) is checked for having ended.
const ADOPTED_POLL: Duration = Duration::from_millis(250);

/// Why the runtime could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sandbox has no record (deleted meanwhile).
    #[error("no sandbox with id {0:?}")]
    NotFound(String),
    /// The operation needs a running sandbox.
    #[error("sandbox {0:?} is not running: start it first")]
    NotRunning(String),
    /// A directory or file of the sandbox could not be made or removed.
    #[error("{step} {}: {source}", path.display())]
    Files {
        /// What was being done.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// `corral run` could not be started.
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The started process vanished before it could be identified.
    #[error("the sandbox process {0} ended before it could be recorded")]
    Vanished(u32),
    /// The command could not be run in the sandbox (the supervisor's reason).
    #[error("cannot run the command: {0}")]
    Exec(String),
    /// The gateway could not set up an exec (pipes for its output).
    #[error("cannot set up the exec: {0}")]
    ExecSetup(std::io::Error),
    /// The gateway is shutting down; the command was killed with the request.
    #[error(
        "the gateway is shutting down; the command was stopped: run it again once the gateway is back"
    )]
    ShuttingDown,
    /// The sandbox's profile is neither built in nor configured (any more).
    #[error("profile {0:?} is not configured on this gateway (any more)")]
    UnknownProfile(String),
    /// The sandbox's agent template is neither built in nor configured (any more).
    #[error("agent {0:?} is not configured on this gateway (any more)")]
    UnknownAgent(String),
    /// The repo session's repo could not be cloned; the sandbox was stopped again.
    #[error("cannot clone {repo}: {output}")]
    Clone {
        /// The repo.
        repo: String,
        /// The end of git's error output.
        output: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("runtime task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Paths of one sandbox under `DATA_DIR/sandboxes/ID/`.
struct SandboxPaths {
    dir: PathBuf,
}

impl SandboxPaths {
    fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }
    fn home(&self) -> PathBuf {
        self.dir.join("home")
    }
    fn control(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    fn ingress(&self) -> PathBuf {
        self.dir.join("ingress.sock")
    }
    fn audit(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }
    fn log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }
    /// Present from just before a repo session's clone until it has succeeded.
    fn clone_pending(&self) -> PathBuf {
        self.dir.join("clone.pending")
    }

    /// Removes sockets a killed `corral run` left behind.
    fn remove_stale_sockets(&self) {
        for socket in [self.control(), self.ingress()] {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// A running sandbox the gateway watches: its process, since when (its start, or its
/// adoption by this gateway), whether a stop asked it to end, and a channel that turns true
/// once its end is recorded in the store.
#[derive(Clone)]
struct Watched {
    process: ProcessId,
    since: std::time::Instant,
    stopping: Arc<AtomicBool>,
    ended: watch::Receiver<bool>,
}

/// Starts, stops and watches sandbox processes. Shared by the API handlers.
pub struct Runtime {
    store: Arc<Store>,
    profiles: BTreeMap<String, PathBuf>,
    data_dir: PathBuf,
    agents: BTreeMap<String, AgentTemplate>,
    sandboxes_dir: PathBuf,
    ca_dir: PathBuf,
    corral: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    watched: Mutex<HashMap<String, Watched>>,
    shutdown: watch::Sender<bool>,
    exec_timeout: Duration,
    log_max_size: u64,
    log_rotations: logs::Rotations,
    git_tokens: BTreeMap<String, GitTokenSource>,
    inference: std::sync::OnceLock<Arc<crate::inference::Inference>>,
    terminals: attach::AttachedTerminals,
    progress: progress::Progress,
    lifecycle: Lifecycle,
}

impl Runtime {
    /// A runtime keeping sandboxes under `config.data_dir/sandboxes`, with the configured
    /// extra profiles, starting them with the `corral` binary at `corral`.
    pub fn new(store: Arc<Store>, config: &Config, corral: PathBuf) -> Self {
        let data_dir = &config.data_dir;
        Self {
            store,
            profiles: config.profiles.clone(),
            data_dir: data_dir.clone(),
            agents: crate::agents::catalog(&config.agents),
            sandboxes_dir: data_dir.join("sandboxes"),
            ca_dir: data_dir.join("ca"),
            corral,
            locks: Mutex::default(),
            watched: Mutex::default(),
            shutdown: watch::Sender::new(false),
            exec_timeout: config.exec_timeout,
            log_max_size: config.log_max_size,
            log_rotations: logs::Rotations::default(),
            git_tokens: config.git_tokens.clone(),
            inference: std::sync::OnceLock::new(),
            terminals: attach::AttachedTerminals::default(),
            progress: progress::Progress::default(),
            lifecycle: Lifecycle::default(),
        }
    }

    /// Gives every sandbox started or adopted from now on an inference socket served by
    /// `inference`, and the provider settings in its environment. Call before reconciling.
    pub fn set_inference(&self, inference: Arc<crate::inference::Inference>) {
        let _ = self.inference.set(inference);
    }

    /// The inference router, when one is set.
    pub fn inference(&self) -> Option<&Arc<crate::inference::Inference>> {
        self.inference.get()
    }

    /// Tells long requests (followed logs, execs) that the gateway is shutting down, so they
    /// end instead of holding the shutdown up. The sandboxes keep running.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`Runtime::begin_shutdown`] has been called.
    pub async fn shutting_down(&self) {
        let mut shutdown = self.shutdown.subscribe();
        let _ = shutdown.wait_for(|s| *s).await;
    }

    /// Whether [`Runtime::begin_shutdown`] has been called.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn paths(&self, id: &str) -> SandboxPaths {
        SandboxPaths {
            dir: self.sandboxes_dir.join(id),
        }
    }

    /// The next bytes of the sandbox's audit log (its policy decisions, JSON lines) after
    /// `offset`, which advances; empty when there are none yet.
    pub async fn read_audit(&self, id: &str, offset: &mut u64) -> std::io::Result<Vec<u8>> {
        let chunk = logs::read_chunk(&self.paths(id).audit(), *offset).await?;
        *offset += chunk.len() as u64;
        Ok(chunk)
    }

    /// The sandbox's ingress socket, through which the gateway reaches its ports.
    pub fn ingress_socket(&self, id: &str) -> PathBuf {
        self.paths(id).ingress()
    }

    /// Whether the gateway watches a running process for this sandbox.
    pub fn is_running(&self, id: &str) -> bool {
        self.watched_lock().contains_key(id)
    }

    /// How long the sandbox has been running (since this gateway started or adopted it);
    /// `None` when it is not running. Its agent may still be starting its server early on.
    pub fn running_for(&self, id: &str) -> Option<Duration> {
        self.watched_lock().get(id).map(|w| w.since.elapsed())
    }

    fn watched_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watched>> {
        // The map is only inserted into and removed from; a panic cannot leave it torn.
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    async fn db<T, F>(&self, f: F) -> Result<T, RuntimeError>
    where
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(&store)).await??)
    }

    async fn record(&self, id: &str) -> Result<Sandbox, RuntimeError> {
        let lookup = id.to_owned();
        self.db(move |s| s.sandbox(&lookup))
            .await?
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    /// Adopts every sandbox the store says is running whose process still runs, and marks
    /// the others `exited` (exit code unknown); then adopts sandbox processes the store does
    /// not know (a gateway killed between starting one and recording it) and kills those
    /// whose sandbox no longer exists. Call once, before serving.
    pub async fn reconcile(self: &Arc<Self>) -> Result<(), RuntimeError> {
        self.reconcile_recorded().await?;
        self.reconcile_unrecorded().await
    }

    async fn reconcile_unrecorded(self: &Arc<Self>) -> Result<(), RuntimeError> {
        for (id, process) in process::launchers_under(&self.sandboxes_dir) {
            let watched = self.watched_lock().get(&id).map(|w| w.process);
            let adopted = match watched {
                Some(known) if known == process => continue,
                // A second process for one sandbox.
                Some(_) => false,
                None => {
                    let target = id.clone();
                    self.db(move |s| s.mark_running(&target, process)).await?
                }
            };
            if adopted {
                tracing::info!(sandbox = %id, pid = process.pid, "unrecorded sandbox adopted");
                self.watch_adopted(id, process);
            } else {
                // A duplicate, or a sandbox whose record is gone: it must not run on unseen.
                tracing::warn!(sandbox = %id, pid = process.pid, "killing a sandbox process with no record");
                process::signal_group(process, Signal::SIGKILL);
            }
        }
        Ok(())
    }

    async fn reconcile_recorded(self: &Arc<Self>) -> Result<(), RuntimeError> {
        for sandbox in self.db(Store::running_sandboxes).await? {
            let paths = self.paths(&sandbox.id);
            let adopted = sandbox
                .process
                .filter(|p| process::is_sandbox_process(*p, &paths.control()));
            let stopping = sandbox.state == STOPPING;
            match adopted {
                Some(process) => {
                    tracing::info!(sandbox = %sandbox.id, pid = process.pid, "sandbox adopted");
                    self.watch_adopted(sandbox.id.clone(), process);
                    if stopping {
                        // A stop the previous gateway began: finish it, without holding up
                        // the start.
                        let (runtime, id) = (self.clone(), sandbox.id.clone());
                        tokio::spawn(async move {
                            if let Err(e) = because(Cause::Reconcile, runtime.stop(&id)).await {
                                tracing::error!(sandbox = %id, error = %e, "cannot finish the stop");
                            }
                        });
                    }
                }
                None => {
                    paths.remove_stale_sockets();
                    if let Some(process) = sandbox.process {
                        let id = sandbox.id.clone();
                        let state = if stopping { STOPPED } else { EXITED };
                        self.db(move |s| s.mark_ended(&id, process, state, None))
                            .await?;
                        self.lifecycle.stopped_because(Cause::Reconcile);
                    }
                    tracing::info!(sandbox = %sandbox.id, "sandbox ended while the gateway was down");
                }
            }
        }
        Ok(())
    }

    /// Starts the sandbox unless it runs already; returns its record afterwards. Returns once
    /// the sandbox accepts commands, or once its process has ended (state `exited`, the
    /// reason in its log).
    pub async fn start(self: &Arc<Self>, id: &str) -> Result<Sandbox, RuntimeError> {
        let _guard = self.lock(id).await;
        let sandbox = self.record(id).await?;
        let paths = self.paths(id);
        let watched = self.watched_lock().get(id).cloned();
        if let Some(watched) = watched {
            // Adopted after a restart, it may still be starting, or its first clone may have
            // been cut off with the gateway that began it.
            wait_until_ready(&paths.control(), watched.ended).await;
            if sandbox.repo.is_some() && paths.clone_pending().exists() {
                self.first_clone(id, &sandbox, true).await?;
            }
            return self.record(id).await;
        }
        let starting = self.progress.show(id, "starting the sandbox");
        let log = prepare_files(&paths)?;
        let profile = match self.profiles.get(&sandbox.profile) {
            Some(file) => ["--policy".as_ref(), file.as_os_str()],
            None if corral_policy::builtin_names().any(|b| b == sandbox.profile) => {
                ["--profile".as_ref(), sandbox.profile.as_ref()]
            }
            None => return Err(RuntimeError::UnknownProfile(sandbox.profile.clone())),
        };
        let (agent, agent_env) = self.agent_command(&sandbox)?;
        // A clone a killed gateway left unfinished is redone from scratch; the clone is
        // marked pending before the sandbox starts, so no crash leaves it half done unseen.
        let interrupted = paths.clone_pending().exists();
        let first_start =
            sandbox.repo.is_some() && (interrupted || !paths.workspace().join(".git").exists());
        if first_start {
            let pending = paths.clone_pending();
            std::fs::write(&pending, b"").map_err(|source| files("create", &pending, source))?;
        }
        let git_tokens = self.git_tokens_for(&sandbox.profile);
        let inference_args = self.inference_args(id).await?;
        let mut command = tokio::process::Command::new(&self.corral);
        command
            .arg("run")
            .args(profile)
            .arg("--workspace")
            .arg(paths.workspace())
            .arg("--home")
            .arg(paths.home())
            .arg("--control-socket")
            .arg(paths.control())
            .arg("--ingress-socket")
            .arg(paths.ingress())
            .arg("--audit-log")
            .arg(paths.audit())
            .arg("--traffic-log")
            .arg(paths.traffic())
            .arg("--ca-dir")
            .arg(&self.ca_dir)
            // The data dir holds the store and every other sandbox's workspace.
            .arg("--hide")
            .arg(&self.data_dir)
            .args(git_tokens.iter().flat_map(|(host, source)| {
                [
                    "--git-token".to_owned(),
                    format!("{host}={}", source.reference()),
                ]
            }))
            .args(inference_args)
            .args(agent_env)
            .arg("--")
            .args(agent)
            .current_dir(&paths.dir)
            // The gateway's environment may hold its admin token; corral run needs none of it.
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            // Where the gateway's user keeps secrets: corral run hides them from the sandbox.
            .envs(home_variables())
            // An env: git token reaches corral run's own environment only (never its command
            // line); the sandbox's environment is built without it.
            .envs(git_tokens.iter().filter_map(|(_, source)| match source {
                GitTokenSource::Env { variable, value } => Some((variable, value.expose())),
                GitTokenSource::File(_) => None,
            }))
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|source| files("open", &paths.log(), source))?,
            )
            .stderr(log)
            // Its own group: signals meant for the gateway's group never reach it.
            .process_group(0)
            .kill_on_drop(false);
        let mut child = command.spawn().map_err(|source| RuntimeError::Spawn {
            binary: self.corral.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        // The child is not reaped until it is waited for, so its /proc entry is there even
        // if it has already failed.
        let Some(process) = process::own_child(pid) else {
            let _ = child.kill().await;
            return Err(RuntimeError::Vanished(pid));
        };
        let recorded = {
            let id = id.to_owned();
            self.db(move |s| s.mark_running(&id, process)).await
        };
        if !matches!(recorded, Ok(true)) {
            // Not recorded means not tracked: it must not run on as an orphan.
            let _ = child.kill().await;
            recorded?;
            return Err(RuntimeError::NotFound(id.to_owned()));
        }
        tracing::info!(sandbox = %id, pid, "sandbox started");
        self.lifecycle.started();
        let ended = self.watch_child(id.to_owned(), process, child);
        wait_until_ready(&paths.control(), ended).await;
        drop(starting);
        if first_start {
            self.first_clone(id, &sandbox, interrupted).await?;
        }
        self.record(id).await
    }

    /// The git tokens to hand a sandbox with this profile: all of them, unless the profile
    /// allows no network at all (then `corral run` has no proxy to add them, and would
    /// refuse them).
    fn git_tokens_for(&self, profile: &str) -> Vec<(&String, &GitTokenSource)> {
        if self.git_tokens.is_empty() {
            return Vec::new();
        }
        let loaded = match self.profiles.get(profile) {
            Some(file) => corral_policy::Profile::load(file),
            None => corral_policy::Profile::builtin(profile),
        };
        match loaded {
            Ok(p) if !p.network.allow.is_empty() => self.git_tokens.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Stops the sandbox if it runs (SIGTERM, then SIGKILL to its process group after
    /// [`STOP_GRACE`]); returns its record afterwards.
    pub async fn stop(self: &Arc<Self>, id: &str) -> Result<Sandbox, RuntimeError> {
        let _guard = self.lock(id).await;
        self.stop_locked(id).await?;
        self.record(id).await
    }

    async fn stop_locked(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(watched) = self.watched_lock().get(id).cloned() else {
            return Ok(());
        };
        watched.stopping.store(true, Ordering::SeqCst);
        // Recorded first, so a gateway that dies during the stop finishes it on restart.
        let (target, process) = (id.to_owned(), watched.process);
        self.db(move |s| s.mark_stopping(&target, process)).await?;
        // corral run relays SIGTERM to the sandbox's command and ends with it.
        process::signal(watched.process, Signal::SIGTERM);
        let mut ended = watched.ended.clone();
        if tokio::time::timeout(STOP_GRACE, ended.wait_for(|e| *e))
            .await
            .is_err()
        {
            tracing::warn!(sandbox = %id, "sandbox ignored SIGTERM: killing it");
            process::signal_group(watched.process, Signal::SIGKILL);
            let _ = tokio::time::timeout(KILL_GRACE, ended.wait_for(|e| *e)).await;
        }
        self.lifecycle.stopped();
        Ok(())
    }

    /// Stops the sandbox and deletes its record; with `purge`, also its directory (workspace,
    /// home, logs). False if there was no record.
    pub async fn delete(self: &Arc<Self>, id: &str, purge: bool) -> Result<bool, RuntimeError> {
        let _guard = self.lock(id).await;
        self.stop_locked(id).await?;
        // The files leave the id's directory before the record goes: ids are names that
        // anyone may take next, and a new sandbox must never start in an old one's files.
        if purge {
            self.purge_files(id)?;
        } else {
            self.retire_files(id)?;
        }
        let target = id.to_owned();
        let deleted = self.db(move |s| s.delete_sandbox(&target)).await?;
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.log_rotations.forget(id);
        Ok(deleted)
    }

    /// Removes the sandbox's directory (workspace, home, logs) for good.
    fn purge_files(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(dir) = self.own_dir(id) else {
            return Ok(());
        };
        // remove_dir_all does not follow symlinks: a link the sandbox planted in its
        // workspace is removed, not what it points to.
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(files("remove", &dir, e)),
            _ => Ok(()),
        }
    }

    /// Moves the sandbox's directory, if there is one, to `DATA_DIR/deleted/ID.SECONDS`: the
    /// files stay on the host for their owner, and the id is free for a new sandbox that
    /// starts empty. Also used when a new record takes an id whose directory a gateway
    /// before this one left behind.
    pub fn retire_files(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(dir) = self.own_dir(id) else {
            return Ok(());
        };
        if !dir.exists() {
            return Ok(());
        }
        let deleted = self.data_dir.join("deleted");
        std::fs::create_dir_all(&deleted).map_err(|e| files("create", &deleted, e))?;
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let kept = deleted.join(format!("{id}.{}", since_epoch.as_nanos()));
        std::fs::rename(&dir, &kept).map_err(|e| files("move", &dir, e))?;
        tracing::info!(sandbox = %id, kept = %kept.display(), "sandbox files kept");
        Ok(())
    }

    /// The sandbox's directory, if `id` is one path component: whatever the store holds,
    /// removing or moving files never reaches outside the sandboxes directory.
    fn own_dir(&self, id: &str) -> Option<PathBuf> {
        let one_component = matches!(
            Path::new(id).components().collect::<Vec<_>>()[..],
            [std::path::Component::Normal(_)]
        );
        one_component.then(|| self.paths(id).dir)
    }

    /// What the sandbox's start under way is doing ("starting the sandbox", "cloning URL:
    /// Receiving objects: 45% ..."); `None` when no start runs.
    pub fn progress(&self, id: &str) -> Option<String> {
        self.progress.get(id)
    }

    /// Runs `request` in the running sandbox and returns its exit code and output; kills it
    /// after the configured `exec_timeout`.
    pub async fn exec(
        &self,
        id: &str,
        request: corral_sandbox::control::ExecRequest,
    ) -> Result<ExecOutput, RuntimeError> {
        self.exec_with_timeout(id, request, self.exec_timeout).await
    }

    /// [`Runtime::exec`], killing the command after `timeout` (the output then says it
    /// timed out). Dropping the returned future (a client that went away) kills it too.
    pub async fn exec_with_timeout(
        &self,
        id: &str,
        request: corral_sandbox::control::ExecRequest,
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        self.exec_observed(id, request, timeout, None).await
    }

    /// [`Self::exec_with_timeout`], showing each status line of the command's stderr to
    /// `on_stderr_line` as it comes.
    async fn exec_observed(
        &self,
        id: &str,
        request: corral_sandbox::control::ExecRequest,
        timeout: Duration,
        on_stderr_line: Option<exec::StderrLines>,
    ) -> Result<ExecOutput, RuntimeError> {
        if !self.is_running(id) {
            return Err(RuntimeError::NotRunning(id.to_owned()));
        }
        let run = exec::run(self.paths(id).control(), request, timeout, on_stderr_line);
        let result = tokio::select! {
            result = run => result,
            () = self.shutting_down() => return Err(RuntimeError::ShuttingDown),
        };
        result.map_err(|e| match e {
            exec::ExecError::Unreachable(e) => {
                tracing::info!(sandbox = %id, error = %e, "control socket did not answer");
                RuntimeError::NotRunning(id.to_owned())
            }
            exec::ExecError::Pipes(e) => RuntimeError::ExecSetup(e),
            exec::ExecError::Refused(message) => RuntimeError::Exec(message),
            exec::ExecError::Task(e) => RuntimeError::Task(e),
        })
    }

    /// Waits for our own child and records how it ended.
    fn watch_child(
        self: &Arc<Self>,
        id: String,
        process: ProcessId,
        mut child: tokio::process::Child,
    ) -> watch::Receiver<bool> {
        self.watch(id, process, async move {
            child.wait().await.ok().and_then(|status| {
                use std::os::unix::process::ExitStatusExt;
                status.code().or(status.signal().map(|s| 128 + s))
            })
        })
    }

    /// Polls a process the gateway did not start (adopted after a restart) until it ends.
    fn watch_adopted(self: &Arc<Self>, id: String, process: ProcessId) -> watch::Receiver<bool> {
        self.watch(id, process, async move {
            while process::is_alive(process) {
                tokio::time::sleep(ADOPTED_POLL).await;
            }
            None
        })
    }

    /// Tracks `process` until `ended` resolves (to the exit code, when known), then records
    /// `stopped` (a stop asked for it) or `exited`.
    fn watch(
        self: &Arc<Self>,
        id: String,
        process: ProcessId,
        ended: impl Future<Output = Option<i32>> + Send + 'static,
    ) -> watch::Receiver<bool> {
        let (ended_tx, ended_rx) = watch::channel(false);
        let stopping = Arc::new(AtomicBool::new(false));
        self.watched_lock().insert(
            id.clone(),
            Watched {
                process,
                since: std::time::Instant::now(),
                stopping: stopping.clone(),
                ended: ended_rx.clone(),
            },
        );
        let runtime = self.clone();
        let inference = self.serve_inference(&id);
        tokio::spawn(async move {
            let code = ended.await;
            drop(inference);
            let (state, code) = if stopping.load(Ordering::SeqCst) {
                (STOPPED, None)
            } else {
                (EXITED, code)
            };
            if state == EXITED {
                runtime.lifecycle.stopped_because(Cause::Exited);
            }
            // Sockets a killed `corral run` left go while this process still counts as
            // running, so no new start can have made new ones yet. Then it is forgotten, so a
            // start from now on starts anew; the record only changes if it is still about
            // this process.
            runtime.paths(&id).remove_stale_sockets();
            {
                let mut watched = runtime.watched_lock();
                if watched.get(&id).is_some_and(|w| w.process == process) {
                    watched.remove(&id);
                }
            }
            let target = id.clone();
            if let Err(e) = runtime
                .db(move |s| s.mark_ended(&target, process, state, code))
                .await
            {
                tracing::error!(sandbox = %id, error = %e, "cannot record the sandbox's end");
            }
            tracing::info!(sandbox = %id, state, code, "sandbox ended");
            let _ = ended_tx.send(true);
        });
        ended_rx
    }
}

/// The gateway's `HOME` and XDG base directories, which `corral run` needs to find (and hide)
/// the credentials in the gateway user's home; nothing else of the gateway's environment
/// (its admin token, say) reaches a sandbox's process.
fn home_variables() -> Vec<(&'static str, std::ffi::OsString)> {
    ["HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"]
        .into_iter()
        .filter_map(|name| std::env::var_os(name).map(|value| (name, value)))
        .collect()
}

impl Runtime {
    /// `corral run` arguments that connect sandbox `id` to the inference router: its socket
    /// and the provider settings for its environment (none without a router).
    async fn inference_args(&self, id: &str) -> Result<Vec<String>, RuntimeError> {
        let Some(inference) = self.inference.get().cloned() else {
            return Ok(Vec::new());
        };
        let socket = inference.socket(id);
        let target = id.to_owned();
        let env =
            tokio::task::spawn_blocking(move || inference.sandbox_environment(&target)).await??;
        let mut args = vec![
            "--inference-socket".to_owned(),
            socket.to_string_lossy().into_owned(),
        ];
        for (name, value) in env {
            args.push("--env".to_owned());
            args.push(format!("{name}={value}"));
        }
        Ok(args)
    }

    /// Serves sandbox `id`'s inference socket while it runs (none without a router).
    fn serve_inference(&self, id: &str) -> Option<crate::inference::Serving> {
        let inference = self.inference.get()?;
        match inference.serve(id) {
            Ok(serving) => Some(serving),
            Err(e) => {
                tracing::error!(sandbox = %id, error = %e, "cannot serve the inference socket");
                None
            }
        }
    }
}

impl Runtime {
    /// The command a sandbox runs (its custom command, or its agent template's) and the
    /// `--env NAME=VALUE` arguments for the template's variables.
    fn agent_command(&self, sandbox: &Sandbox) -> Result<(Vec<String>, Vec<String>), RuntimeError> {
        if let Some(command) = &sandbox.command {
            return Ok((command.clone(), Vec::new()));
        }
        let template = self
            .agents
            .get(&sandbox.agent)
            .ok_or_else(|| RuntimeError::UnknownAgent(sandbox.agent.clone()))?;
        let env = template
            .env
            .iter()
            .flat_map(|(k, v)| ["--env".to_owned(), format!("{k}={v}")])
            .collect();
        Ok((template.command.clone(), env))
    }
}

/// Creates the sandbox's directories (0700) and opens its log for appending.
fn prepare_files(paths: &SandboxPaths) -> Result<std::fs::File, RuntimeError> {
    for dir in [paths.dir.clone(), paths.workspace(), paths.home()] {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| files("create", &dir, source))?;
    }
    paths.remove_stale_sockets();
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(paths.log())
        .map_err(|source| files("open", &paths.log(), source))
}

fn files(step: &'static str, path: &Path, source: std::io::Error) -> RuntimeError {
    RuntimeError::Files {
        step,
        path: path.to_owned(),
        source,
    }
}

/// Waits until the control socket exists (the sandbox accepts commands) or the process has
/// ended, at most [`START_LIMIT`].
async fn wait_until_ready(control: &Path, mut ended: watch::Receiver<bool>) {
    let ready = async {
        while !control.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let _ = tokio::time::timeout(START_LIMIT, async {
        tokio::select! {
            () = ready => {}
            _ = ended.wait_for(|e| *e) => {}
        }
    })
    .await;
}
