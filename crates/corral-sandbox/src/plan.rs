//! The sandbox plan: every decision about what the sandbox sees, validated on the host before
//! the first fork. The child only carries a plan out; `corral run --dry-run` prints it.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::env::clean_environment;
use crate::error::PlanError;

/// Where the workspace appears inside every sandbox.
pub const WORKSPACE_DIR: &str = "/workspace";

/// Paths the sandbox always provides itself; a profile that reads `/` gets fresh ones instead
/// of the host's.
const SANDBOX_OWNED_TOP_DIRS: &[&str] = &["proc", "dev", "sys", "tmp", "run", "home"];

/// Resource limits applied through cgroups (and rlimits where cgroups are not writable).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Limits {
    /// Hard memory limit in bytes (`memory.max`).
    pub memory_max: Option<u64>,
    /// Memory throttling threshold in bytes (`memory.high`).
    pub memory_high: Option<u64>,
    /// CPU quota in cores.
    pub cpus: Option<f64>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u64>,
}

/// Who the command runs as, inside and on the host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    /// The command's uid inside the sandbox (never 0).
    pub inside_uid: u32,
    /// The command's gid inside the sandbox.
    pub inside_gid: u32,
    /// The user name inside the sandbox.
    pub user_name: String,
    /// The home directory inside the sandbox (a fresh tmpfs).
    pub home: PathBuf,
    /// The host uid the sandbox's processes run as (never 0).
    pub host_uid: u32,
    /// The host gid the sandbox's processes run as.
    pub host_gid: u32,
    /// Whether corral itself runs as root in the initial user namespace.
    pub host_root: bool,
}

impl Identity {
    /// The identity for the calling process: as root, the sandbox runs as `root_host_uid` /
    /// `root_host_gid`; otherwise as the caller's own uid and gid (the only ids an
    /// unprivileged user may map).
    pub fn for_caller(root_host_uid: u32, root_host_gid: u32) -> Self {
        if crate::userns::is_host_root() {
            Self::from_root(root_host_uid, root_host_gid)
        } else {
            Self::unprivileged(
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        }
    }

    /// The identity used when corral runs as the unprivileged host user `uid`/`gid`.
    pub fn unprivileged(uid: u32, gid: u32) -> Self {
        Self::new(uid, gid, false)
    }

    /// The identity used when corral runs as real root: the sandbox runs as the unprivileged
    /// host `uid`/`gid` instead.
    pub fn from_root(uid: u32, gid: u32) -> Self {
        Self::new(uid, gid, true)
    }

    fn new(host_uid: u32, host_gid: u32, host_root: bool) -> Self {
        Self {
            inside_uid: 1000,
            inside_gid: 1000,
            user_name: "corral".into(),
            home: PathBuf::from("/home/corral"),
            host_uid,
            host_gid,
            host_root,
        }
    }
}

/// One filesystem step of building the sandbox's root, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MountStep {
    /// Bind `source` (host) at `target` (inside), read-only.
    ReadOnly {
        /// Host path.
        source: PathBuf,
        /// Path inside the sandbox.
        target: PathBuf,
    },
    /// Bind `source` (host) at `target` (inside), read-write.
    ReadWrite {
        /// Host path.
        source: PathBuf,
        /// Path inside the sandbox.
        target: PathBuf,
    },
    /// Recreate a host symlink inside (e.g. `/bin -> usr/bin` on merged-/usr systems).
    Symlink {
        /// Where the link is created inside.
        link: PathBuf,
        /// What it points to, as written on the host.
        points_to: PathBuf,
    },
    /// Cover a directory with an empty, read-only, inaccessible tmpfs.
    HideDir {
        /// Path inside the sandbox.
        target: PathBuf,
    },
    /// Cover a file with an empty, unreadable file.
    HideFile {
        /// Path inside the sandbox.
        target: PathBuf,
    },
}

