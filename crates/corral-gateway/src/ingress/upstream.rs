//! Connections to a port inside a sandbox: through its ingress socket (served by its
//! supervisor, which connects to the port on the sandbox's own loopback), named by writing
//! `PORT\n` first. HTTP/1.1 connections are kept and reused per (sandbox, port): a connection
//! goes back to the pool once its response has been read to the end.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

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
    /// The HTTP handshake failed.
    #[error("HTTP to the sandbox failed: {0}")]
    Http(#[from] hyper::Error),
}

type Key = (String, u16);

/// Idle HTTP/1.1 connections to sandbox ports.
#[derive(Default)]
pub struct Upstream {
    idle: Arc<Mutex<HashMap<Key, Vec<SendRequest<Body>>>>>,
}

impl Upstream {
    /// An idle connection to `port` of sandbox `id`, or a new one through `socket`.
    pub async fn connection(
        &self,
        socket: &Path,
        id: &str,
        port: u16,
    ) -> Result<SendRequest<Body>, UpstreamError> {
        if let Some(sender) = self.take_idle(id, port).await {
            return Ok(sender);
        }
        self.fresh(socket, port).await
    }

    /// A new connection to `port` through `socket`.
    pub async fn fresh(
        &self,
        socket: &Path,
        port: u16,
    ) -> Result<SendRequest<Body>, UpstreamError> {
        handshake(open(socket, port).await?).await
    }

    /// A kept connection that is, or is about to be, ready for a request (its last response
    /// was read to the end; the connection task may not have noticed yet).
    async fn take_idle(&self, id: &str, port: u16) -> Option<SendRequest<Body>> {
        loop {
            let mut sender = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                let list = idle.get_mut(&(id.to_owned(), port))?;
                list.pop()?
            };
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
        id: &str,
        port: u16,
        sender: SendRequest<Body>,
    ) -> Box<dyn FnOnce() + Send + Sync> {
        let idle = self.idle.clone();
        let key = (id.to_owned(), port);
        Box::new(move || {
            let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
            let list = idle.entry(key).or_default();
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
            .retain(|(sandbox, _), _| sandbox != id);
    }

    /// A connection to `port` if something accepts there now. The supervisor only says "no"
    /// (it hangs up when the port refuses), and a connection it has not served yet looks the
    /// same as one a server accepted, so the probe asks the server something harmless
    /// (`OPTIONS *`, which every HTTP server answers, if only with an error) and takes any
    /// answer — or a server holding the line for [`PROBE_WINDOW`] — as accepted.
    pub async fn probe(
        &self,
        socket: &Path,
        port: u16,
    ) -> Result<SendRequest<Body>, UpstreamError> {
        let mut stream = open(socket, port).await?;
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
        handshake(open(socket, port).await?).await
    }
}

/// Connects to the ingress socket and names the port.
async fn open(socket: &Path, port: u16) -> Result<UnixStream, UpstreamError> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(UpstreamError::Socket)?;
    stream
        .write_all(format!("{port}\n").as_bytes())
        .await
        .map_err(UpstreamError::Socket)?;
    Ok(stream)
}

/// HTTP/1.1 over `stream`, with upgrades (WebSocket) allowed; the connection is driven by
/// its own task until it closes.
async fn handshake(stream: UnixStream) -> Result<SendRequest<Body>, UpstreamError> {
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
