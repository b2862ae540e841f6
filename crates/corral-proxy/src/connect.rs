//! HTTP CONNECT: a decided TCP tunnel, with the TLS server name checked against the host that
//! was allowed before any byte reaches it.

use std::sync::Arc;

use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::gate::{Gate, normalize};
use crate::sni::{FirstBytes, inspect};
use crate::{Body, ProxyLimits, reply};

/// Bytes copied per read in each direction of a tunnel. tokio's default (8 KiB) costs a
/// syscall pair per 8 KiB: a 1 GiB download through the tunnel ran at 0.17–0.19× direct
/// loopback, 0.29–0.35× with 64 KiB (BENCHMARKS.md, "Egress"); 256 KiB gained little more.
/// The buffers are allocated per tunnel: 64 KiB each way is at most 32 MiB for a sandbox's
/// 256 connections.
const TUNNEL_BUFFER: usize = 64 * 1024;

/// Answers a CONNECT: decides and opens the upstream connection, then relays once the client
/// has switched to the tunnel.
pub async fn tunnel(
    request: Request<hyper::body::Incoming>,
    gate: Arc<Gate>,
    limits: Arc<ProxyLimits>,
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
    let upstream = match gate.open(&host, port).await {
        Ok(upstream) => upstream,
        Err(refusal) => return reply::refusal(refusal),
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                relay(
                    TokioIo::new(upgraded),
                    upstream,
                    &host,
                    port,
                    &gate,
                    &limits,
                )
                .await
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(reply::empty())
}

/// Relays bytes both ways once the first client bytes pass the server-name check.
async fn relay(
    mut client: TokioIo<hyper::upgrade::Upgraded>,
    mut upstream: TcpStream,
    host: &str,
    port: u16,
    gate: &Gate,
    limits: &ProxyLimits,
) {
    let mut first = Vec::new();
    let mut chunk = [0u8; 4096];
    let checked = tokio::time::timeout(limits.hello_timeout, async {
        loop {
            tokio::select! {
                read = client.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => return Err(()),
                    Ok(n) => first.extend_from_slice(&chunk[..n]),
                },
                // The server spoke first (SSH banners, SMTP…): not a TLS client, nothing to check.
                ready = upstream.readable() => {
                    if ready.is_err() { return Err(()); }
                    return Ok(());
                }
            }
            match inspect(&first) {
                FirstBytes::Incomplete => continue,
                FirstBytes::NotTls => return Ok(()),
                FirstBytes::ClientHello(None) => return Ok(()),
                FirstBytes::ClientHello(Some(name)) => {
                    return match normalize(&name) {
                        Ok(name) if name == host => Ok(()),
                        _ => {
                            gate.refuse_server_name(&name, host, port);
                            Err(())
                        }
                    };
                }
                FirstBytes::Malformed => {
                    gate.refuse_server_name("<unreadable ClientHello>", host, port);
                    return Err(());
                }
            }
        }
    })
    .await;
    if !matches!(checked, Ok(Ok(()))) {
        return;
    }
    if upstream.write_all(&first).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        TUNNEL_BUFFER,
        TUNNEL_BUFFER,
    )
    .await;
}
