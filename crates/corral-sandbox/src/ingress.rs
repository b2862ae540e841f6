//! The ingress socket: how the host reaches servers inside a sandbox (an agent's web UI, a dev
//! server) although nothing of the sandbox listens on the host's network. The launcher binds a
//! unix socket on the host before the sandbox is cloned; the supervisor inherits it and, for
//! each connection, reads which port is wanted and connects to it on the sandbox's own
//! loopback, then carries bytes both ways.
//!
//! Protocol (hand-written: it is one line): the client sends the port in decimal and a newline
//! (`4096\n`), then speaks to that port. A bad line or a port nobody listens on closes the
//! connection. Only the host side can connect: the socket is mode 0600 in a directory the
//! caller chose, and it is never mounted into the sandbox.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncReadExt;

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

/// Reads the port line, connects, and copies bytes both ways until each side ends.
async fn carry(mut client: tokio::net::UnixStream) -> io::Result<()> {
    let port = tokio::time::timeout(PORT_LINE_TIMEOUT, read_port(&mut client))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no port line"))??;
    let server = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let _ = server.set_nodelay(true);
    relay::both_ways(client, server).await;
    Ok(())
}

/// Reads `PORT\n` one byte at a time (so nothing after the line is consumed).
async fn read_port(client: &mut tokio::net::UnixStream) -> io::Result<u16> {
    let mut line = Vec::new();
    while line.len() <= 6 {
        let byte = client.read_u8().await?;
        if byte == b'\n' {
            return parse_port(&line);
        }
        line.push(byte);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "expected a port line like 8080\\n",
    ))
}

fn parse_port(line: &[u8]) -> io::Result<u16> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a TCP port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_decimal_port_names_a_port() {
        assert_eq!(parse_port(b"4096").unwrap(), 4096);
        for bad in [&b"0"[..], b"65536", b"-1", b" 80", b"80 ", b"http", b""] {
            assert!(parse_port(bad).is_err(), "{bad:?}");
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
