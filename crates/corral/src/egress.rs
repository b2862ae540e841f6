//! The in-process egress proxy of `corral run`: a private socket the sandbox reaches as
//! 127.0.0.1:3128, the run's profile deciding every connection, decisions appended to the
//! audit log.
//!
//! The socket is bound before the sandbox is forked (binding starts no thread); the policy is
//! compiled and served on a thread started only after the fork, which needs a single-threaded
//! process, and only once the sandbox first connects. A profile with raw Cedar files is compiled up front so a broken file stops the run
//! before it starts.
//!
//! TLS interception uses corral's CA, kept in the data directory (created on first use); the
//! sandbox trusts it through a bundle (system roots plus the CA certificate, never the key)
//! that the plan binds read-only and names in `SSL_CERT_FILE` and friends. Git tokens are
//! read here, on the host side, and live only in the proxy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use corral_policy::{AuditLog, PolicyEngine, PolicyHandle, Profile, SandboxIdentity, TrafficLog};
use corral_proxy::ca::CertificateAuthority;
use corral_proxy::inference::InferenceRoute;
use corral_proxy::{Credentials, EgressProxy, Interception, ProxyLimits};

/// System CA bundles, by distribution, that the sandbox's bundle starts from.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

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
    ca: Result<Arc<CertificateAuthority>, String>,
    credentials: Credentials,
    ca_bundle: Option<(tempfile::TempDir, PathBuf)>,
    inference_socket: Option<PathBuf>,
    traffic: Option<Arc<TrafficLog>>,
}

/// What the proxy needs for TLS interception: where corral's CA lives and the git tokens to
/// inject.
pub struct InterceptionSetup {
    /// The CA directory (`None`: no place to keep it; interception is unavailable).
    pub ca_dir: Option<PathBuf>,
    /// Tokens per host.
    pub credentials: Credentials,
    /// The gateway's inference socket for this sandbox (`--inference-socket`).
    pub inference_socket: Option<PathBuf>,
    /// Where each egress connection's byte counts go (`--traffic-log`).
    pub traffic_log: Option<PathBuf>,
}

impl InProcessEgress {
    /// Binds the socket. `reloadable` is the profile file to watch for edits (when the
    /// profile is exactly that file, unchanged by flags).
    pub fn prepare(
        profile: Profile,
        reloadable: Option<&Path>,
        sandbox_id: &str,
        audit_log: Option<&Path>,
        setup: InterceptionSetup,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<Self> {
        let needs_interception = !setup.credentials.is_empty() || profile.intercepts_any();
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
        let traffic = setup
            .traffic_log
            .as_deref()
            .and_then(|path| match TrafficLog::open(path) {
                Ok(log) => Some(Arc::new(log)),
                Err(e) => {
                    warnings.push(format!("{e}; egress bytes are not recorded"));
                    None
                }
            });
        let (ca, ca_bundle) = match prepare_ca(setup.ca_dir.as_deref()) {
            Ok((ca, bundle)) => (Ok(ca), Some(bundle)),
            Err(e) => {
                if needs_interception {
                    warnings.push(format!(
                        "TLS interception is unavailable ({e:#}); HTTPS to hosts the profile \
                         must read (HTTP rules, [git] intercept, --git-token) will be refused"
                    ));
                }
                (Err(format!("{e:#}")), None)
            }
        };
        crate::scratch::remove_stale(&std::env::temp_dir());
        let dir = crate::scratch::directory("egress")
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
            ca,
            credentials: setup.credentials,
            ca_bundle,
            inference_socket: setup.inference_socket,
            traffic,
        })
    }

    /// The socket to hand the sandbox plan.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The CA bundle the sandbox should trust, when interception is available.
    pub fn ca_bundle(&self) -> Option<&Path> {
        self.ca_bundle.as_ref().map(|(_, path)| path.as_path())
    }

    /// corral's CA certificate alone, beside the bundle (for Node's extra roots).
    pub fn ca_certificate(&self) -> Option<PathBuf> {
        self.ca_bundle
            .as_ref()
            .map(|(dir, _)| dir.path().join(CA_CERTIFICATE_FILE))
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
            ca,
            credentials,
            ca_bundle,
            inference_socket,
            traffic,
            ..
        } = self;
        let spawned = std::thread::Builder::new()
            .name("egress-proxy".into())
            .spawn(move || {
                // Nothing is compiled until the sandbox first reaches out: a run that never
                // connects (a build, a test suite) pays nothing for its proxy, and the
                // compiling never competes with the sandbox's start for the CPU. A watched
                // profile is compiled already (the watcher needs it).
                let first = match policy {
                    PolicySource::Deferred(_) => match listener.accept() {
                        Ok((stream, _)) => Some(stream),
                        Err(e) => {
                            eprintln!("corral: the egress proxy stopped: {e}");
                            return;
                        }
                    },
                    PolicySource::Compiled(_) => None,
                };
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
                // Reading the system roots takes a few milliseconds: done here, while the
                // sandbox starts, rather than before the fork.
                let interception = ca
                    .and_then(|ca| Interception::with_system_roots(ca).map_err(|e| e.to_string()));
                let mut proxy = EgressProxy::new(sandbox, handle, audit, ProxyLimits::default())
                    .with_interception(interception, credentials);
                if let Some(socket) = inference_socket {
                    proxy = proxy.with_inference(InferenceRoute::new(socket));
                }
                if let Some(log) = traffic {
                    proxy = proxy.with_traffic_log(log);
                }
                if let Err(e) = proxy.serve_blocking_after(first, listener) {
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
            _ca_bundle: ca_bundle,
            _watcher: watcher,
        }
    }
}