/// What Landlock lets the command touch, by path inside the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LandlockPlan {
    /// Trees the command may read.
    pub read: Vec<PathBuf>,
    /// Trees the command may read and write.
    pub write: Vec<PathBuf>,
    /// Files or trees the command may execute; `None` means anything readable.
    pub exec: Option<Vec<PathBuf>>,
}

/// A validated description of one sandbox: built on the host, carried out in the child.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandboxPlan {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// The command's complete environment.
    pub env: Vec<(String, String)>,
    /// The workspace directory on the host (canonical).
    pub workspace: PathBuf,
    /// The command's working directory inside the sandbox.
    pub cwd: PathBuf,
    /// Filesystem steps after the fixed skeleton (`/proc`, `/dev`, `/tmp`, home, workspace).
    pub mounts: Vec<MountStep>,
    /// Workspace paths (inside) kept read-only.
    pub protected: Vec<PathBuf>,
    /// Protected workspace paths (host) that do not exist yet; corral reports it when the
    /// sandbox creates one.
    pub protected_missing: Vec<PathBuf>,
    /// Landlock rules.
    pub landlock: LandlockPlan,
    /// Users and ids.
    pub identity: Identity,
    /// Resource limits.
    pub limits: Limits,
    /// The sandbox's hostname.
    pub hostname: String,
    /// The host unix socket of the egress proxy serving this sandbox, if it has a way out.
    pub egress_socket: Option<PathBuf>,
    /// Whether the egress proxy takes the bridge's listening socket (corral's own proxy
    /// does: it then accepts the sandbox's connections itself) rather than a byte stream per
    /// connection (any other server on the egress socket).
    pub egress_handoff: bool,
    /// Where the launcher binds the ingress socket (the host's way in to the sandbox's ports).
    pub ingress_socket: Option<PathBuf>,
    /// Where the launcher binds the control socket (exec into the running sandbox).
    pub control_socket: Option<PathBuf>,
}

/// A host directory made visible inside, as the plan is being built.
struct Bind {
    source: PathBuf,
    target: PathBuf,
    writable: bool,
}

/// Everything a caller decides about a sandbox; [`PlanInput::build`] checks it and turns it
/// into a [`SandboxPlan`].
#[derive(Debug, Clone, Default)]
pub struct PlanInput {
    /// The command and its arguments (must not be empty).
    pub command: Vec<String>,
    /// The workspace directory on the host (must exist).
    pub workspace: PathBuf,
    /// The caller's working directory, kept when it lies inside the workspace.
    pub caller_cwd: Option<PathBuf>,
    /// The invoking user's home, for `~/` in paths.
    pub caller_home: Option<PathBuf>,
    /// Host paths (or globs) visible read-only at the same place; `/` means the whole host.
    pub read_only: Vec<String>,
    /// Host paths visible read-write at the same place.
    pub read_write: Vec<String>,
    /// Host paths (or globs) that are never visible.
    pub hidden: Vec<String>,
    /// Workspace-relative paths kept read-only.
    pub protected: Vec<String>,
    /// Executable files or trees; `None` means anything readable.
    pub exec_allow: Option<Vec<String>>,
    /// Whether the sandbox home is writable.
    pub home_writable: bool,
    /// Extra directories prepended to `PATH` (host paths, bound read-only).
    pub path_prepend: Vec<String>,
    /// Variables the caller passes on purpose (`--env`), plus inherited terminal settings.
    pub extra_env: Vec<(String, String)>,
    /// Resource limits.
    pub limits: Limits,
    /// Users and ids.
    pub identity: Option<Identity>,
    /// Hostname inside the sandbox.
    pub hostname: Option<String>,
    /// The egress proxy's unix socket on the host; the supervisor bridges the sandbox's
    /// `127.0.0.1:3128` to it and the command's environment points proxy settings there.
    pub egress_socket: Option<PathBuf>,
    /// Whether the server on `egress_socket` is corral's own proxy, which takes the bridge's
    /// listening socket ([`crate::bridge::serve`]); otherwise each connection is relayed to
    /// it as a byte stream.
    pub egress_handoff: bool,
    /// A PEM bundle (system roots plus corral's interception CA) the command's TLS clients
    /// should trust; bound read-only at [`CA_BUNDLE`] and named by `SSL_CERT_FILE` and friends.
    pub ca_bundle: Option<PathBuf>,
    /// corral's interception CA alone (PEM), bound read-only at [`CA_CERTIFICATE`] for the
    /// clients that add extra roots to their own (Node's `NODE_EXTRA_CA_CERTS`): Node parses
    /// every certificate named there at start, which for the whole bundle took it tens of
    /// milliseconds. Without it, Node is pointed at the bundle.
    pub ca_certificate: Option<PathBuf>,
    /// A host directory bound read-write as the sandbox's home instead of a fresh tmpfs, so
    /// agent settings and history outlive the run (a gateway session's home).
    pub persistent_home: Option<PathBuf>,
    /// A host path for the ingress socket: connections to it that name a port (`4096\n`)
    /// reach that port on the sandbox's loopback (`4096 fd\n`: get the connected socket;
    /// see `ingress`).
    pub ingress_socket: Option<PathBuf>,
    /// A host path for the control socket, through which host-side callers run more
    /// commands in the running sandbox (see `control`).
    pub control_socket: Option<PathBuf>,
}

