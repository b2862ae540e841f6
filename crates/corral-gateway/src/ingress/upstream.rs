//! Connections to a port inside a sandbox, asked for through its ingress socket (served by its
//! supervisor): the gateway writes `PORT fd\n`, the supervisor connects to the port on the
//! sandbox's own loopback and hands the connected TCP socket back (`SCM_RIGHTS`), and the
//! gateway then talks HTTP to the server directly, with no relay process in the path. A
//! supervisor that does not know `fd` (a sandbox started by an older corral, still running)
//! hangs up without an answer; then the gateway falls back to `PORT\n` and the supervisor
//! relays the bytes. HTTP/1.1 connections are kept and reused per (sandbox, port): a
//! connection goes back to the pool once its response has been read to the end.
//!
//! Why taking a descriptor from a supervisor is sound: the gateway only ever connects to the
//! ingress sockets it placed in its own data directory for the sandboxes it launched (a
//! sandbox never sees that socket), and it uses what comes back only after checking it is a
//! connected TCP socket ([`corral_splice::handoff::tcp_stream`]), which it then reads and
//! writes exactly as it would the relayed byte stream. Anything else is closed unused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use corral_splice::handoff;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Most idle connections kept per (sandbox, port).
const MAX_IDLE: usize = 32;
/// How long a kept connection may take to become ready for its next request.
const READY_WAIT: Duration = Duration::from_millis(100);
/// How long a probe waits for an answer or a hang-up before taking silence as "accepted".
const PROBE_WINDOW: Duration = Duration::from_secs(2);

/// Why a sandbox's port could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The ingress socket is not there or refused the connection.
    #[error("cannot reach the sandbox's ingress socket: {0}")]
    Socket(std::io::Error),
    /// Nothing accepted the connection on the port.
    #[error("nothing accepts connections on port {0} in the sandbox")]
    Refused(u16),
    /// The supervisor answered the port line with something that is not its protocol.
    #[error("the sandbox's supervisor answered port {0} with neither a socket nor a refusal")]
    Garbled(u16),
    /// The HTTP handshake failed.
    #[error("HTTP to the sandbox failed: {0}")]
    Http(#[from] hyper::Error),
}

/// Idle connections by sandbox id, then port (looked up by `&str`: no key is allocated per
/// request).
type Pool = HashMap<String, HashMap<u16, Vec<SendRequest<Body>>>>;

/// Idle HTTP/1.1 connections to sandbox ports.
#[derive(Default)]
pub struct Upstream {
    idle: Arc<Mutex<Pool>>,
}

impl Upstream {
    /// A new connection to `port` through `socket`.
    pub async fn fresh(
        &self,
        socket: &Path,
        port: u16,
    ) -> Result<SendRequest<Body>, UpstreamError> {
        match open(socket, port).await? {
            Opened::Direct(stream) => handshake(stream).await,
            Opened::Relayed(stream) => handshake(stream).await,
        }
    }

    /// A kept connection to `port` of sandbox `id` that is, or is about to be, ready for a
    /// request (its last response was read to the end; the connection task may not have
    /// noticed yet). `None` when none is kept: then [`Self::fresh`] makes one.
    pub async fn take_idle(&self, id: &str, port: u16) -> Option<SendRequest<Body>> {
        loop {
            let mut sender = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.get_mut(id)?.get_mut(&port)?.pop()?
            };
            if sender.is_ready() {
                return Some(sender);
            }
            // Ready at once unless the last request's upload is still under way (the server
            // answered before reading it all): then it is not reused.
            let ready = tokio::time::timeout(READY_WAIT, sender.ready()).await;
            if !sender.is_closed() && matches!(ready, Ok(Ok(()))) {
                return Some(sender);
            }
        }
    }

    /// What puts `sender` back: to be run once the response in flight on it has been read to
    /// its end (never for an upgraded connection).
    pub fn returner(
        &self,
        id: Arc<str>,
        port: u16,
        sender: SendRequest<Body>,
    ) -> Box<dyn FnOnce() + Send + Sync> {
        let idle = self.idle.clone();
        Box::new(move || {
            let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
            if !idle.contains_key(&*id) {
                idle.insert(id.to_string(), HashMap::new());
            }
            let Some(ports) = idle.get_mut(&*id) else {
                return;
            };
            let list = ports.entry(port).or_default();
            list.retain(|s| !s.is_closed());
            if list.len() < MAX_IDLE {
                list.push(sender);
            }
        })
    }

    /// Drops every idle connection to sandbox `id` (it stopped).
    pub fn forget(&self, id: &str) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// A connection to `port` if something accepts there now. A handed-over socket is
    /// connected, so the port accepted. Through an older supervisor's relay a connection it
    /// has not served yet looks the same as one a server accepted (it only hangs up when the
    /// port refuses), so there the probe asks the server something harmless (`OPTIONS *`,
    /// which every HTTP server answers, if only with an error) and takes any answer — or a
    /// server holding the line for [`PROBE_WINDOW`] — as accepted.
    pub async fn probe(
        &self,
        socket: &Path,
        port: u16,
    ) -> Result<SendRequest<Body>, UpstreamError> {
        let mut stream = match open(socket, port).await? {
            Opened::Direct(stream) => return handshake(stream).await,
            Opened::Relayed(stream) => stream,
        };
        stream
            .write_all(b"OPTIONS * HTTP/1.1\r\nHost: corral-probe\r\nConnection: close\r\n\r\n")
            .await
            .map_err(UpstreamError::Socket)?;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(PROBE_WINDOW, stream.read(&mut byte)).await {
            Ok(Ok(n)) if n > 0 => {}
            // Held open without an answer: accepted by something slow to speak.
            Err(_) => {}
            Ok(_) => return Err(UpstreamError::Refused(port)),
        }
        handshake(relayed(socket, port).await?).await
    }
}

