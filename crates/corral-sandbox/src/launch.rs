//! The launcher: the host side of `corral run`. It prepares what only the host can (cgroups,
//! the id-mapped workspace, the id maps), clones the supervisor into its namespaces, then
//! waits, forwarding signals, until the sandbox ends.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::cgroup::{CgroupLayout, SandboxCgroup};
use crate::error::SandboxError;
use crate::plan::SandboxPlan;
use crate::seccomp;
use crate::supervisor::{self, SETUP_FAILED, SupervisorStart};
use crate::sys::{self, Forked};
use crate::userns;

/// Namespaces every sandbox gets (the cgroup namespace is added from inside, once the
/// supervisor has joined its cgroup).
const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC;

/// Signals the launcher passes on to the sandbox when another process sends them to corral.
const RELAYED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// How a sandbox ended.
#[derive(Debug)]
pub struct Outcome {
    /// The command's exit status (128 + signal when a signal killed it).
    pub exit_code: i32,
    /// Things the user should know (limits not enforced, protected files created, ...).
    pub warnings: Vec<String>,
}

/// Runs `plan` to completion. Must be called while the process is single-threaded.
///
/// `on_warning` is called for each warning as soon as it is known (before the command runs),
/// so the user sees it in order with the command's output.
pub fn run(plan: &SandboxPlan, on_warning: &mut dyn FnMut(&str)) -> Result<i32, SandboxError> {
    run_then(plan, on_warning, Box::new(|| {}))
}

/// Like [`run`], calling `forked` in the launcher right after the supervisor is forked: the
/// first moment the launcher may start threads (an in-process egress proxy, say), since the
/// fork itself needs a single-threaded process.
pub fn run_then(
    plan: &SandboxPlan,
    on_warning: &mut dyn FnMut(&str),
    forked: Box<dyn FnOnce() + '_>,
) -> Result<i32, SandboxError> {
    let programs = seccomp::compile()?;
    let mapped_trees = userns::idmapped_trees(plan)?;
    let name = format!("corral-{}-{}", std::process::id(), unique_suffix());
    let (cgroup, warnings) = SandboxCgroup::create(&CgroupLayout::detect(), &name, &plan.limits);
    for warning in &warnings {
        on_warning(warning);
    }
    let result = run_in_cgroup(plan, &cgroup, programs, mapped_trees, forked);
    cgroup.remove();
    for socket in plan.ingress_socket.iter().chain(&plan.control_socket) {
        let _ = std::fs::remove_file(socket);
    }
    for path in &plan.protected_missing {
        if path.symlink_metadata().is_ok() {
            on_warning(&format!(
                "the sandbox created {}, a protected path that can run code on the host later; review it before you trust it",
                path.display()
            ));
        }
    }
    result
}

fn unique_suffix() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::from(now.subsec_nanos()) ^ now.as_secs()
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SandboxError::Setup {
        step: "create a pipe",
        source: e.into(),
    })
}