/// Where the CA bundle appears inside the sandbox.
pub const CA_BUNDLE: &str = "/run/corral/ca-bundle.pem";

/// Where corral's CA certificate alone appears inside the sandbox.
pub const CA_CERTIFICATE: &str = "/run/corral/ca.pem";

/// The variables that point common TLS clients (OpenSSL, curl, git, Python requests) at a
/// CA bundle.
const CA_BUNDLE_VARIABLES: &[&str] = &[
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "REQUESTS_CA_BUNDLE",
];

/// Node's variable for roots added to its own.
const NODE_EXTRA_CA_CERTS: &str = "NODE_EXTRA_CA_CERTS";

/// A host-side socket must sit in an existing directory outside the workspace: the sandbox
/// must not reach the sockets that drive it.
fn check_socket_place(socket: &Path, workspace: &Path) -> Result<(), PlanError> {
    let fail = |reason| PlanError::SocketPlace {
        path: socket.to_path_buf(),
        reason,
    };
    let parent = socket
        .parent()
        .filter(|p| socket.is_absolute() && p.is_dir())
        .ok_or_else(|| fail("its directory does not exist"))?;
    let parent = parent
        .canonicalize()
        .map_err(|_| fail("its directory cannot be resolved"))?;
    if parent.starts_with(workspace) {
        return Err(fail(
            "it is inside the workspace, where the sandbox could reach it; put it elsewhere",
        ));
    }
    Ok(())
}