/// A connection to a sandbox's port.
enum Opened {
    /// The server's own TCP socket, handed over by the supervisor.
    Direct(TcpStream),
    /// A byte stream the supervisor relays (an older supervisor).
    Relayed(UnixStream),
}

/// Asks the supervisor behind `socket` for a connection to `port`: the connected socket
/// itself, or, from a supervisor that does not hand sockets over, a relayed stream.
async fn open(socket: &Path, port: u16) -> Result<Opened, UpstreamError> {
    let stream = ask(socket, &format!("{port} fd\n")).await?;
    let handoff::Received { data, fds } = handoff::receive(&stream, 256)
        .await
        .map_err(UpstreamError::Socket)?;
    if data.is_empty() && fds.is_empty() {
        // Hung up without an answer: a supervisor that only relays.
        return Ok(Opened::Relayed(relayed(socket, port).await?));
    }
    if data.starts_with(b"refused") {
        return Err(UpstreamError::Refused(port));
    }
    match <[_; 1]>::try_from(fds) {
        Ok([fd]) if data == [handoff::MARK] => {
            let stream = handoff::tcp_stream(fd).map_err(UpstreamError::Socket)?;
            let _ = stream.set_nodelay(true);
            Ok(Opened::Direct(stream))
        }
        _ => Err(UpstreamError::Garbled(port)),
    }
}

/// Connects to the ingress socket and names the port, for a relayed byte stream.
async fn relayed(socket: &Path, port: u16) -> Result<UnixStream, UpstreamError> {
    ask(socket, &format!("{port}\n")).await
}

/// Connects to the ingress socket and sends `line` (a port, and what is wanted of it).
async fn ask(socket: &Path, line: &str) -> Result<UnixStream, UpstreamError> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(UpstreamError::Socket)?;
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(UpstreamError::Socket)?;
    Ok(stream)
}

/// HTTP/1.1 over `stream`, with upgrades (WebSocket) allowed; the connection is driven by
/// its own task until it closes.
async fn handshake<S>(stream: S) -> Result<SendRequest<Body>, UpstreamError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "sandbox connection ended");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use axum::http::Request;
    use tokio::net::UnixListener;

    use super::*;

    /// A stand-in supervisor on `socket`: for each connection it reads the port line and
    /// answers with `answer(line, connection)`.
    fn supervisor<F, Fut>(socket: &Path, answer: F)
    where
        F: Fn(String, UnixStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let listener = UnixListener::bind(socket).unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut line = Vec::new();
                while let Ok(byte) = stream.read_u8().await {
                    if byte == b'\n' {
                        break;
                    }
                    line.push(byte);
                }
                answer(String::from_utf8(line).unwrap(), stream).await;
            }
        });
    }

    async fn status(mut sender: SendRequest<Body>) -> u16 {
        let request = Request::get("/").body(Body::empty()).unwrap();
        sender
            .send_request(request)
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The socket handed over is used as the connection to the server.
    #[tokio::test]
    async fn a_handed_over_socket_is_the_connection_to_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ingress.sock");
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = server.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = server.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head).await;
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            let _ = stream.read(&mut head).await;
        });
        supervisor(&socket, move |line, stream| async move {
            assert_eq!(line, "8080 fd");
            let server = std::net::TcpStream::connect(address).unwrap();
            handoff::send(stream.as_fd(), &server).unwrap();
        });
        let sender = Upstream::default().fresh(&socket, 8080).await.unwrap();
        assert_eq!(status(sender).await, 204);
    }

    /// A supervisor that only relays hangs up on `PORT fd`: the gateway asks again with
    /// `PORT` and speaks through the relay.
    #[tokio::test]
    async fn a_relaying_supervisor_is_still_reached() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ingress.sock");
        supervisor(&socket, |line, mut stream| async move {
            if line == "8080" {
                let mut head = [0u8; 1024];
                let _ = stream.read(&mut head).await;
                let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
                let _ = stream.read(&mut head).await;
            }
        });
        let upstream = Upstream::default();
        assert_eq!(
            status(upstream.fresh(&socket, 8080).await.unwrap()).await,
            204
        );
        assert_eq!(
            status(upstream.probe(&socket, 8080).await.unwrap()).await,
            204
        );
    }

    /// A refusal is `Refused`; an answer outside the protocol, or a descriptor that is not a
    /// connected TCP socket, is an error and nothing is used.
    #[tokio::test]
    async fn refusals_and_strange_answers_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ingress.sock");
        supervisor(&socket, |line, mut stream| async move {
            match line.as_str() {
                "1 fd" => {
                    let _ = stream.write_all(b"refused: Connection refused\n").await;
                }
                "2 fd" => {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
                }
                _ => {
                    let (unix, _) = std::os::unix::net::UnixStream::pair().unwrap();
                    handoff::send(stream.as_fd(), &unix).unwrap();
                }
            }
        });
        let upstream = Upstream::default();
        assert!(matches!(
            upstream.fresh(&socket, 1).await,
            Err(UpstreamError::Refused(1))
        ));
        assert!(matches!(
            upstream.probe(&socket, 1).await,
            Err(UpstreamError::Refused(1))
        ));
        assert!(matches!(
            upstream.fresh(&socket, 2).await,
            Err(UpstreamError::Garbled(2))
        ));
        assert!(matches!(
            upstream.fresh(&socket, 3).await,
            Err(UpstreamError::Socket(_))
        ));
    }
}