fn run_in_cgroup(
    plan: &SandboxPlan,
    cgroup: &SandboxCgroup,
    seccomp: Vec<seccompiler::BpfProgram>,
    mapped_trees: HashMap<PathBuf, OwnedFd>,
    forked: Box<dyn FnOnce() + '_>,
) -> Result<i32, SandboxError> {
    let ingress = match &plan.ingress_socket {
        Some(path) => Some(
            crate::ingress::bind(path).map_err(|source| SandboxError::Setup {
                step: "bind the ingress socket",
                source,
            })?,
        ),
        None => None,
    };
    let control = match &plan.control_socket {
        Some(path) => Some(
            crate::control::bind(path).map_err(|source| SandboxError::Setup {
                step: "bind the control socket",
                source,
            })?,
        ),
        None => None,
    };
    let (go_read, go_write) = pipe()?;
    let (errors_read, errors_write) = pipe()?;
    // A terminal of its own only when both ends are a terminal: `corral run ls > file` in a
    // terminal must not put terminal line endings into the file.
    let terminal =
        nix::unistd::isatty(0).unwrap_or(false) && nix::unistd::isatty(1).unwrap_or(false);
    let mut relayed = SigSet::empty();
    for signal in RELAYED {
        relayed.add(*signal);
    }
    relayed.add(Signal::SIGCHLD);
    // Blocked before the fork so no signal is lost; the supervisor sets its own mask.
    let previous_mask = relayed
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .map_err(|e| SandboxError::Setup {
            step: "block signals",
            source: e.into(),
        })?;

    let child = match sys::clone_into_namespaces(NAMESPACES) {
        Err(e) => {
            let _ = previous_mask.thread_set_mask();
            return Err(SandboxError::Namespaces(e));
        }
        Ok(Forked::Child) => {
            drop(go_write);
            drop(errors_read);
            supervisor::run(SupervisorStart {
                plan: plan.clone(),
                go: go_read,
                errors: Some(errors_write),
                mapped_trees,
                seccomp,
                terminal,
                ingress,
                control,
            })
        }
        Ok(Forked::Parent(pid)) => Pid::from_raw(pid),
    };
    forked();
    drop(go_read);
    drop(errors_write);
    drop(mapped_trees);
    drop(ingress);
    drop(control);
    // Two bytes on the go pipe: "ids mapped" lets the supervisor build the sandbox, "cgroups
    // joined" lets it start the command. Joining a cgroup can wait for an RCU grace period
    // (cgroup v1), so it overlaps with building the root. The write end stays open for the
    // launcher's whole life: the supervisor sees it close (and tears the sandbox down) if the
    // launcher dies, however it dies.
    let started = userns::write_id_maps(child.as_raw(), &plan.identity)
        .and_then(|()| write_go(&go_write))
        .and_then(|()| {
            cgroup
                .add_process(child.as_raw())
                .map_err(|source| SandboxError::Setup {
                    step: "join the sandbox's cgroup",
                    source,
                })
        })
        .and_then(|()| write_go(&go_write));
    if let Err(e) = started {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        let _ = previous_mask.thread_set_mask();
        // A supervisor that failed while building the sandbox closes the go pipe before the
        // second byte ("broken pipe" here); the message it reported says why.
        let mut message = String::new();
        let _ = File::from(errors_read).read_to_string(&mut message);
        if !message.is_empty() {
            return Err(SandboxError::Child(message));
        }
        return Err(e);
    }

    let mut message = String::new();
    let _ = File::from(errors_read).read_to_string(&mut message);
    if !message.is_empty() {
        let _ = waitpid(child, None);
        let _ = previous_mask.thread_set_mask();
        return Err(SandboxError::Child(message));
    }
    let saved_terminal = if terminal { enter_raw_mode() } else { None };
    let code = wait_relaying_signals(child, &relayed);
    drop(go_write);
    if let Some(saved) = saved_terminal {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &saved);
    }
    let _ = previous_mask.thread_set_mask();
    Ok(code)
}

fn write_go(go: &OwnedFd) -> Result<(), SandboxError> {
    nix::unistd::write(go, &[1])
        .map(drop)
        .map_err(|e| SandboxError::Setup {
            step: "start the supervisor",
            source: e.into(),
        })
}

/// Puts the host terminal in raw mode (the sandbox's own terminal does the line editing);
/// returns the settings to restore.
fn enter_raw_mode() -> Option<Termios> {
    let saved = termios::tcgetattr(std::io::stdin()).ok()?;
    let mut raw = saved.clone();
    termios::cfmakeraw(&mut raw);
    termios::tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &raw).ok()?;
    Some(saved)
}

/// Waits for the supervisor; signals other processes send to corral go to the sandbox (signals
/// a terminal raises reach the supervisor directly, so they are not sent twice).
fn wait_relaying_signals(child: Pid, relayed: &SigSet) -> i32 {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(_) => {}
            Err(_) => return SETUP_FAILED,
        }
        let Ok((signal, code)) = sys::wait_signal(relayed) else {
            continue;
        };
        let sent_by_process =
            code == libc::SI_USER || code == libc::SI_QUEUE || code == libc::SI_TKILL;
        if signal != libc::SIGCHLD
            && sent_by_process
            && let Ok(signal) = Signal::try_from(signal)
        {
            let _ = kill(child, signal);
        }
    }
}