impl PlanInput {
    /// Validates the input against the host and produces the plan.
    pub fn build(&self) -> Result<SandboxPlan, PlanError> {
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(PlanError::NoCommand);
        }
        let workspace = canonical_workspace(&self.workspace)?;
        let identity = self.identity.clone().unwrap_or_else(|| {
            Identity::unprivileged(
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        });
        // Mapping the sandbox to the caller's own uid never grants more than the caller has;
        // only real root must pick another uid.
        if (identity.host_root && identity.host_uid == 0) || identity.inside_uid == 0 {
            return Err(PlanError::RootIdentity);
        }
        let mut binds = Vec::new();
        let mut mounts = Vec::new();
        for pattern in &self.read_only {
            for path in self.expand(pattern)? {
                if path == Path::new("/") {
                    push_whole_root(&mut mounts, &mut binds)?;
                } else {
                    push_bind(&mut mounts, &mut binds, &path, false);
                }
            }
        }
        for pattern in &self.read_write {
            for path in self.expand(pattern)? {
                if !path.exists() {
                    return Err(PlanError::MissingPath(path));
                }
                push_bind(&mut mounts, &mut binds, &path, true);
            }
        }
        sort_parents_first(&mut mounts);
        if let Some(home) = &self.persistent_home {
            let source = home
                .canonicalize()
                .ok()
                .filter(|p| p.is_dir())
                .ok_or_else(|| PlanError::HomeMissing(home.clone()))?;
            mounts.push(MountStep::ReadWrite {
                source: source.clone(),
                target: identity.home.clone(),
            });
            binds.push(Bind {
                source,
                target: identity.home.clone(),
                writable: true,
            });
        }
        binds.push(Bind {
            source: workspace.clone(),
            target: PathBuf::from(WORKSPACE_DIR),
            writable: true,
        });
        for pattern in &self.hidden {
            for path in self.expand_hidden(pattern)? {
                push_hidden(&mut mounts, &binds, &path);
            }
        }
        let mut protected_list = self.protected.clone();
        if !self.protected.is_empty() {
            protected_list.extend(configured_hooks_path(&workspace));
        }
        let (protected, protected_missing) = protected_paths(&workspace, &protected_list)?;
        let cwd = inside_cwd(&workspace, self.caller_cwd.as_deref());
        let landlock = self.landlock_plan(&binds, &identity)?;
        let path_dirs: Vec<PathBuf> = self
            .path_prepend
            .iter()
            .flat_map(|p| self.expand(p).unwrap_or_default())
            .filter(|p| p.is_dir())
            .collect();
        let egress_socket = match &self.egress_socket {
            Some(socket) => Some(
                socket
                    .canonicalize()
                    .map_err(|_| PlanError::MissingPath(socket.clone()))?,
            ),
            None => None,
        };
        for socket in self.ingress_socket.iter().chain(&self.control_socket) {
            check_socket_place(socket, &workspace)?;
        }
        let mut extra_env = Vec::new();
        if egress_socket.is_some() {
            extra_env.extend(crate::bridge::proxy_environment());
        }
        if let Some(bundle) = &self.ca_bundle {
            let source = bundle
                .canonicalize()
                .map_err(|_| PlanError::MissingPath(bundle.clone()))?;
            mounts.push(MountStep::ReadOnly {
                source,
                target: PathBuf::from(CA_BUNDLE),
            });
            for name in CA_BUNDLE_VARIABLES {
                extra_env.push((name.to_string(), CA_BUNDLE.to_string()));
            }
            let node_roots = match &self.ca_certificate {
                Some(certificate) => {
                    let source = certificate
                        .canonicalize()
                        .map_err(|_| PlanError::MissingPath(certificate.clone()))?;
                    mounts.push(MountStep::ReadOnly {
                        source,
                        target: PathBuf::from(CA_CERTIFICATE),
                    });
                    CA_CERTIFICATE
                }
                None => CA_BUNDLE,
            };
            extra_env.push((NODE_EXTRA_CA_CERTS.to_string(), node_roots.to_string()));
        }
        extra_env.extend(self.extra_env.iter().cloned());
        let env = clean_environment(&identity, &path_dirs, &extra_env);
        Ok(SandboxPlan {
            command: self.command.clone(),
            env,
            workspace,
            cwd,
            mounts,
            protected,
            protected_missing,
            landlock,
            identity,
            limits: self.limits.clone(),
            hostname: self.hostname.clone().unwrap_or_else(|| "corral".into()),
            egress_socket,
            egress_handoff: self.egress_handoff,
            ingress_socket: self.ingress_socket.clone(),
            control_socket: self.control_socket.clone(),
        })
    }

