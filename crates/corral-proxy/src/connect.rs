//! HTTP CONNECT: a decided TCP tunnel. Its first bytes say what it carries: TLS, whose server
//! name must be the host that was allowed, is passed through untouched or, for hosts the
//! profile must read, intercepted; plain HTTP to such a host is read request by request; any
//! other protocol (SSH) passes through.

use std::sync::Arc;

use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::exchange::{Target, Upstream};
use crate::gate::{Refusal, normalize};
use crate::intercept::{serve_http, serve_tls};
use crate::replay::Replay;
use crate::sni::{FirstBytes, inspect};
use crate::{Body, Shared, reply};

/// Bytes copied per read in each direction of a tunnel. tokio's default (8 KiB) costs a
/// syscall pair per 8 KiB: a 1 GiB download through the tunnel ran at 0.17–0.19× direct
/// loopback, 0.29–0.35× with 64 KiB (BENCHMARKS.md, "Egress"); 256 KiB gained little more.
/// The buffers are allocated per tunnel: 64 KiB each way is at most 32 MiB for a sandbox's
/// 256 connections.
const TUNNEL_BUFFER: usize = 64 * 1024;

/// Answers a CONNECT: decides and opens the upstream connection, then serves the tunnel once
/// the client has switched to it. A refused CONNECT closes the connection after the answer.
pub async fn tunnel(
    request: Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
) -> Response<Body> {
    let mut response = open_tunnel(request, shared).await;
    if response.status() != StatusCode::OK {
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    response
}

async fn open_tunnel(
    request: Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
) -> Response<Body> {
    let Some(authority) = request.uri().authority().cloned() else {
        return reply::status(
            StatusCode::BAD_REQUEST,
            "corral: CONNECT needs host:port\n".into(),
        );
    };
    let Some(port) = authority.port_u16() else {
        return reply::status(
            StatusCode::BAD_REQUEST,
            format!("corral: CONNECT {authority} has no port\n"),
        );
    };
    let host = match normalize(authority.host()) {
        Ok(host) => host,
        Err(refusal) => return reply::refusal(refusal),
    };
    let inspect_host = shared.must_inspect(&host);
    if inspect_host && let Err(why) = &shared.interception {
        return reply::refusal(Refusal::Unreachable(format!(
            "the profile must read traffic to {host} (HTTP rules, a guarded git host or an \
             injected credential), but TLS interception is unavailable: {why}"
        )));
    }
    let upstream = match shared.gate.open(&host, port).await {
        Ok(upstream) => upstream,
        Err(refusal) => return reply::refusal(refusal),
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let target = Target {
                    host,
                    port,
                    tls: false,
                };
                serve(
                    TokioIo::new(upgraded),
                    upstream,
                    target,
                    inspect_host,
                    shared,
                )
                .await
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(reply::empty())
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

/// Reads the tunnel's first bytes, checks a TLS server name, and hands the tunnel to
/// interception, request-by-request serving, or a byte relay.
async fn serve(
    mut client: TokioIo<hyper::upgrade::Upgraded>,
    mut upstream: TcpStream,
    target: Target,
    inspect_host: bool,
    shared: Arc<Shared>,
) {
    let mut first = Vec::new();
    let carried = tokio::time::timeout(
        shared.limits.hello_timeout,
        first_bytes(&mut client, &upstream, &mut first, &target, &shared),
    )
    .await;
    let carried = match carried {
        Ok(Ok(carried)) => carried,
        Ok(Err(())) | Err(_) => return,
    };
    let client = Replay::new(first, client);
    match carried {
        Carried::Tls if inspect_host => {
            let target = Target {
                tls: true,
                ..target
            };
            serve_tls(client, upstream, target, shared).await
        }
        Carried::Plain if inspect_host => {
            let upstream = Upstream::new(target, Arc::clone(&shared.gate), None, Some(upstream));
            serve_http(client, upstream, shared).await
        }
        _ => {
            let mut client = client;
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

/// Buffers the client's first bytes into `first` until their protocol is known.
async fn first_bytes(
    client: &mut TokioIo<hyper::upgrade::Upgraded>,
    upstream: &TcpStream,
    first: &mut Vec<u8>,
    target: &Target,
    shared: &Shared,
) -> Result<Carried, ()> {
    let mut chunk = [0u8; 4096];
    loop {
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
        match inspect(first) {
            FirstBytes::Incomplete => continue,
            FirstBytes::NotTls if first.starts_with(b"SSH-") => return Ok(Carried::Opaque),
            FirstBytes::NotTls => return Ok(Carried::Plain),
            FirstBytes::ClientHello(None) => return Ok(Carried::Tls),
            FirstBytes::ClientHello(Some(name)) => {
                return match normalize(&name) {
                    Ok(name) if name == target.host => Ok(Carried::Tls),
                    _ => {
                        shared
                            .gate
                            .refuse_server_name(&name, &target.host, target.port);
                        Err(())
                    }
                };
            }
            FirstBytes::Malformed => {
                shared.gate.refuse_server_name(
                    "<unreadable ClientHello>",
                    &target.host,
                    target.port,
                );
                return Err(());
            }
        }
    }
}
