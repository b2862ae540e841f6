//! The egress bridge: the sandbox's only way out. The supervisor listens on
//! `127.0.0.1:3128` inside the sandbox's network namespace and hands each connection it
//! accepts to the egress proxy over the proxy's unix socket, which is bound into the sandbox
//! at [`EGRESS_SOCKET`] ([`corral_splice::handoff`]: the accepted socket itself is passed, so
//! the proxy reads and writes it directly and the supervisor is out of the path). The proxy
//! knows which sandbox is talking from the socket alone, so the command may as well talk to
//! the socket directly: it gains nothing by bypassing the bridge.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use crate::relay;

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

/// Accepts connections forever on a background thread, each carried to the egress socket.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    serve_to(listener, Path::new(EGRESS_SOCKET).to_path_buf())
}

/// Accepts connections on `listener` forever on a background thread, each handed to the
/// proxy on the unix socket at `socket` (the sandbox's bridge does this with
/// [`EGRESS_SOCKET`]; benchmarks run the same code against a socket of their own). One
/// connection to the socket carries every hand-over; it is opened again when it fails.
pub fn serve_to(listener: TcpListener, socket: PathBuf) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    relay::spawn("egress-bridge", move |_slots| async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let mut channel = None;
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            // A failed channel (the proxy restarted) is opened again once for this client;
            // if that fails too the client is closed and the next one tries again.
            for _ in 0..2 {
                if hand_over(&mut channel, &socket, &client).await.is_ok() {
                    break;
                }
                channel = None;
            }
        }
    })
}

/// Passes `client` to the proxy over `channel`, connecting it first if needed.
async fn hand_over(
    channel: &mut Option<tokio::net::UnixStream>,
    socket: &Path,
    client: &tokio::net::TcpStream,
) -> io::Result<()> {
    let channel = match channel {
        Some(channel) => channel,
        None => channel.insert(tokio::net::UnixStream::connect(socket).await?),
    };
    corral_splice::handoff::send(channel, client).await
}
