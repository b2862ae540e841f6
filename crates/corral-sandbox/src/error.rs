//! Errors of the sandbox, one variant per step so a message names exactly what failed.

use std::io;
use std::path::PathBuf;

/// A plan that cannot be built from what the caller asked for.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No command was given.
    #[error("no command given: put the command after the options, e.g. `corral run -- make test`")]
    NoCommand,
    /// The workspace does not exist.
    #[error(
        "workspace {0} does not exist: create it or pass an existing directory with --workspace"
    )]
    WorkspaceMissing(PathBuf),
    /// The workspace is not a directory.
    #[error("workspace {0} is not a directory: pass a directory with --workspace")]
    WorkspaceNotDirectory(PathBuf),
    /// The workspace is the host root.
    #[error(
        "the workspace cannot be / (that would hand the whole host to the sandbox): pass a project directory with --workspace"
    )]
    WorkspaceIsRoot,
    /// A writable path does not exist.
    #[error("--write path {0} does not exist: create it first")]
    MissingPath(PathBuf),
    /// The persistent home is not an existing directory.
    #[error("home {0} is not an existing directory: create it first (mkdir -p)")]
    HomeMissing(PathBuf),
    /// A control or ingress socket cannot go where it was asked to.
    #[error("cannot put a socket at {path}: {reason}")]
    SocketPlace {
        /// The socket's path.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A profile path is relative.
    #[error(
        "path {0:?} is relative: profile and --read/--write paths must be absolute or start with ~/"
    )]
    RelativePath(String),
    /// A glob could not be parsed.
    #[error("path pattern {pattern:?} is invalid: {reason}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A protected path is absolute or leaves the workspace.
    #[error("protected path {0:?} must be relative to the workspace and must not contain `..`")]
    BadProtectedPath(String),
    /// The sandbox would run as root somewhere.
    #[error("the sandbox may not run as uid 0: pick an unprivileged host uid (--host-uid)")]
    RootIdentity,
    /// A host directory could not be read.
    #[error("cannot read {path}: {reason}")]
    HostRead {
        /// The path.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

/// A failure while starting or running a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The kernel refused to create the namespaces.
    #[error(
        "cannot create the sandbox's namespaces ({0}): user namespaces are disabled or exhausted; enable them with `sysctl -w user.max_user_namespaces=15000` (and `kernel.unprivileged_userns_clone=1` on Debian kernels that have it), or see `corral doctor`"
    )]
    Namespaces(#[source] io::Error),
    /// Writing the uid/gid maps failed.
    #[error("cannot write the sandbox's {file}: {source}")]
    IdMap {
        /// Which file (uid_map, gid_map, setgroups).
        file: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Creating the id-mapped workspace mount failed.
    #[error(
        "cannot give the workspace {path} an id-mapped mount ({source}); the filesystem may not support id mapping: run corral as the workspace's owner instead of root"
    )]
    IdmappedWorkspace {
        /// The workspace.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A mount step failed inside the sandbox.
    #[error("cannot {step} {path}: {source}")]
    Mount {
        /// What was being done.
        step: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A path the sandbox mounts over (a protected or hidden path) turned into a symlink
    /// between planning and mounting; nothing was mounted through it.
    #[error(
        "{path} became a symlink while the sandbox was being built, so corral cannot protect or hide it; another sandbox on the same workspace may be changing it: run again once that sandbox has ended"
    )]
    SwappedForSymlink {
        /// The path inside the sandbox.
        path: PathBuf,
    },
    /// A process-setup step failed.
    #[error("cannot {step}: {source}")]
    Setup {
        /// What was being done.
        step: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Landlock could not be applied.
    #[error("cannot apply Landlock rules: {0}")]
    Landlock(String),
    /// The seccomp filter could not be built or loaded.
    #[error("cannot load the seccomp filter: {0}")]
    Seccomp(String),
    /// The command was not found inside the sandbox.
    #[error(
        "command not found inside the sandbox: {command} (PATH={path}); make its directory visible with --read DIR or use a profile that includes it"
    )]
    CommandNotFound {
        /// The command.
        command: String,
        /// The PATH searched.
        path: String,
    },
    /// The command could not be executed.
    #[error("cannot execute {command} inside the sandbox: {source}{hint}")]
    Exec {
        /// The command.
        command: String,
        /// The OS error.
        #[source]
        source: io::Error,
        /// A hint about the likely cause.
        hint: &'static str,
    },
    /// The sandbox reported an error that could not be decoded.
    #[error("{0}")]
    Child(String),
}
