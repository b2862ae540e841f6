//! The in-process egress proxy of `corral run`: a private socket the sandbox reaches as
//! 127.0.0.1:3128, the run's profile deciding every connection, decisions appended to the
//! audit log.
//!
//! The socket is bound before the sandbox is forked (binding starts no thread); the policy is
//! compiled and served on a thread started only after the fork, which needs a single-threaded
//! process. A profile with raw Cedar files is compiled up front so a broken file stops the run
//! before it starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use corral_policy::{AuditLog, PolicyEngine, PolicyHandle, Profile, SandboxIdentity};
use corral_proxy::{EgressProxy, ProxyLimits};

/// How often a `--policy` file is checked for edits while the sandbox runs.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Where the policy comes from once the proxy starts.
enum PolicySource {
    /// Compiled already (raw Cedar files, or a file to watch).
    Compiled(Arc<PolicyHandle>),
    /// TOML rules only, which always compile to valid Cedar: compiled on the proxy's thread.
    Deferred(Box<Profile>),
}

/// A bound egress socket and what will serve it once the sandbox is forked.
pub struct InProcessEgress {
    dir: tempfile::TempDir,
    socket: PathBuf,
    listener: std::os::unix::net::UnixListener,
    policy: PolicySource,
    watch: bool,
    sandbox: SandboxIdentity,
    audit: Option<Arc<AuditLog>>,
}

impl InProcessEgress {
    /// Binds the socket. `reloadable` is the profile file to watch for edits (when the
    /// profile is exactly that file, unchanged by flags).
    pub fn prepare(
        profile: Profile,
        reloadable: Option<&Path>,
        sandbox_id: &str,
        audit_log: Option<&Path>,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<Self> {
        let policy = match reloadable {
            Some(file) => {
                PolicySource::Compiled(Arc::new(PolicyHandle::load(&file.to_string_lossy())?))
            }
            None if !profile.cedar.is_empty() => {
                let label = profile.name.clone();
                PolicySource::Compiled(Arc::new(PolicyHandle::from_engine(
                    &label,
                    PolicyEngine::new(profile)?,
                )))
            }
            None => PolicySource::Deferred(Box::new(profile)),
        };
        let audit = audit_log.and_then(|path| match AuditLog::open(path) {
            Ok(log) => Some(Arc::new(log)),
            Err(e) => {
                warnings.push(format!(
                    "{e}; egress decisions are not recorded (pass --audit-log FILE)"
                ));
                None
            }
        });
        let dir = tempfile::Builder::new()
            .prefix("corral-egress-")
            .tempdir()
            .context("cannot create a private directory for the egress socket")?;
        let socket = dir.path().join("egress.sock");
        let listener = EgressProxy::bind(&socket)
            .with_context(|| format!("cannot bind the egress socket {}", socket.display()))?;
        Ok(Self {
            dir,
            socket,
            listener,
            policy,
            watch: reloadable.is_some(),
            sandbox: SandboxIdentity {
                id: sandbox_id.to_string(),
                ..SandboxIdentity::default()
            },
            audit,
        })
    }

    /// The socket to hand the sandbox plan.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Starts the proxy (and the profile watcher) on threads of their own. Call only after
    /// the sandbox is forked. The returned value keeps the socket's directory and the watcher
    /// until the run ends.
    pub fn start(self) -> RunningEgress {
        let (sender, receiver) = std::sync::mpsc::channel();
        let Self {
            dir,
            listener,
            policy,
            watch,
            sandbox,
            audit,
            ..
        } = self;
        let spawned = std::thread::Builder::new()
            .name("egress-proxy".into())
            .spawn(move || {
                let handle = match policy {
                    PolicySource::Compiled(handle) => handle,
                    PolicySource::Deferred(profile) => match PolicyEngine::new(*profile) {
                        Ok(engine) => Arc::new(PolicyHandle::from_engine("run", engine)),
                        Err(e) => {
                            eprintln!("corral: the egress proxy cannot start: {e}");
                            return;
                        }
                    },
                };
                let _ = sender.send(Arc::clone(&handle));
                let proxy = EgressProxy::new(sandbox, handle, audit, ProxyLimits::default());
                if let Err(e) = proxy.serve_blocking(listener) {
                    eprintln!("corral: the egress proxy stopped: {e}");
                }
            });
        if let Err(e) = spawned {
            eprintln!("corral: cannot start the egress proxy: {e}");
        }
        let watcher = watch.then(|| receiver.recv().ok()).flatten().map(|handle| {
            handle.watch(RELOAD_INTERVAL, |result| match result {
                Ok(_) => eprintln!("corral: profile changed; new connections use it"),
                Err(e) => eprintln!("corral: profile edit refused, keeping the previous one: {e}"),
            })
        });
        RunningEgress {
            _dir: dir,
            _watcher: watcher,
        }
    }
}

/// What a started proxy needs kept alive until the run ends.
pub struct RunningEgress {
    _dir: tempfile::TempDir,
    _watcher: Option<corral_policy::ProfileWatcher>,
}

/// Where `corral run` appends audit events by default: `$XDG_STATE_HOME/corral/audit.jsonl`,
/// else `~/.local/state/corral/audit.jsonl`.
pub fn default_audit_log(xdg_state_home: Option<&str>, home: Option<&Path>) -> Option<PathBuf> {
    match (xdg_state_home.filter(|d| d.starts_with('/')), home) {
        (Some(state), _) => Some(Path::new(state).join("corral/audit.jsonl")),
        (None, Some(home)) => Some(home.join(".local/state/corral/audit.jsonl")),
        (None, None) => None,
    }
}
