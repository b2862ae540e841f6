//! The supervisor's side of the control socket: start each requested command exactly as the
//! sandbox's own command was started, and tell the caller how it ended.
//!
//! A caller that goes away (closes its connection, or shuts down its writing half, as a
//! gateway does when a request times out or its client disconnects) cancels its command: the
//! command's process group is killed, so nothing is left running that nobody waits for. A
//! caller that only half-closed still gets the `exit` line.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use nix::sys::signal::{Signal, killpg};
use nix::sys::socket::{MsgFlags, recv};
use nix::unistd::{ForkResult, Pid};

use crate::command::{CommandSetup, exec_command};
use crate::control::{self, ExecRequest};
use crate::plan::SandboxPlan;
use crate::supervisor::SETUP_FAILED;
use crate::sys;

/// Commands started through the control socket and the callers waiting for them.
pub struct Execs<'a> {
    listener: UnixListener,
    plan: &'a SandboxPlan,
    seccomp: &'a [seccompiler::BpfProgram],
    running: HashMap<Pid, Caller>,
}

/// The connection of a command's caller, where its exit status goes.
struct Caller {
    reply: UnixStream,
    /// The caller is gone (or stopped waiting): the command was killed; its connection is no
    /// longer watched.
    cancelled: bool,
}

impl<'a> Execs<'a> {
    /// Serves `listener` (the inherited control socket) for a sandbox running `plan`.
    pub fn new(
        listener: OwnedFd,
        plan: &'a SandboxPlan,
        seccomp: &'a [seccompiler::BpfProgram],
    ) -> io::Result<Self> {
        let listener = UnixListener::from(listener);
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            plan,
            seccomp,
            running: HashMap::new(),
        })
    }

    /// The descriptor to poll for new callers.
    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Accepts every waiting caller and starts its command.
    pub fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            match control::receive(&stream) {
                Ok((request, stdio)) => self.start(stream, request, stdio),
                Err(e) => control::reply_error(&stream, &format!("bad request: {e}")),
            }
        }
    }

    /// Reports `code` to the caller of `pid`, if it was started here.
    pub fn reaped(&mut self, pid: Pid, code: i32) {
        if let Some(caller) = self.running.remove(&pid) {
            control::reply_exit(&caller.reply, code);
        }
    }

    /// The connections of callers still waiting for their commands, to poll for their going
    /// away, each with its command.
    pub fn callers(&self) -> Vec<(Pid, BorrowedFd<'_>)> {
        self.running
            .iter()
            .filter(|(_, caller)| !caller.cancelled)
            .map(|(pid, caller)| (*pid, caller.reply.as_fd()))
            .collect()
    }

    /// Handles a caller's connection that polled readable: the caller sends nothing after
    /// its request, so this is its end (or its shutting down its writing half), and its
    /// command is killed with everything in its process group.
    pub fn caller_ready(&mut self, pid: Pid) {
        let Some(caller) = self.running.get_mut(&pid) else {
            return;
        };
        let mut byte = [0u8; 64];
        match recv(caller.reply.as_raw_fd(), &mut byte, MsgFlags::MSG_DONTWAIT) {
            // Stray bytes are dropped; the caller is still there.
            Ok(n) if n > 0 => {}
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            _ => {
                caller.cancelled = true;
                // The command leads its own session (and so its process group).
                let _ = killpg(pid, Signal::SIGKILL);
            }
        }
    }

    fn start(&mut self, reply: UnixStream, request: ExecRequest, stdio: Vec<OwnedFd>) {
        // Everything the child needs is prepared here, before the fork.
        let mut plan = self.plan.clone();
        plan.command = request.argv;
        for (name, value) in request.env {
            plan.env.retain(|(n, _)| *n != name);
            plan.env.push((name, value));
        }
        if let Some(cwd) = request.cwd {
            plan.cwd = cwd;
        }
        // SAFETY: the supervisor has threads by now (the bridges). glibc's fork() takes and
        // resets malloc's locks around the fork, so the child may allocate; the other threads
        // only copy bytes between sockets and hold no lock the child's path to execve uses.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                let terminal = request.tty.then(|| stdio[0].as_raw_fd());
                if !request.tty {
                    for (target, fd) in stdio.iter().enumerate() {
                        if nix::unistd::dup2(fd.as_raw_fd(), target as i32).is_err() {
                            sys::exit_now(SETUP_FAILED);
                        }
                    }
                }
                let setup = CommandSetup {
                    plan: &plan,
                    terminal,
                    error_fd: reply.as_raw_fd(),
                    seccomp: self.seccomp,
                };
                let err = exec_command(&setup);
                control::reply_error(&reply, &err.to_string());
                sys::exit_now(SETUP_FAILED);
            }
            Ok(ForkResult::Parent { child }) => {
                drop(stdio);
                self.running.insert(
                    child,
                    Caller {
                        reply,
                        cancelled: false,
                    },
                );
            }
            Err(e) => control::reply_error(&reply, &format!("cannot start the command: {e}")),
        }
    }
}
