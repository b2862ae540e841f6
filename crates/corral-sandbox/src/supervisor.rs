//! The supervisor: pid 1 of the sandbox. It builds the sandbox from the plan, starts the
//! command, then stays to reap zombies, forward signals, relay the terminal, and end the whole
//! sandbox (killing every process in it) when the command exits, returning its status.
//!
//! Threat model: the supervisor shares a uid with the agent but keeps nothing the agent could
//! use: it drops every capability once the sandbox is built, is not dumpable (so neither
//! `/proc/1/mem` nor ptrace reach it), holds no descriptor the command inherits, and closes
//! the caller's descriptors (which the clone copied) before anything else.
//! Its main loop is a single `poll` over a signalfd and, with a terminal, the two terminal
//! ends; further channels (the egress bridge) join that loop as more descriptors.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::bridge;
use crate::command::{CommandSetup, FORWARDED_SIGNALS, exec_command};
use crate::error::SandboxError;
use crate::execs::Execs;
use crate::ingress;
use crate::mounts;
use crate::plan::SandboxPlan;
use crate::sys::{self, Forked};

/// Exit status the sandbox reports when corral itself failed.
pub const SETUP_FAILED: i32 = 125;

/// Everything the supervisor receives from the launcher across the fork.
pub struct SupervisorStart {
    /// The plan to carry out.
    pub plan: SandboxPlan,
    /// Readable once the launcher has written the id maps and joined the cgroups.
    pub go: OwnedFd,
    /// Where setup errors are reported (close-on-exec, so it closes when the command starts).
    pub errors: Option<OwnedFd>,
    /// Id-mapped copies of writable trees, by host path, when corral runs as root.
    pub mapped_trees: HashMap<PathBuf, OwnedFd>,
    /// Compiled seccomp filters.
    pub seccomp: Vec<seccompiler::BpfProgram>,
    /// Whether stdin is a terminal (the command then gets a terminal of its own).
    pub terminal: bool,
    /// The ingress socket's listening descriptor, bound by the launcher on the host.
    pub ingress: Option<OwnedFd>,
    /// The control socket's listening descriptor, bound by the launcher on the host.
    pub control: Option<OwnedFd>,
}

/// Runs the supervisor in the freshly cloned sandbox process. Never returns.
pub fn run(mut start: SupervisorStart) -> ! {
    let mut errors = start.errors.take();
    // The go pipe stays open until a failure is reported: the launcher takes its closing as
    // the end of setup and kills the supervisor, so closing it first could lose the reason.
    let mut lifeline = None;
    let code = match supervise(start, &mut errors, &mut lifeline) {
        Ok(code) => code,
        Err(e) => {
            if let Some(errors) = &errors {
                report(errors.as_raw_fd(), &e.to_string());
            }
            SETUP_FAILED
        }
    };
    drop(lifeline);
    sys::exit_now(code)
}