/// What a started proxy needs kept alive until the run ends.
pub struct RunningEgress {
    _dir: tempfile::TempDir,
    _ca_bundle: Option<(tempfile::TempDir, PathBuf)>,
    _watcher: Option<corral_policy::ProfileWatcher>,
}

/// The file beside the trust bundle that holds corral's CA certificate alone.
const CA_CERTIFICATE_FILE: &str = "ca.pem";

/// Loads (or creates) corral's CA in `ca_dir`, and writes the sandbox's trust bundle, and the
/// CA certificate alone, into a directory of their own that the sandbox's user can read (it
/// holds only certificates; the socket's directory stays private).
fn prepare_ca(
    ca_dir: Option<&Path>,
) -> anyhow::Result<(Arc<CertificateAuthority>, (tempfile::TempDir, PathBuf))> {
    use std::os::unix::fs::PermissionsExt;
    let ca_dir = ca_dir.context("no CA directory (set HOME, XDG_DATA_HOME or --ca-dir)")?;
    let ca = Arc::new(CertificateAuthority::load_or_create(ca_dir)?);
    let dir = crate::scratch::directory("ca")
        .context("cannot create a directory for the sandbox's CA bundle")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .context("cannot open the CA bundle's directory to the sandbox")?;
    let bundle = dir.path().join("ca-bundle.pem");
    let system = SYSTEM_BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .unwrap_or(Path::new("/dev/null"));
    ca.write_bundle(system, &bundle)?;
    ca.write_bundle(
        Path::new("/dev/null"),
        &dir.path().join(CA_CERTIFICATE_FILE),
    )?;
    Ok((ca, (dir, bundle)))
}

/// Where corral keeps its interception CA by default: `$XDG_DATA_HOME/corral/ca`, else
/// `~/.local/share/corral/ca`.
pub fn default_ca_dir(xdg_data_home: Option<&str>, home: Option<&Path>) -> Option<PathBuf> {
    match (xdg_data_home.filter(|d| d.starts_with('/')), home) {
        (Some(data), _) => Some(Path::new(data).join("corral/ca")),
        (None, Some(home)) => Some(home.join(".local/share/corral/ca")),
        (None, None) => None,
    }
}

/// Reads `--git-token HOST=env:VAR` and `HOST=file:PATH` on the host side. Errors name the
/// flag and the source, never the token.
pub fn git_tokens(
    specs: &[String],
    variable: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Credentials> {
    let mut credentials = Credentials::new();
    for spec in specs {
        let usage = "use HOST=env:VARIABLE or HOST=file:PATH";
        let (host, source) = spec
            .split_once('=')
            .with_context(|| format!("--git-token {spec}: {usage}"))?;
        let token = if let Some(name) = source.strip_prefix("env:") {
            variable(name).with_context(|| {
                format!("--git-token {host}=env:{name}: the variable {name} is not set")
            })?
        } else if let Some(path) = source.strip_prefix("file:") {
            std::fs::read_to_string(path)
                .with_context(|| format!("--git-token {host}=file:{path}: cannot read {path}"))?
        } else {
            anyhow::bail!("--git-token {host}=...: {usage}");
        };
        credentials
            .add_token(host, &token)
            .with_context(|| format!("--git-token {host}"))?;
    }
    Ok(credentials)
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
