//! The egress bridge: the sandbox's only way out. The supervisor listens on
//! `127.0.0.1:3128` inside the sandbox's network namespace and, when the first connection
//! arrives, hands that listening socket to the egress proxy over the proxy's unix socket,
//! which is bound into the sandbox at [`EGRESS_SOCKET`] ([`corral_splice::handoff`]). The
//! proxy then accepts, reads and writes the sandbox's connections itself: the supervisor is
//! out of the path. The proxy knows which sandbox is talking from the socket alone, so the
//! command may as well talk to the socket directly: it gains nothing by bypassing the bridge.

use std::io::{self, Read};
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Where the egress socket appears inside the sandbox.
pub const EGRESS_SOCKET: &str = "/run/corral/egress.sock";

/// The proxy address programs inside the sandbox use.
pub const PROXY_ADDRESS: &str = "127.0.0.1:3128";

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

/// Hands the listening socket to corral's egress proxy on the egress socket (see
/// [`serve_to`]).
pub fn serve(listener: TcpListener) -> io::Result<()> {
    serve_to(listener, Path::new(EGRESS_SOCKET).to_path_buf())
}

/// Accepts connections forever on a background thread, each carried as a byte stream to a
/// new connection on the egress socket: for a server there that is not corral's own proxy
/// (`corral run --egress-socket`), which knows nothing of listeners handed over.
pub fn serve_relaying(listener: TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    crate::relay::spawn("egress-bridge", move |slots| async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let Some(slot) = slots.take().await else {
                return Ok(());
            };
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            tokio::spawn(async move {
                if let Ok(proxy) = tokio::net::UnixStream::connect(EGRESS_SOCKET).await {
                    crate::relay::both_ways(client, proxy).await;
                }
                drop(slot);
            });
        }
    })
}

/// Hands `listener` to the proxy on the unix socket at `socket` (the sandbox's bridge does
/// this with [`EGRESS_SOCKET`]; benchmarks run the same code against a socket of their own)
/// from a background thread, once a first connection waits on it, so a sandbox that never
/// connects never wakes the proxy. The thread then keeps the hand-over connection open, and
/// hands the listener over again if the proxy ever closes it.
pub fn serve_to(listener: TcpListener, socket: PathBuf) -> io::Result<()> {
    std::thread::Builder::new()
        .name("egress-bridge".into())
        .spawn(move || {
            loop {
                // Readable: a connection waits in the backlog (left there for the proxy).
                let mut waiting = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                if poll(&mut waiting, PollTimeout::NONE).is_err() {
                    continue;
                }
                match hand_over(&socket, &listener) {
                    Ok(mut channel) => {
                        // Returns when the proxy closes the connection.
                        let _ = channel.read(&mut [0u8; 1]);
                    }
                    Err(_) => std::thread::sleep(RETRY),
                }
            }
        })?;
    Ok(())
}

/// How long the bridge waits before trying the proxy's socket again.
const RETRY: Duration = Duration::from_millis(200);

/// Connects to the proxy at `socket` and passes it `listener`; returns the connection, which
/// the proxy keeps open while it serves the listener.
fn hand_over(socket: &Path, listener: &TcpListener) -> io::Result<UnixStream> {
    let channel = UnixStream::connect(socket)?;
    corral_splice::handoff::send(&channel, listener)?;
    Ok(channel)
}