/// Writes an error message to the launcher's error pipe.
fn report(fd: RawFd, message: &str) {
    let bytes = message.as_bytes();
    let mut written = 0;
    while written < bytes.len() {
        match nix::unistd::write(borrow(fd), &bytes[written..]) {
            Ok(n) => written += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

fn supervise(
    start: SupervisorStart,
    error_pipe: &mut Option<OwnedFd>,
    lifeline_slot: &mut Option<OwnedFd>,
) -> Result<i32, SandboxError> {
    let errors = error_pipe.as_ref().map_or(-1, |fd| fd.as_raw_fd());
    let setup = |step: &'static str| {
        move |e: nix::Error| SandboxError::Setup {
            step,
            source: e.into(),
        }
    };
    // The clone copied every descriptor of the caller's (`exec 7</somewhere` in a shell that
    // ran corral, say). The command never gets them, but the supervisor lives next to it for
    // the whole run: it keeps only what the launcher handed it on purpose.
    let ingress_fd = start.ingress.as_ref().map_or(-1, |fd| fd.as_raw_fd());
    let control_fd = start.control.as_ref().map_or(-1, |fd| fd.as_raw_fd());
    let keep: Vec<RawFd> = [start.go.as_raw_fd(), errors, ingress_fd, control_fd]
        .into_iter()
        .chain(start.mapped_trees.values().map(|fd| fd.as_raw_fd()))
        .collect();
    sys::close_fds_except_all(&keep).map_err(|source| SandboxError::Setup {
        step: "close the caller's descriptors",
        source,
    })?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(setup("follow the launcher's death"))?;
    let lifeline: &OwnedFd = lifeline_slot.insert(start.go);
    wait_for_launcher(lifeline);
    let plan = &start.plan;
    if plan.identity.host_root {
        nix::unistd::setgroups(&[]).map_err(setup("drop supplementary groups"))?;
    }
    nix::unistd::sethostname(&plan.hostname).map_err(setup("set the hostname"))?;
    sys::bring_up_loopback().map_err(|source| SandboxError::Setup {
        step: "bring up loopback",
        source,
    })?;
    // Host paths are opened while the process still has the caller's host uid (which may be
    // needed to traverse, say, a 0700 home); everything after runs as the sandbox user, whose
    // ids are the only ones mapped, so files it creates have an owner the kernel can record.
    let sources = mounts::open_sources(plan, start.mapped_trees)?;
    let gid = nix::unistd::Gid::from_raw(plan.identity.inside_gid);
    let uid = nix::unistd::Uid::from_raw(plan.identity.inside_uid);
    nix::unistd::setresgid(gid, gid, gid).map_err(setup("switch to the sandbox group"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(setup("switch to the sandbox user"))?;
    // Changing credentials cleared the parent-death signal; arm it again. The lifeline covers
    // a launcher that died in between.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(setup("follow the launcher's death"))?;
    mounts::build_root(plan, sources)?;
    let terminal = if start.terminal {
        Some(open_terminal()?)
    } else {
        None
    };
    let bridge = match plan.egress_socket {
        Some(_) => Some(bridge::listen().map_err(|source| SandboxError::Setup {
            step: "listen on the sandbox's proxy port 127.0.0.1:3128",
            source,
        })?),
        None => None,
    };
    let signals = signal_fd()?;
    // The command starts inside the sandbox's cgroups, under a cgroup namespace rooted there
    // (the namespace is optional: older kernels lack it).
    wait_for_launcher(lifeline);
    let _ = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP);

    let command = match sys::clone_into_namespaces(0).map_err(|source| SandboxError::Setup {
        step: "start the command",
        source,
    })? {
        Forked::Child => {
            let setup = CommandSetup {
                plan,
                terminal: terminal.as_ref().map(|t| t.follower.as_raw_fd()),
                error_fd: errors,
                seccomp: &start.seccomp,
            };
            let err = exec_command(&setup);
            report(errors, &err.to_string());
            sys::exit_now(SETUP_FAILED);
        }
        Forked::Parent(pid) => Pid::from_raw(pid),
    };
    // The launcher's end of the error pipe closes once the command has started.
    *error_pipe = None;
    let leader = terminal.map(|t| {
        drop(t.follower);
        t.leader
    });
    // Threads only now: the command was forked from a single-threaded process.
    if let Some(listener) = bridge {
        let served = if plan.egress_handoff {
            bridge::serve(listener)
        } else {
            bridge::serve_relaying(listener)
        };
        served.map_err(|source| SandboxError::Setup {
            step: "start the egress bridge",
            source,
        })?;
    }
    if let Some(listener) = start.ingress {
        ingress::serve(listener).map_err(|source| SandboxError::Setup {
            step: "serve the ingress socket",
            source,
        })?;
    }
    nix::sys::prctl::set_dumpable(false).map_err(setup("make the supervisor non-dumpable"))?;
    sys::drop_all_capabilities().map_err(|source| SandboxError::Setup {
        step: "drop the supervisor's capabilities",
        source,
    })?;
    if let Some(leader) = &leader {
        copy_window_size(leader.as_fd());
    }
    let execs = match start.control {
        Some(listener) => Some(
            Execs::new(listener, plan, &start.seccomp).map_err(|source| SandboxError::Setup {
                step: "serve the control socket",
                source,
            })?,
        ),
        None => None,
    };
    Ok(wait_for_command(command, &signals, leader, lifeline, execs))
}

/// Waits for the launcher's next go-ahead byte; ends the sandbox if the launcher is gone.
fn wait_for_launcher(lifeline: &OwnedFd) {
    let mut byte = [0u8; 1];
    if nix::unistd::read(lifeline.as_raw_fd(), &mut byte).unwrap_or(0) != 1 {
        sys::exit_now(SETUP_FAILED);
    }
}

/// A terminal pair from the sandbox's own devpts instance.
struct Terminal {
    leader: OwnedFd,
    follower: OwnedFd,
}

fn open_terminal() -> Result<Terminal, SandboxError> {
    use nix::fcntl::OFlag;
    let fail = |step: &'static str| {
        move |e: nix::Error| SandboxError::Setup {
            step,
            source: e.into(),
        }
    };
    let leader = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(fail("open a terminal"))?;
    nix::pty::grantpt(&leader).map_err(fail("open a terminal"))?;
    nix::pty::unlockpt(&leader).map_err(fail("open a terminal"))?;
    let name = nix::pty::ptsname_r(&leader).map_err(fail("open a terminal"))?;
    let follower = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(fail("open a terminal"))?;
    use std::os::fd::FromRawFd;
    // SAFETY: `follower` was just opened and is owned by nothing else; the leader's raw fd is
    // moved out of the PtyMaster, which is forgotten so it does not close it twice.
    let follower = unsafe { OwnedFd::from_raw_fd(follower) };
    let leader_fd = leader.as_raw_fd();
    std::mem::forget(leader);
    // SAFETY: see above: ownership of leader_fd moves from the forgotten PtyMaster to here.
    let leader = unsafe { OwnedFd::from_raw_fd(leader_fd) };
    Ok(Terminal { leader, follower })
}

fn signal_fd() -> Result<SignalFd, SandboxError> {
    let mut set = SigSet::empty();
    for signal in FORWARDED_SIGNALS {
        sys::install_noop_handler(*signal).map_err(|source| SandboxError::Setup {
            step: "install signal handlers",
            source,
        })?;
        set.add(*signal);
    }
    set.thread_block().map_err(|e| SandboxError::Setup {
        step: "block signals",
        source: e.into(),
    })?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(|e| {
        SandboxError::Setup {
            step: "create a signalfd",
            source: e.into(),
        }
    })
}

fn copy_window_size(leader: BorrowedFd) {
    if let Ok(size) = sys::window_size(0) {
        let _ = sys::set_window_size(leader.as_raw_fd(), &size);
    }
}

/// The exit status a shell would report for `status`.
fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Runs until the command exits: reaps every child, forwards signals to the command's process
/// group, relays the terminal, starts commands asked for on the control socket; then kills
/// what is left and returns the command's status.
fn wait_for_command(
    command: Pid,
    signals: &SignalFd,
    leader: Option<OwnedFd>,
    lifeline: &OwnedFd,
    mut execs: Option<Execs<'_>>,
) -> i32 {
    let stdin = std::io::stdin();
    let mut relay_input = leader.is_some();
    let mut relay_output = leader.is_some();
    let mut status = None;
    let mut buf = [0u8; 16 * 1024];
    while status.is_none() {
        let mut fds = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(lifeline.as_fd(), PollFlags::POLLIN),
        ];
        let mut callers = Vec::new();
        if let Some(execs) = &execs {
            fds.push(PollFd::new(execs.listener(), PollFlags::POLLIN));
            for (pid, fd) in execs.callers() {
                callers.push(pid);
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
        }
        if let Some(leader) = &leader {
            if relay_input {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            if relay_output {
                fds.push(PollFd::new(leader.as_fd(), PollFlags::POLLIN));
            }
        }
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            status = handle_signals(command, signals, leader.as_ref(), execs.as_mut());
        }
        if ready[1] {
            // The launcher is gone: nothing may outlive it.
            status = Some(128 + Signal::SIGKILL as i32);
            break;
        }
        let mut index = 2;
        if let Some(execs) = &mut execs {
            if ready[index] {
                execs.accept();
            }
            index += 1;
            for pid in callers {
                if ready[index] {
                    execs.caller_ready(pid);
                }
                index += 1;
            }
        }
        if let Some(leader) = &leader {
            if relay_input {
                if ready.get(index) == Some(&true) {
                    relay_input = copy_once(0, leader.as_raw_fd(), &mut buf);
                }
                index += 1;
            }
            if relay_output && ready.get(index) == Some(&true) {
                relay_output = copy_once(leader.as_raw_fd(), 1, &mut buf);
            }
        }
    }
    if let Some(leader) = &leader {
        // Whatever the command printed last is still in the terminal's buffer.
        let _ = nix::fcntl::fcntl(
            leader.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        while copy_once(leader.as_raw_fd(), 1, &mut buf) {}
    }
    // Nothing outlives the command: as pid 1, kill(-1) reaches every other process here.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    while waitpid(None::<Pid>, None).is_ok() {}
    status.unwrap_or(SETUP_FAILED)
}

/// Drains the signalfd; returns the command's exit status once it has exited. Commands
/// started through the control socket are reported to their callers as they end.
fn handle_signals(
    command: Pid,
    signals: &SignalFd,
    leader: Option<&OwnedFd>,
    mut execs: Option<&mut Execs<'_>>,
) -> Option<i32> {
    let mut status = None;
    while let Ok(Some(info)) = signals.read_signal() {
        let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        match signal {
            Signal::SIGCHLD => loop {
                match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(reaped) if reaped.pid() == Some(command) => status = exit_code(reaped),
                    Ok(reaped) => {
                        if let (Some(execs), Some(pid), Some(code)) =
                            (execs.as_deref_mut(), reaped.pid(), exit_code(reaped))
                        {
                            execs.reaped(pid, code);
                        }
                    }
                }
            },
            Signal::SIGWINCH => {
                if let Some(leader) = leader {
                    copy_window_size(leader.as_fd());
                }
            }
            other => {
                if kill(Pid::from_raw(-command.as_raw()), other).is_err() {
                    let _ = kill(command, other);
                }
            }
        }
    }
    status
}

/// Copies one read's worth from `from` to `to`; false when `from` is finished.
fn copy_once(from: RawFd, to: RawFd, buf: &mut [u8]) -> bool {
    match nix::unistd::read(from, buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            let mut written = 0;
            while written < n {
                match nix::unistd::write(borrow(to), &buf[written..n]) {
                    Ok(w) => written += w,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return false,
                }
            }
            true
        }
    }
}

fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: only used for the process's standard descriptors and the terminal leader, which
    // stay open for as long as the supervisor runs.
    unsafe { BorrowedFd::borrow_raw(fd) }
}
