//! Non-interactive exec: one command run through the sandbox's control socket with stdin
//! from `/dev/null` and stdout and stderr on pipes the gateway reads, each kept up to
//! [`MAX_OUTPUT`] bytes (the rest is read and dropped, so the command never blocks on a full
//! pipe). A background process that keeps the pipes open after the command ended gets
//! [`DRAIN_GRACE`] to finish writing; then the output is returned as it is.
//!
//! A command never outlives the request that asked for it: when its time is up the gateway
//! shuts down its side of the control connection (the supervisor then kills the command's
//! process group and still reports the exit status), and when the request is dropped (its
//! client went away) the connection is closed, which kills the command the same way.

use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use corral_sandbox::control::{self, ExecRequest};
use nix::fcntl::OFlag;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::progress::newest_line;

/// Most bytes of stdout (and, separately, of stderr) an exec returns.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// How long output is still read after the command ended.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// How long a timed-out command's exit status is waited for once it has been killed.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// How an exec ended.
#[derive(Debug)]
pub struct ExecOutput {
    /// The command's exit status (128 + N when signal N killed it).
    pub exit_code: i32,
    /// Its stdout, up to [`MAX_OUTPUT`] bytes.
    pub stdout: Vec<u8>,
    /// Whether stdout was longer.
    pub stdout_truncated: bool,
    /// Its stderr, up to [`MAX_OUTPUT`] bytes.
    pub stderr: Vec<u8>,
    /// Whether stderr was longer.
    pub stderr_truncated: bool,
    /// Whether the command ran out of time and was killed.
    pub timed_out: bool,
}

/// Why an exec did not produce an exit code.
#[derive(Debug)]
pub(super) enum ExecError {
    /// The control socket did not answer: the sandbox is not (or no longer) running.
    Unreachable(std::io::Error),
    /// The supervisor refused or could not start the command; its reason.
    Refused(String),
    /// The pipes for the output could not be made.
    Pipes(std::io::Error),
    /// The blocking task failed.
    Task(tokio::task::JoinError),
}

/// Called with each new complete line of a command's stderr (see [`super::progress`]).
pub(super) type StderrLines = Box<dyn FnMut(String) + Send>;

/// Runs `request` through the control socket at `control`, killing it after `timeout`;
/// `on_stderr_line`, if any, sees each status line of its stderr as it comes.
pub(super) async fn run(
    control: PathBuf,
    request: ExecRequest,
    timeout: Duration,
    on_stderr_line: Option<StderrLines>,
) -> Result<ExecOutput, ExecError> {
    let (stdout_read, stdout_write) = cloexec_pipe().map_err(ExecError::Pipes)?;
    let (stderr_read, stderr_write) = cloexec_pipe().map_err(ExecError::Pipes)?;
    let stdin = std::fs::File::open("/dev/null").map_err(ExecError::Pipes)?;
    let stream = connect(control).await.map_err(ExecError::Unreachable)?;
    let connection = Connection(stream.try_clone().map_err(ExecError::Pipes)?);
    let (done_tx, done) = watch::channel(false);
    let stdout = tokio::spawn(read_bounded(stdout_read, done.clone(), None));
    let stderr = tokio::spawn(read_bounded(stderr_read, done, on_stderr_line));
    let mut task = tokio::task::spawn_blocking(move || {
        let result = control::exec_on(
            &stream,
            &request,
            &[stdin.as_fd(), stdout_write.as_fd(), stderr_write.as_fd()],
        );
        // Our copies of the write ends go now, so the readers see the end of the output
        // once the sandbox's copies are closed.
        drop((stdout_write, stderr_write));
        result
    });
    let (result, timed_out) = match tokio::time::timeout(timeout, &mut task).await {
        Ok(result) => (result, false),
        Err(_) => {
            connection.cancel();
            if let Ok(result) = tokio::time::timeout(KILL_GRACE, &mut task).await {
                (result, true)
            } else {
                connection.close();
                (task.await, true)
            }
        }
    };
    let _ = done_tx.send(true);
    let (stdout, stdout_truncated) = stdout.await.map_err(ExecError::Task)?;
    let (stderr, stderr_truncated) = stderr.await.map_err(ExecError::Task)?;
    let exit_code = match result.map_err(ExecError::Task)? {
        Ok(code) => code,
        Err(e) => {
            return Err(match e.kind() {
                std::io::ErrorKind::Other => ExecError::Refused(e.to_string()),
                _ => ExecError::Unreachable(e),
            });
        }
    };
    Ok(ExecOutput {
        exit_code,
        stdout,
        stdout_truncated,
        stderr,
        stderr_truncated,
        timed_out,
    })
}

/// A blocking connection to the control socket, made without blocking the async runtime.
async fn connect(control: PathBuf) -> std::io::Result<UnixStream> {
    let stream = tokio::net::UnixStream::connect(control).await?.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// The gateway's handle on an exec's control connection. Dropped with the request (its
/// client went away, or the gateway stops waiting), it closes the connection, which makes
/// the supervisor kill the command.
struct Connection(UnixStream);

impl Connection {
    /// Asks the supervisor to kill the command; its exit status still comes back.
    fn cancel(&self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }

    /// Closes both directions: the command is killed and the blocked read returns at once.
    fn close(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

/// A pipe whose ends are not inherited by processes the gateway starts meanwhile.
fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// Reads `fd` to its end, keeping the first [`MAX_OUTPUT`] bytes; once `done` turns true,
/// reads for at most [`DRAIN_GRACE`] more. Returns the bytes and whether any were dropped.
async fn read_bounded(
    fd: OwnedFd,
    mut done: watch::Receiver<bool>,
    mut on_line: Option<StderrLines>,
) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let Ok(mut reader) = pipe::Receiver::from_owned_fd(fd) else {
        return (kept, truncated);
    };
    let mut chunk = vec![0u8; 64 * 1024];
    let mut deadline = None;
    loop {
        let read = async {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, reader.read(&mut chunk))
                    .await
                    .unwrap_or(Ok(0)),
                None => reader.read(&mut chunk).await,
            }
        };
        let n = tokio::select! {
            n = read => n,
            _ = done.wait_for(|d| *d), if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + DRAIN_GRACE);
                continue;
            }
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT - kept.len();
                kept.extend_from_slice(&chunk[..n.min(room)]);
                truncated |= n > room;
                if let (Some(on_line), Some(line)) = (&mut on_line, newest_line(&kept)) {
                    on_line(line);
                }
            }
        }
    }
    (kept, truncated)
}
