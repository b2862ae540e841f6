//! Serving the listener's connections: HTTP/1.1 (the only protocol it offers, in TLS's ALPN
//! too) through hyper, each request to the [`Front`], upgrades (WebSocket) handed on, and a
//! limit on how long a client may take to send a request's head. Replaces `axum::serve`,
//! which offers no way to set that limit: without it a client that trickles a header a byte
//! at a time, or opens connections and sends nothing, holds each connection (a file
//! descriptor and a task) for as long as it likes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::ingress::front::{Front, Peer};

/// How long a client may take to send a request's head: on a new connection from the
/// accept, on a kept one from the end of the previous response (so it also closes kept
/// connections left idle that long, as nginx's `client_header_timeout`/`keepalive_timeout`
/// do). Request and response bodies, SSE streams and WebSockets are not limited by it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connections get after a shutdown to finish the request in flight. A stream that
/// never ends (an agent's event stream, which its web UI keeps open; a stalled upload) must
/// not keep the gateway from exiting; what is still open then is cut.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Serves every connection `listener` accepts until `shutdown` resolves; then stops
/// accepting, lets each connection finish the request in flight and returns once all have
/// closed or [`DRAIN`] has passed (upgraded connections live on by themselves).
pub async fn serve<L>(mut listener: L, front: Front, shutdown: impl Future<Output = ()>)
where
    L: Listener<Addr = SocketAddr>,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // Connection tasks hold a receiver each: `closing` tells them to finish, and the sender
    // sees all receivers gone once they have.
    let (closing, connections) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (front, peer) = (front.clone(), Peer::new(addr));
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let (front, peer) = (front.clone(), peer.clone());
            async move { Ok::<_, Infallible>(front.handle(peer, request.map(Body::new)).await) }
        });
        let connection = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut closing = connections.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                ended = connection.as_mut() => log_end(ended),
                _ = closing.changed() => {
                    connection.as_mut().graceful_shutdown();
                    log_end(connection.await);
                }
            }
        });
    }
    drop(listener);
    drop(connections);
    let _ = closing.send(());
    if tokio::time::timeout(DRAIN, closing.closed()).await.is_err() {
        tracing::info!(
            connections = closing.receiver_count(),
            "requests still in flight after {}s: cut",
            DRAIN.as_secs()
        );
    }
}

fn log_end(ended: Result<(), hyper::Error>) {
    if let Err(e) = ended {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}
