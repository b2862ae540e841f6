//! The control socket: running a command in a sandbox that is already running (`exec`), the
//! way `docker exec` does, for a gateway or any host-side caller.
//!
//! The launcher binds the socket on the host before the sandbox is cloned; the supervisor
//! (pid 1 inside) inherits it. A caller connects, sends one request — a JSON document (argv,
//! extra environment, working directory, whether stdin is a terminal) with its own stdin,
//! stdout and stderr attached as descriptors (SCM_RIGHTS) — and reads one line back:
//! `exit N` when the command ends, or `error MESSAGE` when it could not start. The command
//! gets exactly the restrictions the sandbox's own command has (same namespaces and cgroup,
//! same Landlock rules, seccomp filters, limits and user), because the supervisor starts it
//! through the same code.
//!
//! Threat model: only the host side can connect (the socket is 0600 and never mounted into
//! the sandbox); requests are still bounded in size and time, since a stuck caller must not
//! stall the supervisor.
//!
//! Framing is hand-written (a 4-byte length before the JSON, one reply line): nothing to pull
//! a protocol crate in for.

use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

/// Largest request document accepted.
const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Time a caller has to send its request once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A command to run in a running sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The command and its arguments (looked up in the sandbox's `PATH`).
    pub argv: Vec<String>,
    /// Variables added to (or replacing) the sandbox's environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the sandbox (default: the sandbox's).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Whether the descriptors sent are one terminal (it becomes the command's controlling
    /// terminal and its stdin, stdout and stderr).
    #[serde(default)]
    pub tty: bool,
}

/// Runs `request` in the sandbox whose control socket is `socket`, with `stdio` (stdin,
/// stdout, stderr; or the terminal alone when `request.tty`) as its descriptors; returns its
/// exit status (128 + N when signal N killed it) once it ends.
pub fn exec(socket: &Path, request: &ExecRequest, stdio: &[BorrowedFd<'_>]) -> io::Result<i32> {
    exec_on(&UnixStream::connect(socket)?, request, stdio)
}

/// [`exec`] over a connection the caller made to the control socket, so that it can cancel
/// the command from another thread: shutting down the connection's writing half
/// ([`std::net::Shutdown::Write`]) kills the command and its process group, and the exit
/// status (128 + 9) still comes back; shutting down both halves kills it too and makes this
/// return an error at once.
pub fn exec_on(
    stream: &UnixStream,
    request: &ExecRequest,
    stdio: &[BorrowedFd<'_>],
) -> io::Result<i32> {
    let expected = if request.tty { 1 } else { 3 };
    if stdio.len() != expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("exec needs {expected} descriptors, got {}", stdio.len()),
        ));
    }
    let document = serde_json::to_vec(request).map_err(io::Error::other)?;
    let length = u32::try_from(document.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "request too large"))?
        .to_be_bytes();
    let fds: Vec<RawFd> = stdio.iter().map(|fd| fd.as_raw_fd()).collect();
    let iov = [IoSlice::new(&length), IoSlice::new(&document)];
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    let total = length.len() + document.len();
    if sent < total {
        // The descriptors went with the first bytes; the rest is plain data.
        let mut rest = Vec::with_capacity(total);
        rest.extend_from_slice(&length);
        rest.extend_from_slice(&document);
        (&*stream).write_all(&rest[sent..])?;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    parse_reply(&line)
}

fn parse_reply(line: &str) -> io::Result<i32> {
    let line = line.trim_end();
    if let Some(code) = line.strip_prefix("exit ") {
        return code.parse().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {line:?}"))
        });
    }
    if let Some(message) = line.strip_prefix("error ") {
        return Err(io::Error::other(message.to_string()));
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the sandbox ended before the command did",
    ))
}

/// Reads one request from a freshly accepted connection: what to run, and the caller's
/// stdin, stdout and stderr (or its terminal alone).
pub fn receive(stream: &UnixStream) -> io::Result<(ExecRequest, Vec<OwnedFd>)> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = vec![0u8; 4 + MAX_REQUEST_BYTES];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let (got, stdio) = {
        let mut iov = [IoSliceMut::new(&mut head)];
        let message = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut stdio = Vec::new();
        for control in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = control {
                for fd in fds {
                    // SAFETY: the kernel just installed `fd` in this process for this message;
                    // nothing else owns it.
                    stdio.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (message.bytes, stdio)
    };
    let mut data = head;
    data.truncate(got);
    while data.len() < 4 {
        read_more(stream, &mut data)?;
    }
    let length = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if length > MAX_REQUEST_BYTES {
        return Err(invalid(format!("request of {length} bytes is too large")));
    }
    while data.len() < 4 + length {
        read_more(stream, &mut data)?;
    }
    let request: ExecRequest =
        serde_json::from_slice(&data[4..4 + length]).map_err(|e| invalid(e.to_string()))?;
    let expected = if request.tty { 1 } else { 3 };
    if request.argv.is_empty() || request.argv[0].is_empty() {
        return Err(invalid("no command to run".into()));
    }
    if stdio.len() != expected {
        return Err(invalid(format!(
            "expected {expected} descriptors, got {}",
            stdio.len()
        )));
    }
    Ok((request, stdio))
}

fn read_more(mut stream: &UnixStream, data: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "request cut short",
        ));
    }
    data.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Sends the reply line for a command that ended with `code`.
pub fn reply_exit(mut stream: &UnixStream, code: i32) {
    let _ = writeln!(stream, "exit {code}");
}

/// Sends the reply line for a request that could not be carried out.
pub fn reply_error(mut stream: &UnixStream, message: &str) {
    let one_line: String = message.chars().filter(|c| *c != '\n').collect();
    let _ = writeln!(stream, "error {one_line}");
}

/// Binds the control socket at `path` (mode 0600), like the ingress socket.
pub fn bind(path: &Path) -> io::Result<OwnedFd> {
    crate::ingress::bind(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_say_how_the_command_ended_or_why_it_did_not_start() {
        assert_eq!(parse_reply("exit 3\n").unwrap(), 3);
        assert_eq!(parse_reply("exit 137").unwrap(), 137);
        let error = parse_reply("error no such command: nope\n").unwrap_err();
        assert_eq!(error.to_string(), "no such command: nope");
        assert_eq!(
            parse_reply("").unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn a_request_travels_with_its_descriptors_and_bad_ones_are_refused() {
        let (client, server) = UnixStream::pair().unwrap();
        let request = ExecRequest {
            argv: vec!["echo".into(), "hi".into()],
            env: vec![("A".into(), "1".into())],
            cwd: Some("/workspace".into()),
            tty: false,
        };
        let document = serde_json::to_vec(&request).unwrap();
        let length = (document.len() as u32).to_be_bytes();
        let stdin = std::fs::File::open("/dev/null").unwrap();
        let fds = [stdin.as_raw_fd(); 3];
        sendmsg::<()>(
            client.as_raw_fd(),
            &[IoSlice::new(&length), IoSlice::new(&document)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let (received, stdio) = receive(&server).unwrap();
        assert_eq!(received, request);
        assert_eq!(stdio.len(), 3);

        let (client, server) = UnixStream::pair().unwrap();
        (&client).write_all(&5u32.to_be_bytes()).unwrap();
        (&client).write_all(b"{}xyz").unwrap();
        let refused = receive(&server).err().unwrap();
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData);
    }
}
