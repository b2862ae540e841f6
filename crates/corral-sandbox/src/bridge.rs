//! The egress bridge: the sandbox's only way out. The supervisor listens on
//! `127.0.0.1:3128` inside the sandbox's network namespace and carries each connection, byte
//! for byte, to the egress proxy's unix socket, which is bound into the sandbox at
//! [`EGRESS_SOCKET`]. The proxy knows which sandbox is talking from the socket alone, so the
//! command may as well talk to the socket directly: it gains nothing by bypassing the bridge.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where the egress socket appears inside the sandbox.
pub const EGRESS_SOCKET: &str = "/run/corral/egress.sock";

/// The proxy address programs inside the sandbox use.
pub const PROXY_ADDRESS: &str = "127.0.0.1:3128";

/// Connections bridged at once; more wait in the listen backlog. Bounds the supervisor's
/// threads however many connections the command opens.
const MAX_CONNECTIONS: usize = 256;

/// The proxy settings that make git, curl, npm and pip use the bridge without further set-up.
pub fn proxy_environment() -> Vec<(String, String)> {
    let url = format!("http://{PROXY_ADDRESS}");
    let mut env = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        env.push((name.to_string(), url.clone()));
        env.push((name.to_lowercase(), url.clone()));
    }
    for name in ["NO_PROXY", "no_proxy"] {
        env.push((name.to_string(), "localhost,127.0.0.1".to_string()));
    }
    env
}

/// Binds the bridge's listening port (inside the sandbox's network namespace).
pub fn listen() -> io::Result<TcpListener> {
    TcpListener::bind(PROXY_ADDRESS)
}

/// Accepts connections forever on a background thread, each carried to the egress socket.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("egress-bridge".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                active.fetch_add(1, Ordering::AcqRel);
                let active = Arc::clone(&active);
                let spawned = std::thread::Builder::new().spawn(move || {
                    let _ = carry(stream);
                    active.fetch_sub(1, Ordering::AcqRel);
                });
                if spawned.is_err() {
                    // Out of threads (the sandbox's pids limit): the connection is dropped.
                    continue;
                }
            }
        })?;
    Ok(())
}

/// Copies bytes both ways between the command's TCP connection and a new connection to the
/// proxy, closing each direction when its source ends.
fn carry(client: TcpStream) -> io::Result<()> {
    let upstream = UnixStream::connect(EGRESS_SOCKET)?;
    let (mut client_read, mut upstream_write) = (client.try_clone()?, upstream.try_clone()?);
    let to_proxy = std::thread::Builder::new().spawn(move || {
        let _ = io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(Shutdown::Write);
    })?;
    let (mut upstream_read, mut client_write) = (upstream, client);
    let _ = io::copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Write);
    let _ = to_proxy.join();
    Ok(())
}
