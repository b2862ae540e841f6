//! Forwarding one request to a sandbox's port and its response back, streaming both bodies
//! frame by frame (no buffering, no timeout on a quiet stream), and handing an upgraded
//! connection (WebSocket) over to a byte pipe once the server answers 101.
//!
//! Headers: hop-by-hop headers (RFC 9110 §7.6.1, plus any the Connection header names) are
//! dropped in both directions, except the Upgrade/Connection pair of an upgrade; the
//! gateway's own credentials (its session-host cookie, and a corral token it authenticated
//! with) never reach the sandbox; X-Forwarded-For/Proto/Host carry what the client sent, so
//! an upstream Origin check (code-server's) sees the public host.

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Request, Response, StatusCode, Uri, Version};
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::activity::{Meter, Metered};
use super::reply;
use super::tickets::COOKIE;
use super::upstream::Upstream;
use crate::hop_by_hop::{self, connection_tokens};
use crate::runtime::Runtime;

/// Where a request goes: a connection to the sandbox's port, and how to make another.
pub struct Destination<'a> {
    /// A connection (kept or new) to the port.
    pub sender: SendRequest<Body>,
    /// Where the sandbox's ingress socket is (asked only when a new connection is needed).
    pub runtime: &'a Runtime,
    /// The port in the sandbox.
    pub port: u16,
}

/// What the request is and how the client reached the gateway.
pub struct Hop {
    /// Whether the client is a trusted proxy (whose X-Forwarded-* are kept and extended).
    pub trusted_peer: bool,
    /// The Host the client asked for.
    pub host: String,
    /// The client's IP address as a header value (made once per client connection).
    pub peer: HeaderValue,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Whether the request's Authorization header was corral's own (then it is removed).
    pub strip_authorization: bool,
}

/// Sends `parts` + `body` (with the path already stripped of any `/s/` prefix) on `sender`
/// and returns the sandbox's response, streamed. `sender` goes back to `upstream` when the
/// response has been read. A kept connection the server closed meanwhile is replaced by a new
/// one through `socket` (the request had not been sent on it).
pub async fn forward(
    upstream: &Upstream,
    destination: Destination<'_>,
    mut parts: Parts,
    body: Body,
    hop: Hop,
    meter: Meter,
) -> Response<Body> {
    let Destination {
        mut sender,
        runtime,
        port,
    } = destination;
    let upgrade = upgrade_protocol(&parts.headers);
    let client_upgrade = upgrade
        .is_some()
        .then(|| parts.extensions.remove::<OnUpgrade>())
        .flatten();
    rewrite_request_headers(&mut parts.headers, hop, upgrade.as_ref());
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    parts.version = Version::HTTP_11;
    parts.extensions = Default::default();
    let request = Request::from_parts(parts, Body::new(Metered::new(body, meter.clone())));
    let mut sent = sender.try_send_request(request).await;
    if let Err(e) = &mut sent
        && let Some(request) = e.take_message()
    {
        match upstream
            .fresh(&runtime.ingress_socket(&meter.id), port)
            .await
        {
            Ok(fresh) => {
                sender = fresh;
                sent = sender.try_send_request(request).await;
            }
            Err(e) => {
                tracing::info!(sandbox = %meter.id, port, error = %e, "sandbox port unreachable");
            }
        }
    }
    let mut response = match sent.map_err(|e| e.into_error()) {
        Ok(response) => response,
        Err(e) => {
            tracing::info!(sandbox = %meter.id, port, error = %e, "sandbox server failed the request");
            return reply::error(
                StatusCode::BAD_GATEWAY,
                "upstream_failed",
                format!(
                    "the sandbox's server on port {port} closed the connection without an \
                     answer: see the sandbox's logs"
                ),
            );
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client) = client_upgrade
    {
        let server = hyper::upgrade::on(&mut response);
        tokio::spawn(pipe(client, server, meter));
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, incoming) = response.into_parts();
    hop_by_hop::strip(&mut parts.headers);
    let give_back = upstream.returner(meter.id.clone(), port, sender);
    Response::from_parts(
        parts,
        Body::new(Metered::with_end(incoming, meter, give_back)),
    )
}

/// The protocol a request asks to upgrade to (`Connection: upgrade` + `Upgrade: X`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

fn rewrite_request_headers(headers: &mut HeaderMap, hop: Hop, upgrade: Option<&HeaderValue>) {
    hop_by_hop::strip(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    remove_cookie(headers, COOKIE);
    if hop.strip_authorization {
        headers.remove(header::AUTHORIZATION);
    }
    let prior = headers
        .get(&FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|_| hop.trusted_peer);
    match prior {
        Some(prior) => {
            let peer = hop.peer.to_str().unwrap_or_default();
            set(headers, FORWARDED_FOR, format!("{prior}, {peer}"));
        }
        None => {
            headers.insert(FORWARDED_FOR, hop.peer);
        }
    }
    if !(hop.trusted_peer && headers.contains_key(&FORWARDED_PROTO)) {
        headers.insert(FORWARDED_PROTO, HeaderValue::from_static(hop.scheme));
    }
    if !(hop.trusted_peer && headers.contains_key(&FORWARDED_HOST)) {
        set(headers, FORWARDED_HOST, hop.host);
    }
}

/// Sets `name` to `value` (taken, not copied), unless it cannot be a header value.
fn set(headers: &mut HeaderMap, name: HeaderName, value: String) {
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(name, value);
    }
}

/// Removes the cookie `name` from every Cookie header, keeping the others.
fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let named = |cookie: &str| cookie.split('=').next().map(str::trim) == Some(name);
    let cookies = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
    };
    if !cookies().any(named) {
        return;
    }
    let kept: Vec<&str> = cookies().filter(|c| !c.is_empty() && !named(c)).collect();
    let kept = kept.join("; ");
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        set(headers, header::COOKIE, kept);
    }
}

