//! HTTP CONNECT: a decided TCP tunnel. Its first bytes say what it carries: TLS, whose server
//! name must be the host that was allowed, is passed through untouched or, for hosts the
//! profile must read, intercepted; plain HTTP to such a host is read request by request; any
//! other protocol (SSH) passes through.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::http::uri::Authority;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{Client, ConnectHead, Opaque, Socket};
use crate::exchange::{Target, Upstream};
use crate::gate::{Refusal, normalize};
use crate::intercept::{serve_http, serve_tls};
use crate::provider_host::{self, RoutedHost};
use crate::replay::Replay;
use crate::sni::{FirstBytes, inspect};
use crate::traffic::{Metered, Tally, add_relayed};
use crate::{Body, Shared, reply};

/// Bytes copied per read in each direction of a tunnel that cannot splice (its client is
/// not a socket). tokio's default (8 KiB) costs a syscall pair per 8 KiB: a 1 GiB download
/// through the tunnel ran at 0.17–0.19× direct loopback, 0.29–0.35× with 64 KiB
/// (BENCHMARKS.md, "Egress").
const TUNNEL_BUFFER: usize = 64 * 1024;

/// Answers a CONNECT that hyper read (one following other requests on a kept connection):
/// decides and opens the upstream connection, then serves the tunnel once the client has
/// switched to it. A refused CONNECT closes the connection after the answer.
pub async fn tunnel(
    request: Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
) -> Response<Body> {
    let opened = match open_tunnel(request.uri().authority(), &shared).await {
        Ok(opened) => opened,
        Err(mut response) => {
            response.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            return response;
        }
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let client = Opaque(TokioIo::new(upgraded));
                serve(client, Vec::new(), opened, shared).await
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(reply::empty())
}

/// Answers a CONNECT read from the raw connection (its first request) and serves its
/// tunnel: no HTTP library between the client and the tunnel, so a passthrough tunnel from a
/// socket splices bytes. The answers are the same as [`tunnel`]'s; a refusal closes the
/// connection after the answer.
pub(crate) async fn tunnel_raw<C: Client>(mut client: C, head: ConnectHead, shared: Arc<Shared>) {
    let version = if head.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    match open_tunnel(head.target.authority(), &shared).await {
        Ok(opened) => {
            let answer = format!("{version} 200 OK\r\n\r\n");
            if client.write_all(answer.as_bytes()).await.is_ok() {
                serve(client, head.rest, opened, shared).await;
            }
        }
        Err(response) => {
            let answer = serialize(version, response).await;
            let _ = client.write_all(&answer).await;
            let _ = client.shutdown().await;
        }
    }
}

/// `response` as HTTP/1.x bytes, with its length and `Connection: close`.
async fn serialize(version: &str, response: Response<Body>) -> Vec<u8> {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    let status = parts.status;
    let mut out = format!(
        "{version} {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&body);
    out
}

/// A tunnel that was allowed: to its host, or to the inference router in a provider host's
/// place.
enum Tunnel {
    Host(Opened),
    Router(RoutedHost),
}

/// A tunnel to its host: its upstream connection and what it is for.
struct Opened {
    upstream: TcpStream,
    target: Target,
    /// Whether the profile must read this host's traffic (interception).
    inspect_host: bool,
}

/// Decides a CONNECT to `authority` and opens its upstream connection, or says why not.
async fn open_tunnel(
    authority: Option<&Authority>,
    shared: &Shared,
) -> Result<Tunnel, Response<Body>> {
    let Some(authority) = authority else {
        return Err(reply::status(
            StatusCode::BAD_REQUEST,
            "corral: CONNECT needs host:port\n".into(),
        ));
    };
    let Some(port) = authority.port_u16() else {
        return Err(reply::status(
            StatusCode::BAD_REQUEST,
            format!("corral: CONNECT {authority} has no port\n"),
        ));
    };
    let host = normalize(authority.host()).map_err(reply::refusal)?;
    if let Some(routed) = provider_host::routed(&host, port, shared) {
        return provider_host::open(routed, shared)
            .map(Tunnel::Router)
            .map_err(reply::refusal);
    }
    let inspect_host = shared.must_inspect(&host);
    if inspect_host && let Err(why) = &shared.interception {
        return Err(reply::refusal(Refusal::Unreachable(format!(
            "the profile must read traffic to {host} (HTTP rules, a guarded git host or an \
             injected credential), but TLS interception is unavailable: {why}"
        ))));
    }
    let upstream = shared
        .gate
        .open(&host, port)
        .await
        .map_err(reply::refusal)?;
    Ok(Tunnel::Host(Opened {
        upstream,
        target: Target {
            host,
            port,
            tls: false,
        },
        inspect_host,
    }))
}

/// What a tunnel turned out to carry, from its first bytes.
enum Carried {
    /// TLS whose server name is the allowed host (or absent).
    Tls,
    /// The server spoke first, or the client sent something else that is not to be read.
    Opaque,
    /// Plain bytes from the client, which may be HTTP.
    Plain,
}

/// Reads the tunnel's first bytes (`first`: those already read with the request head),
/// checks a TLS server name, and hands the tunnel to interception, request-by-request
/// serving, or a byte relay.
async fn serve<C: Client>(mut client: C, mut first: Vec<u8>, tunnel: Tunnel, shared: Arc<Shared>) {
    let opened = match tunnel {
        Tunnel::Host(opened) => opened,
        Tunnel::Router(routed) => return provider_host::serve(client, first, routed, shared).await,
    };
    let Opened {
        upstream,
        target,
        inspect_host,
    } = opened;
    let carried = tokio::time::timeout(
        shared.limits.hello_timeout,
        first_bytes(&mut client, &upstream, &mut first, &target, &shared),
    )
    .await;
    let carried = match carried {
        Ok(Ok(carried)) => carried,
        Ok(Err(())) | Err(_) => return,
    };
    match carried {
        Carried::Tls if inspect_host => {
            let target = Target {
                tls: true,
                ..target
            };
            serve_tls(Replay::new(first, client), upstream, target, shared).await
        }
        Carried::Plain if inspect_host => {
            let upstream = Upstream::new(target, Arc::clone(&shared.gate), None, Some(upstream));
            serve_http(Replay::new(first, client), upstream, shared).await
        }
        _ => {
            let tally = shared.gate.tally(&target.host, target.port);
            pass_through(client, first, upstream, tally).await
        }
    }
}

/// Relays a tunnel untouched, `first` (already read from the client) first: spliced between
/// the sockets when the client is one, copied otherwise; its bytes are added to `tally`.
async fn pass_through<C: Client>(
    client: C,
    first: Vec<u8>,
    mut upstream: TcpStream,
    mut tally: Option<Tally>,
) {
    if upstream.write_all(&first).await.is_err() {
        return;
    }
    if let Some(tally) = &mut tally {
        tally.add(first.len() as u64, 0);
    }
    match client.into_socket() {
        Ok(Socket::Unix(client)) => {
            add_relayed(&mut tally, corral_splice::relay(&client, &upstream).await);
        }
        Ok(Socket::Tcp(client)) => {
            add_relayed(&mut tally, corral_splice::relay(&client, &upstream).await);
        }
        Err(mut client) => {
            let mut upstream = Metered::new(upstream, tally);
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut client,
                &mut upstream,
                TUNNEL_BUFFER,
                TUNNEL_BUFFER,
            )
            .await;
            let _ = upstream.shutdown().await;
        }
    }
}

/// Buffers the client's first bytes into `first` (which may already hold some) until their
/// protocol is known.
async fn first_bytes<C: Client>(
    client: &mut C,
    upstream: &TcpStream,
    first: &mut Vec<u8>,
    target: &Target,
    shared: &Shared,
) -> Result<Carried, ()> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(carried) = classify(first, target, shared) {
            return carried;
        }
        tokio::select! {
            read = client.read(&mut chunk) => match read {
                Ok(0) | Err(_) => return Err(()),
                Ok(n) => first.extend_from_slice(&chunk[..n]),
            },
            // The server spoke first (SSH banners, SMTP…): not a TLS client, nothing to check.
            ready = upstream.readable() => {
                return if ready.is_err() { Err(()) } else { Ok(Carried::Opaque) };
            }
        }
    }
}

/// What `first` carries (`None`: more bytes are needed); `Err` for a TLS server name other
/// than the allowed host, or a ClientHello that cannot be read (both recorded).
fn classify(first: &[u8], target: &Target, shared: &Shared) -> Option<Result<Carried, ()>> {
    Some(match inspect(first) {
        FirstBytes::Incomplete => return None,
        FirstBytes::NotTls if first.starts_with(b"SSH-") => Ok(Carried::Opaque),
        FirstBytes::NotTls => Ok(Carried::Plain),
        FirstBytes::ClientHello(None) => Ok(Carried::Tls),
        FirstBytes::ClientHello(Some(name)) => match normalize(&name) {
            Ok(name) if name == target.host => Ok(Carried::Tls),
            _ => {
                shared
                    .gate
                    .refuse_server_name(&name, &target.host, target.port);
                Err(())
            }
        },
        FirstBytes::Malformed => {
            shared
                .gate
                .refuse_server_name("<unreadable ClientHello>", &target.host, target.port);
            Err(())
        }
    })
}