    /// Expands `~/` and `*` in a host path; paths that match nothing expand to nothing.
    fn expand(&self, pattern: &str) -> Result<Vec<PathBuf>, PlanError> {
        let pattern = match (pattern.strip_prefix("~/"), &self.caller_home) {
            (Some(rest), Some(home)) => home.join(rest).to_string_lossy().into_owned(),
            (Some(_), None) => return Ok(Vec::new()),
            (None, _) => pattern.to_string(),
        };
        if !pattern.starts_with('/') {
            return Err(PlanError::RelativePath(pattern));
        }
        if !pattern.contains(['*', '?', '[']) {
            let path = PathBuf::from(&pattern);
            return Ok(if path.symlink_metadata().is_ok() {
                vec![path]
            } else {
                Vec::new()
            });
        }
        let paths = glob::glob(&pattern).map_err(|e| PlanError::BadPattern {
            pattern: pattern.clone(),
            reason: e.to_string(),
        })?;
        Ok(paths.filter_map(Result::ok).collect())
    }

    /// Expands a hidden-path pattern. Unlike a readable path, a hidden `~/…` pattern is not
    /// dropped when the caller's home is unknown (no `HOME`, as under a service manager): it
    /// is hidden in every home on the host (`/root` and each directory in `/home`), since
    /// leaving it visible is the unsafe choice.
    fn expand_hidden(&self, pattern: &str) -> Result<Vec<PathBuf>, PlanError> {
        let (Some(rest), None) = (pattern.strip_prefix("~/"), &self.caller_home) else {
            return self.expand(pattern);
        };
        let mut paths = Vec::new();
        for home in every_home() {
            let in_home = home.join(rest).to_string_lossy().into_owned();
            paths.extend(self.expand(&in_home)?);
        }
        Ok(paths)
    }

    fn landlock_plan(
        &self,
        binds: &[Bind],
        identity: &Identity,
    ) -> Result<LandlockPlan, PlanError> {
        let mut read: Vec<PathBuf> = ["/proc", "/dev", "/tmp", "/run", "/etc/passwd", "/etc/group"]
            .iter()
            .map(PathBuf::from)
            .collect();
        read.push(identity.home.clone());
        let mut write: Vec<PathBuf> = vec![PathBuf::from(WORKSPACE_DIR), PathBuf::from("/tmp")];
        if self.home_writable {
            write.push(identity.home.clone());
        }
        for bind in binds {
            if bind.target == Path::new(WORKSPACE_DIR) {
                continue;
            }
            if bind.writable {
                write.push(bind.target.clone());
            } else {
                read.push(bind.target.clone());
            }
        }
        let exec = match &self.exec_allow {
            None => None,
            Some(list) => {
                let mut exec = Vec::new();
                for pattern in list {
                    if pattern == WORKSPACE_DIR || pattern == "/tmp" {
                        exec.push(PathBuf::from(pattern));
                        continue;
                    }
                    exec.extend(self.expand(pattern)?);
                }
                Some(exec)
            }
        };
        Ok(LandlockPlan { read, write, exec })
    }
}

fn canonical_workspace(workspace: &Path) -> Result<PathBuf, PlanError> {
    let canonical = workspace
        .canonicalize()
        .map_err(|_| PlanError::WorkspaceMissing(workspace.to_path_buf()))?;
    if !canonical.is_dir() {
        return Err(PlanError::WorkspaceNotDirectory(canonical));
    }
    if canonical == Path::new("/") {
        return Err(PlanError::WorkspaceIsRoot);
    }
    Ok(canonical)
}