/// Carries an upgraded connection's bytes both ways until both sides end, counting them.
async fn pipe(client: OnUpgrade, server: OnUpgrade, meter: Meter) {
    let (client, server) = match tokio::try_join!(client, server) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let _open = meter.metrics.websocket_opened();
    let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
    let (server_read, server_write) = tokio::io::split(TokioIo::new(server));
    let meter = Arc::new(meter);
    tokio::join!(
        copy(client_read, server_write, meter.clone()),
        copy(server_read, client_write, meter),
    );
}

/// Copies until end of stream (then shuts the writer down), counting each chunk.
async fn copy(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    meter: Arc<Meter>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                meter.count(n);
                if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain-HTTP hop from `peer` to `abc.localhost`, with no corral token to strip.
    fn hop_from(peer: &'static str, trusted_peer: bool) -> Hop {
        Hop {
            peer: HeaderValue::from_static(peer),
            trusted_peer,
            host: "abc.localhost".into(),
            scheme: "http",
            strip_authorization: false,
        }
    }

    /// Headers as a client (or server) wrote them, names in any case.
    fn headers_of(pairs: &[(&str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    #[test]
    fn hop_by_hop_and_corral_credentials_do_not_reach_the_sandbox() {
        let mut headers = headers_of(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("cookie", "a=1; corral_host=secret; b=2"),
            ("authorization", "Bearer corral_x"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil"),
            ("accept", "text/html"),
        ]);
        let hop = Hop {
            host: "abc.localhost:7070".into(),
            strip_authorization: true,
            ..hop_from("10.0.0.9", false)
        };
        rewrite_request_headers(&mut headers, hop, None);
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "authorization",
        ] {
            assert!(!headers.contains_key(gone), "{gone}");
        }
        assert_eq!(headers["cookie"], "a=1; b=2");
        assert_eq!(
            headers["x-forwarded-for"], "10.0.0.9",
            "untrusted chain dropped"
        );
        assert_eq!(headers["x-forwarded-host"], "abc.localhost:7070");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["accept"], "text/html");
    }

    /// The common request (no hop-by-hop header, no corral cookie) reaches the sandbox with
    /// its own headers as the client wrote them, plus the X-Forwarded-* trio.
    #[test]
    fn a_plain_request_keeps_its_headers_as_written() {
        let mut headers = headers_of(&[
            ("cookie", "a=1;b=2"),
            ("accept", "*/*"),
            ("x-upgraded-by", "nobody"),
        ]);
        let hop = hop_from("127.0.0.1", false);
        rewrite_request_headers(&mut headers, hop, None);
        assert_eq!(headers["cookie"], "a=1;b=2");
        assert_eq!(headers["accept"], "*/*");
        assert_eq!(headers["x-upgraded-by"], "nobody");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers.len(), 6);
    }

    /// A response's hop-by-hop headers (in any case, as hyper hands them over lowercased)
    /// and those its Connection header names are dropped; end-to-end ones stay.
    #[test]
    fn response_hop_by_hop_headers_are_dropped() {
        let mut headers = headers_of(&[
            ("Connection", "X-Internal"),
            ("X-Internal", "1"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Content-Type", "text/plain"),
        ]);
        hop_by_hop::strip(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["content-type"], "text/plain");
    }

    #[test]
    fn an_upgrade_keeps_its_pair_and_a_trusted_chain_grows() {
        let mut headers = headers_of(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        let protocol = upgrade_protocol(&headers);
        assert_eq!(protocol.as_ref().unwrap(), "websocket");
        let hop = Hop {
            scheme: "https",
            ..hop_from("10.0.0.9", true)
        };
        rewrite_request_headers(&mut headers, hop, protocol.as_ref());
        assert_eq!(headers["connection"], "upgrade");
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
    }
}
