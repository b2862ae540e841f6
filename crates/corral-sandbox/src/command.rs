//! The last steps before the command runs: its session and terminal, limits, working
//! directory, privileges, Landlock, descriptors and seccomp, in that order (seccomp last,
//! because it forbids some of the steps before it), then `execve`.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};

use crate::error::SandboxError;
use crate::landlock::{self, LandlockOutcome};
use crate::plan::SandboxPlan;
use crate::seccomp;
use crate::sys;

/// What the supervisor hands the command process.
pub struct CommandSetup<'a> {
    /// The plan.
    pub plan: &'a SandboxPlan,
    /// The terminal the command gets as stdin/stdout/stderr and controlling terminal.
    pub terminal: Option<RawFd>,
    /// Where to report a failure before exec (close-on-exec).
    pub error_fd: RawFd,
    /// Compiled seccomp filters.
    pub seccomp: &'a [seccompiler::BpfProgram],
}

/// Signals the supervisor handles; the command starts with their default disposition.
pub const FORWARDED_SIGNALS: &[Signal] = &[
    Signal::SIGCHLD,
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Prepares the calling (forked) process and executes the command; returns only on failure.
pub fn exec_command(setup: &CommandSetup) -> SandboxError {
    match prepare(setup) {
        Ok((path, argv, envp)) => {
            let err = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
            let hint = if err == nix::errno::Errno::EACCES {
                " (the profile's exec allowlist does not include it: use a profile that allows it)"
            } else {
                ""
            };
            SandboxError::Exec {
                command: setup.plan.command[0].clone(),
                source: err.into(),
                hint,
            }
        }
        Err(e) => e,
    }
}

type Exec = (CString, Vec<CString>, Vec<CString>);

fn prepare(setup: &CommandSetup) -> Result<Exec, SandboxError> {
    let plan = setup.plan;
    let step = |step: &'static str| {
        move |e: nix::Error| SandboxError::Setup {
            step,
            source: e.into(),
        }
    };
    for signal in FORWARDED_SIGNALS {
        sys::reset_signal(*signal).map_err(|source| SandboxError::Setup {
            step: "reset signal handlers",
            source,
        })?;
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(step("unblock signals"))?;
    // A new session: the command has no controlling terminal but the one corral gives it, so
    // it can never reach the host's terminal.
    nix::unistd::setsid().map_err(step("start a new session"))?;
    if let Some(terminal) = setup.terminal {
        sys::set_controlling_terminal(terminal).map_err(|source| SandboxError::Setup {
            step: "attach the terminal",
            source,
        })?;
        for target in 0..3 {
            nix::unistd::dup2(terminal, target).map_err(step("attach the terminal"))?;
        }
    }
    if let Some(pids) = plan.limits.pids {
        // Counted per user namespace, so this bounds the sandbox even without cgroups.
        setrlimit(Resource::RLIMIT_NPROC, pids, pids).map_err(step("limit processes"))?;
    }
    nix::unistd::chdir(&plan.cwd).map_err(step("enter the working directory"))?;
    nix::sys::prctl::set_no_new_privs().map_err(step("set no_new_privs"))?;
    sys::drop_all_capabilities().map_err(|source| SandboxError::Setup {
        step: "drop capabilities",
        source,
    })?;
    match landlock::restrict(&plan.landlock)? {
        LandlockOutcome::Full => {}
        LandlockOutcome::Partial(warning) | LandlockOutcome::None(warning) => {
            let _ = writeln!(std::io::stderr(), "corral: warning: {warning}");
        }
    }
    let env_path = plan
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let path = resolve_command(&plan.command[0], env_path, &plan.cwd).ok_or_else(|| {
        SandboxError::CommandNotFound {
            command: plan.command[0].clone(),
            path: env_path.to_string(),
        }
    })?;
    let argv = plan
        .command
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = plan
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let path = cstring(path.as_os_str().as_bytes())?;
    sys::close_fds_except(setup.error_fd).map_err(|source| SandboxError::Setup {
        step: "close inherited descriptors",
        source,
    })?;
    seccomp::load(setup.seccomp)?;
    Ok((path, argv, envp))
}

fn cstring(bytes: &[u8]) -> Result<CString, SandboxError> {
    CString::new(bytes).map_err(|_| SandboxError::Setup {
        step: "pass an argument or variable",
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "it contains a NUL byte"),
    })
}

/// Finds `command` the way a shell would: a name with a slash is a path (relative to `cwd`),
/// anything else is looked up in `PATH`.
fn resolve_command(command: &str, path: &str, cwd: &Path) -> Option<PathBuf> {
    if command.contains('/') {
        let candidate = cwd.join(command);
        return candidate.exists().then_some(candidate);
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(command))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_through_path_or_as_paths() {
        assert_eq!(
            resolve_command("sh", "/nonexistent:/bin", Path::new("/")),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            resolve_command("no-such-command-here", "/bin:/usr/bin", Path::new("/")),
            None
        );
        assert_eq!(
            resolve_command("/bin/sh", "", Path::new("/tmp")),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(resolve_command("./missing", "/bin", Path::new("/")), None);
    }
}
