//! The ingress socket: how the host reaches servers inside a sandbox (an agent's web UI, a dev
//! server) although nothing of the sandbox listens on the host's network. The launcher binds a
//! unix socket on the host before the sandbox is cloned; the supervisor inherits it and, for
//! each connection, reads which port is wanted and connects to it on the sandbox's own
//! loopback.
//!
//! Protocol (hand-written: it is one line), two forms:
//!
//! - `PORT\n` (`4096\n`): then the client speaks to that port; the supervisor carries the
//!   bytes both ways. A port nobody listens on closes the connection.
//! - `PORT fd\n` (`4096 fd\n`): the supervisor hands the connected TCP socket itself to the
//!   client ([`corral_splice::handoff`]: one byte with the descriptor) and hangs up, so the
//!   client talks to the server with no relay in the path (the gateway does this). A port
//!   nobody listens on gets one line `refused: REASON\n` instead.
//!
//! A bad line closes the connection. Only the host side can connect: the socket is mode 0600
//! in a directory the caller chose, and it is never mounted into the sandbox.
//!
//! Handing the socket over gives no one anything new: the sandbox's processes never see the
//! ingress socket, and the socket handed out is one the supervisor connected to a port on the
//! sandbox's loopback, the same server the relay would have carried bytes to. The client
//! (the gateway, or whoever owns the socket's directory) gets a descriptor it can only read
//! and write: a connected TCP socket cannot be connected elsewhere, and it gives no way into
//! the sandbox's network namespace beyond that one connection. The receiver checks that the
//! descriptor is a connected TCP socket before using it ([`corral_splice::handoff::tcp_stream`]).

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};

use crate::relay;

/// Time a client has to name the port.
const PORT_LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the ingress socket at `path` (mode 0600), replacing a stale socket left by a sandbox
/// that is gone; any other file there is refused.
///
/// The socket is bound under a temporary name, made 0600 and only then renamed to `path`: a
/// client that sees `path` can connect at once (a bound socket refuses connections until it
/// listens), and never while others could.
pub fn bind(path: &Path) -> io::Result<OwnedFd> {
    if let Ok(meta) = path.symlink_metadata() {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = std::path::PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let listener = UnixListener::bind(&temporary)?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    Ok(OwnedFd::from(listener))
}

/// Accepts connections forever on a background thread, each carried to the port it names on
/// the sandbox's loopback. Called by the supervisor inside the sandbox's network namespace.
pub fn serve(listener: OwnedFd) -> io::Result<()> {
    let listener = UnixListener::from(listener);
    listener.set_nonblocking(true)?;
    relay::spawn("ingress", move |slots| async move {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        loop {
            let Some(slot) = slots.take().await else {
                return Ok(());
            };
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = carry(client).await;
                drop(slot);
            });
        }
    })
}

/// What a client asked for on its port line.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    port: u16,
    /// `PORT fd`: hand the connected socket over instead of relaying.
    handover: bool,
}

/// Reads the port line, connects, and then hands the socket over or copies bytes both ways
/// until each side ends.
async fn carry(mut client: tokio::net::UnixStream) -> io::Result<()> {
    let request = tokio::time::timeout(PORT_LINE_TIMEOUT, read_request(&mut client))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no port line"))??;
    let connected = tokio::net::TcpStream::connect(("127.0.0.1", request.port)).await;
    if !request.handover {
        let server = connected?;
        let _ = server.set_nodelay(true);
        relay::both_ways(client, server).await;
        return Ok(());
    }
    match connected {
        Ok(server) => {
            let _ = server.set_nodelay(true);
            client
                .async_io(Interest::WRITABLE, || {
                    corral_splice::handoff::send(&client, &server)
                })
                .await
        }
        Err(e) => {
            let line = format!("refused: {e}\n");
            client.write_all(line.as_bytes()).await
        }
    }
}

/// Longest port line: `65535 fd`.
const MAX_LINE: usize = 8;

/// Reads `PORT\n` or `PORT fd\n` one byte at a time (so nothing after the line is consumed).
async fn read_request(client: &mut tokio::net::UnixStream) -> io::Result<Request> {
    let mut line = Vec::new();
    while line.len() <= MAX_LINE {
        let byte = client.read_u8().await?;
        if byte == b'\n' {
            return parse_request(&line);
        }
        line.push(byte);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "expected a port line like 8080\\n or 8080 fd\\n",
    ))
}

fn parse_request(line: &[u8]) -> io::Result<Request> {
    let (port, handover) = match line.strip_suffix(b" fd") {
        Some(port) => (port, true),
        None => (line, false),
    };
    std::str::from_utf8(port)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .map(|port| Request { port, handover })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a TCP port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_decimal_port_names_a_port() {
        let relayed = |port| Request {
            port,
            handover: false,
        };
        assert_eq!(parse_request(b"4096").unwrap(), relayed(4096));
        assert_eq!(
            parse_request(b"65535 fd").unwrap(),
            Request {
                port: 65535,
                handover: true
            }
        );
        for bad in [
            &b"0"[..],
            b"65536",
            b"-1",
            b"+80",
            b" 80",
            b"80 ",
            b"http",
            b"",
            b" fd",
            b"80 fd ",
            b"80fd",
            b"0 fd",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn binding_replaces_a_stale_socket_but_never_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ingress.sock");
        drop(bind(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(bind(&path).unwrap());
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "keep me").unwrap();
        assert!(bind(&file).is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }
}