/// Binds each top-level entry of the host root except the ones the sandbox provides itself.
fn push_whole_root(mounts: &mut Vec<MountStep>, binds: &mut Vec<Bind>) -> Result<(), PlanError> {
    let entries = std::fs::read_dir("/").map_err(|e| PlanError::HostRead {
        path: PathBuf::from("/"),
        reason: e.to_string(),
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if SANDBOX_OWNED_TOP_DIRS.iter().any(|d| name == *d) {
            continue;
        }
        push_bind(mounts, binds, &entry.path(), false);
    }
    // Host homes stay visible read-only in a whole-root profile, under the fresh /home.
    if let Ok(homes) = std::fs::read_dir("/home") {
        for home in homes.flatten() {
            push_bind(mounts, binds, &home.path(), false);
        }
    }
    Ok(())
}

fn push_bind(mounts: &mut Vec<MountStep>, binds: &mut Vec<Bind>, path: &Path, writable: bool) {
    let target = path.to_path_buf();
    if binds.iter().any(|b| b.target == target) {
        return;
    }
    if let Ok(points_to) = std::fs::read_link(path) {
        mounts.push(MountStep::Symlink {
            link: target,
            points_to,
        });
        return;
    }
    let source = match path.canonicalize() {
        Ok(source) => source,
        Err(_) => return,
    };
    binds.push(Bind {
        source: source.clone(),
        target: target.clone(),
        writable,
    });
    mounts.push(if writable {
        MountStep::ReadWrite { source, target }
    } else {
        MountStep::ReadOnly { source, target }
    });
}

/// Orders binds so a parent directory is mounted before anything beneath it; hides come last.
fn sort_parents_first(mounts: &mut [MountStep]) {
    mounts.sort_by_key(|step| match step {
        MountStep::ReadOnly { target, .. }
        | MountStep::ReadWrite { target, .. }
        | MountStep::Symlink { link: target, .. } => target.components().count(),
        MountStep::HideDir { .. } | MountStep::HideFile { .. } => usize::MAX,
    });
}

/// Every home directory on the host: `/root` and the directories in `/home`.
fn every_home() -> Vec<PathBuf> {
    let mut homes = vec![PathBuf::from("/root")];
    if let Ok(entries) = std::fs::read_dir("/home") {
        homes.extend(
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.is_dir()),
        );
    }
    homes
}

/// Hides `path` everywhere it is visible: under each bind whose source contains it.
fn push_hidden(mounts: &mut Vec<MountStep>, binds: &[Bind], path: &Path) {
    let Ok(canonical) = path.canonicalize() else {
        return;
    };
    let is_dir = canonical.is_dir();
    for bind in binds {
        let Ok(rest) = canonical.strip_prefix(&bind.source) else {
            continue;
        };
        let inside = if rest.as_os_str().is_empty() {
            bind.target.clone()
        } else {
            bind.target.join(rest)
        };
        let step = if is_dir {
            MountStep::HideDir { target: inside }
        } else {
            MountStep::HideFile { target: inside }
        };
        if !mounts.contains(&step) {
            mounts.push(step);
        }
    }
}

/// Splits the protected list into paths that exist (kept read-only) and those that do not.
fn protected_paths(
    workspace: &Path,
    protected: &[String],
) -> Result<(Vec<PathBuf>, Vec<PathBuf>), PlanError> {
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for relative in protected {
        let rel = Path::new(relative);
        if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(PlanError::BadProtectedPath(relative.clone()));
        }
        // The sandbox mounts over protected paths without following symlinks (one swapped in
        // later must not redirect the mount), so only symlink-free paths are listed. A symlink
        // cannot be bind-mounted over; the target is what matters.
        let mut prefix = workspace.to_path_buf();
        let mut kind = PathKind::Present;
        for component in rel.components() {
            prefix.push(component);
            match prefix.symlink_metadata() {
                Ok(meta) if meta.file_type().is_symlink() => {
                    kind = PathKind::ThroughSymlink;
                    break;
                }
                Ok(_) => {}
                Err(_) => {
                    kind = PathKind::Missing;
                    break;
                }
            }
        }
        match kind {
            PathKind::Present => present.push(Path::new(WORKSPACE_DIR).join(rel)),
            PathKind::Missing => missing.push(workspace.join(rel)),
            PathKind::ThroughSymlink => {}
        }
    }
    Ok((present, missing))
}

/// What a protected path is on the host when the plan is made.
enum PathKind {
    Present,
    Missing,
    ThroughSymlink,
}

