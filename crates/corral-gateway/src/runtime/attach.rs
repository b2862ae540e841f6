//! Interactive terminals: a command run in a running sandbox on a pseudo-terminal the
//! gateway opens, for a caller to type into and read from (the attach WebSocket).
//!
//! The gateway keeps the master side; the slave goes through the control socket to the
//! supervisor, which makes it the command's controlling terminal. So a resize on the master
//! (`TIOCSWINSZ`) reaches the command as SIGWINCH, and closing the master when the caller
//! goes away hangs the terminal up: the command gets SIGHUP. The gateway holds its own copy
//! of the slave until the command ended, so output written just before the end is still
//! read (a master whose slaves are all closed reads as an error).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_sandbox::control::{self, ExecRequest};
use rustix::fs::OFlags;
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::{Runtime, RuntimeError};

/// How long output is still read after the command ended, when something in the sandbox
/// keeps the terminal open (a background process).
const TAIL_GRACE: Duration = Duration::from_millis(200);

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// How many terminals are attached to each sandbox.
#[derive(Default, Clone)]
pub(super) struct AttachedTerminals(Arc<Mutex<HashMap<String, usize>>>);

impl AttachedTerminals {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // Only counters change under the lock; a panic cannot leave them torn.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> usize {
        self.counts().get(id).copied().unwrap_or(0)
    }

    fn attach(&self, id: &str) -> AttachedGuard {
        *self.counts().entry(id.to_owned()).or_default() += 1;
        AttachedGuard {
            terminals: self.clone(),
            id: id.to_owned(),
        }
    }
}

/// Counts one attached terminal for as long as it lives.
struct AttachedGuard {
    terminals: AttachedTerminals,
    id: String,
}

impl Drop for AttachedGuard {
    fn drop(&mut self) {
        let mut counts = self.terminals.counts();
        if let Some(count) = counts.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.id);
            }
        }
    }
}

/// How an attached command ended.
#[derive(Debug)]
pub enum TerminalEnd {
    /// It ran and ended with this status (128 + N when signal N killed it).
    Exited(i32),
    /// The supervisor could not start it; its reason.
    Refused(String),
    /// The sandbox stopped answering (it was stopped, or ended).
    Lost(io::Error),
}

/// The gateway's side of an attached terminal: the master of its pseudo-terminal. Dropping
/// it hangs the terminal up (the command gets SIGHUP) and uncounts it.
pub struct Terminal {
    master: AsyncFd<OwnedFd>,
    _attached: AttachedGuard,
}

/// The command on an attached terminal; resolves when it ends.
pub struct TerminalCommand {
    task: JoinHandle<(io::Result<i32>, OwnedFd)>,
}

impl Runtime {
    /// How many terminals are attached to the sandbox right now (an idle sandbox with one is
    /// not idle).
    pub fn attached_terminals(&self, id: &str) -> usize {
        self.terminals.get(id)
    }

    /// Runs `request` in the running sandbox on a new pseudo-terminal of `size`; the command
    /// starts at once (its first output waits in the terminal).
    pub fn attach(
        &self,
        id: &str,
        request: ExecRequest,
        size: TerminalSize,
    ) -> Result<(Terminal, TerminalCommand), RuntimeError> {
        if !self.is_running(id) {
            return Err(RuntimeError::NotRunning(id.to_owned()));
        }
        let (master, slave) = open_pty(size).map_err(RuntimeError::ExecSetup)?;
        let master = register(master).map_err(RuntimeError::ExecSetup)?;
        let control: PathBuf = self.paths(id).control();
        let request = ExecRequest {
            tty: true,
            ..request
        };
        let task = tokio::task::spawn_blocking(move || {
            let result = control::exec(&control, &request, &[slave.as_fd()]);
            (result, slave)
        });
        let terminal = Terminal {
            master,
            _attached: self.terminals.attach(id),
        };
        Ok((terminal, TerminalCommand { task }))
    }
}

/// A new pseudo-terminal (master non-blocking, both close-on-exec) of `size`.
fn open_pty(size: TerminalSize) -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    // TIOCGPTPEER opens the slave from the master itself, with no path to race on.
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)?;
    let flags = rustix::fs::fcntl_getfl(&master)?;
    rustix::fs::fcntl_setfl(&master, flags | OFlags::NONBLOCK)?;
    set_size(&master, size)?;
    Ok((master, slave))
}

/// Registers the master with the reactor. `AsyncFd::new` is deprecated because a `T` whose
/// descriptor can be closed behind the reactor's back is unsound; an `OwnedFd` that the
/// `AsyncFd` owns cannot be (its safe replacement, `register`, is `unsafe` for exactly that
/// reason, and this crate forbids `unsafe`).
#[allow(deprecated)]
fn register(master: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(master)
}

fn set_size(master: &OwnedFd, size: TerminalSize) -> io::Result<()> {
    let winsize = Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(master, winsize)?)
}

impl Terminal {
    /// Reads the terminal's output; 0 once nothing can hold the terminal open any more.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.master.readable().await?;
            match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut *buf)?)) {
                Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    return Ok(0);
                }
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Types `data` into the terminal.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut ready = self.master.writable().await?;
            match ready.try_io(|fd| Ok(rustix::io::write(fd.get_ref(), data)?)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Resizes the terminal; the command gets SIGWINCH.
    pub fn resize(&self, size: TerminalSize) -> io::Result<()> {
        set_size(self.master.get_ref(), size)
    }

    /// The output still in the terminal once the command ended: read until every holder of
    /// the terminal is gone, or nothing came for [`TAIL_GRACE`].
    pub async fn tail(&self) -> Vec<u8> {
        let mut tail = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout(TAIL_GRACE, self.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
        }
        tail
    }
}

impl TerminalCommand {
    /// Waits for the command to end (cancel-safe). The gateway's copy of the terminal's
    /// slave is closed then, so [`Terminal::tail`] can see the terminal's end.
    pub async fn wait(&mut self) -> TerminalEnd {
        match (&mut self.task).await {
            Ok((Ok(code), _slave)) => TerminalEnd::Exited(code),
            Ok((Err(e), _slave)) if e.kind() == io::ErrorKind::Other => {
                TerminalEnd::Refused(e.to_string())
            }
            Ok((Err(e), _slave)) => TerminalEnd::Lost(e),
            Err(e) => TerminalEnd::Lost(io::Error::other(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_counts_while_it_is_attached() {
        let terminals = AttachedTerminals::default();
        let first = terminals.attach("a");
        let second = terminals.attach("a");
        assert_eq!((terminals.get("a"), terminals.get("b")), (2, 0));
        drop(first);
        assert_eq!(terminals.get("a"), 1);
        drop(second);
        assert_eq!(terminals.get("a"), 0);
    }

    #[tokio::test]
    async fn output_and_resize_reach_the_other_side() {
        let (master, slave) = open_pty(TerminalSize { cols: 80, rows: 24 }).unwrap();
        let terminal = Terminal {
            master: register(master).unwrap(),
            _attached: AttachedTerminals::default().attach("x"),
        };
        terminal
            .resize(TerminalSize {
                cols: 132,
                rows: 50,
            })
            .unwrap();
        let size = rustix::termios::tcgetwinsize(&slave).unwrap();
        assert_eq!((size.ws_col, size.ws_row), (132, 50));
        rustix::io::write(&slave, b"hi").unwrap();
        drop(slave);
        assert_eq!(terminal.tail().await, b"hi");
    }
}