/// A hooks directory inside the worktree named by `core.hooksPath` in `.git/config` (husky's
/// `.husky`, say): its scripts run on the host at the next commit, so it is protected like
/// `.git/hooks`. Only relative paths without `..` count; anything else is outside the workspace.
fn configured_hooks_path(workspace: &Path) -> Option<String> {
    let config = std::fs::read_to_string(workspace.join(".git/config")).ok()?;
    let mut in_core = false;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            in_core = line.eq_ignore_ascii_case("[core]");
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if in_core && key.trim().eq_ignore_ascii_case("hookspath") {
            let value = value.trim().trim_matches('"').trim_end_matches('/');
            let path = Path::new(value);
            let inside = !path.is_absolute()
                && !path.components().any(|c| matches!(c, Component::ParentDir));
            return (inside && !value.is_empty()).then(|| value.to_string());
        }
    }
    None
}

fn inside_cwd(workspace: &Path, caller_cwd: Option<&Path>) -> PathBuf {
    caller_cwd
        .and_then(|cwd| cwd.canonicalize().ok())
        .and_then(|cwd| cwd.strip_prefix(workspace).ok().map(Path::to_path_buf))
        .map_or_else(
            || PathBuf::from(WORKSPACE_DIR),
            |rel| Path::new(WORKSPACE_DIR).join(rel),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(workspace: &Path) -> PlanInput {
        PlanInput {
            command: vec!["true".into()],
            workspace: workspace.to_path_buf(),
            read_only: vec!["/usr".into(), "/bin".into(), "/etc".into()],
            hidden: vec!["/etc/shadow".into()],
            protected: vec![".git/hooks".into(), ".envrc".into()],
            identity: Some(Identity::unprivileged(4242, 4242)),
            ..PlanInput::default()
        }
    }

    #[test]
    fn empty_command_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut input = input(dir.path());
        input.command.clear();
        assert!(matches!(input.build(), Err(PlanError::NoCommand)));
    }

    #[test]
    fn missing_workspace_is_refused_with_its_path() {
        let mut input = input(Path::new("/nonexistent/ws"));
        input.command = vec!["true".into()];
        let err = input.build().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ws"), "{err}");
    }

    #[test]
    fn host_root_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut input = input(dir.path());
        input.identity = Some(Identity::from_root(0, 0));
        assert!(matches!(input.build(), Err(PlanError::RootIdentity)));
    }

    #[test]
    fn symlinked_system_dirs_are_recreated_and_shadow_is_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let plan = input(dir.path()).build().unwrap();
        if Path::new("/bin").is_symlink() {
            assert!(plan.mounts.iter().any(
                |m| matches!(m, MountStep::Symlink { link, .. } if link == Path::new("/bin"))
            ));
        }
        if Path::new("/etc/shadow").exists() {
            assert!(plan.mounts.contains(&MountStep::HideFile {
                target: PathBuf::from("/etc/shadow")
            }));
        }
        let usr = plan
            .mounts
            .iter()
            .position(
                |m| matches!(m, MountStep::ReadOnly { target, .. } if target == Path::new("/usr")),
            )
            .unwrap();
        let hide = plan
            .mounts
            .iter()
            .position(|m| matches!(m, MountStep::HideFile { .. }));
        assert!(hide.is_none_or(|h| h > usr), "hides come after binds");
    }

    #[test]
    fn secrets_inside_the_workspace_are_hidden_there() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".ssh")).unwrap();
        let mut input = input(dir.path());
        input.hidden = vec![format!("{}/.ssh", dir.path().display())];
        let plan = input.build().unwrap();
        assert!(plan.mounts.contains(&MountStep::HideDir {
            target: PathBuf::from("/workspace/.ssh")
        }));
    }

    #[test]
    fn protected_paths_split_into_present_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".git/hooks")).unwrap();
        let plan = input(dir.path()).build().unwrap();
        assert_eq!(plan.protected, vec![PathBuf::from("/workspace/.git/hooks")]);
        assert_eq!(plan.protected_missing, vec![plan.workspace.join(".envrc")]);
    }

    #[test]
    fn protected_paths_reached_through_a_symlink_are_left_to_their_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("real-git/hooks")).unwrap();
        std::os::unix::fs::symlink("real-git", dir.path().join(".git")).unwrap();
        let plan = input(dir.path()).build().unwrap();
        assert!(plan.protected.is_empty(), "{:?}", plan.protected);
        assert_eq!(plan.protected_missing, vec![plan.workspace.join(".envrc")]);
    }

    #[test]
    fn protected_paths_may_not_escape_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let mut input = input(dir.path());
        input.protected = vec!["../x".into()];
        assert!(matches!(input.build(), Err(PlanError::BadProtectedPath(_))));
    }

    #[test]
    fn a_hooks_path_in_the_worktree_is_protected_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::create_dir_all(dir.path().join(".husky")).unwrap();
        std::fs::write(
            dir.path().join(".git/config"),
            "[core]\n\thooksPath = .husky/\n",
        )
        .unwrap();
        let plan = input(dir.path()).build().unwrap();
        assert!(
            plan.protected.contains(&PathBuf::from("/workspace/.husky")),
            "{:?}",
            plan.protected
        );
        std::fs::write(
            dir.path().join(".git/config"),
            "[core]\n\thooksPath = ../outside\n",
        )
        .unwrap();
        assert!(configured_hooks_path(dir.path()).is_none());
    }

    #[test]
    fn a_ca_bundle_is_bound_and_named_for_every_tls_client() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let mut input = input(dir.path());
        input.ca_bundle = Some(bundle.clone());
        let plan = input.build().unwrap();
        assert!(plan.mounts.contains(&MountStep::ReadOnly {
            source: bundle.canonicalize().unwrap(),
            target: PathBuf::from(CA_BUNDLE)
        }));
        for name in CA_BUNDLE_VARIABLES.iter().chain(&[NODE_EXTRA_CA_CERTS]) {
            assert!(
                plan.env
                    .contains(&(name.to_string(), CA_BUNDLE.to_string())),
                "{name}"
            );
        }

        // With corral's CA on its own, Node gets only that (added to its own roots).
        let certificate = dir.path().join("ca.pem");
        std::fs::write(&certificate, "-----BEGIN CERTIFICATE-----\n").unwrap();
        input.ca_certificate = Some(certificate.clone());
        let plan = input.build().unwrap();
        assert!(plan.mounts.contains(&MountStep::ReadOnly {
            source: certificate.canonicalize().unwrap(),
            target: PathBuf::from(CA_CERTIFICATE)
        }));
        let node: Vec<_> = plan
            .env
            .iter()
            .filter(|(name, _)| name == NODE_EXTRA_CA_CERTS)
            .collect();
        assert_eq!(
            node,
            [&(NODE_EXTRA_CA_CERTS.to_string(), CA_CERTIFICATE.to_string())]
        );
        assert!(
            plan.env
                .contains(&("SSL_CERT_FILE".to_string(), CA_BUNDLE.to_string()))
        );
    }

    #[test]
    fn cwd_inside_the_workspace_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut input = input(dir.path());
        input.caller_cwd = Some(dir.path().join("sub"));
        assert_eq!(input.build().unwrap().cwd, PathBuf::from("/workspace/sub"));
        input.caller_cwd = Some(PathBuf::from("/usr"));
        assert_eq!(input.build().unwrap().cwd, PathBuf::from("/workspace"));
    }

    #[test]
    fn home_globs_expand_for_the_caller() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".cargo")).unwrap();
        let ws = tempfile::tempdir().unwrap();
        let mut input = input(ws.path());
        input.caller_home = Some(home.path().to_path_buf());
        input.read_only.push("~/.cargo".into());
        input.read_only.push("~/.absent".into());
        let plan = input.build().unwrap();
        let cargo = home.path().canonicalize().unwrap().join(".cargo");
        assert!(
            plan.mounts
                .iter()
                .any(|m| matches!(m, MountStep::ReadOnly { source, .. } if *source == cargo))
        );
        assert!(
            !plan
                .mounts
                .iter()
                .any(|m| format!("{m:?}").contains(".absent"))
        );
    }
}
