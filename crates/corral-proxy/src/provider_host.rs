//! The real provider hosts (`api.anthropic.com`, `api.openai.com`) in a sandbox that has an
//! inference router: a CONNECT to one of them (or an absolute-URI request for one) never
//! leaves the machine. The tunnel's TLS is terminated with corral's CA (which the sandbox
//! trusts) and every request inside goes to the router exactly as if it had been sent to the
//! sandbox's `ANTHROPIC_BASE_URL` / `OPENAI_BASE_URL`, so tools that ignore those settings are
//! routed too: `/v1/messages` on `api.anthropic.com` becomes `/inference/@anthropic/v1/messages`
//! on the inference socket, and the router serves `@KIND` with its provider of that kind (the
//! one the base URLs name).
//!
//! Threat model and the choices made:
//! - The real host is never resolved or contacted by the proxy for these requests: no
//!   upstream connection is opened, so nothing reaches the provider but what the router sends.
//! - The egress `connect` decision is not asked for these hosts: they are reached only through
//!   the router, whose checks govern every request, as they govern a base-URL request (which
//!   no `connect` rule governs either): the sandbox's placeholder key, the `inference` policy
//!   (provider, model), the owner's budget and the sandbox's rate limit. A profile's `connect`
//!   and `[http]` rules for these hosts therefore do not apply while a router serves the
//!   sandbox; `[inference]` rules are where a profile limits model use. The audit shows what
//!   happened: the tunnel as a `connect` event allowed by [`ROUTED`], each request as its
//!   `inference` decision (recorded by the router).
//! - The interception certificate is issued only for the tunnel's host, and a ClientHello
//!   naming another server is refused and recorded (`sni-mismatch`), as for any tunnel.
//! - The proxy adds no key: the agent's own `x-api-key` / `Authorization` goes to the router,
//!   which accepts only the sandbox's placeholder and puts the real key in its place.
//! - Without a router (a plain `corral run`) these hosts are ordinary egress.

use std::sync::Arc;

use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::Shared;
use crate::gate::{Refusal, normalize};
use crate::inference;
use crate::replay::Replay;
use crate::sni::{FirstBytes, inspect};

/// The reason recorded for a connection to a provider host that the router served in the
/// host's place.
pub const ROUTED: &str = "inference-router";

/// The provider hosts routed, each with the provider kind the router serves it with.
const PROVIDER_HOSTS: &[(&str, &str)] = &[
    ("api.anthropic.com", "anthropic"),
    ("api.openai.com", "openai"),
];

/// A connection to a provider host that the router serves instead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoutedHost {
    host: &'static str,
    kind: &'static str,
    port: u16,
}

impl RoutedHost {
    /// The router's path for `path_and_query` sent to this host.
    fn router_path(&self, path_and_query: &str) -> String {
        let path = path_and_query.strip_prefix('/').unwrap_or(path_and_query);
        format!("{}@{}/{path}", inference::PREFIX, self.kind)
    }
}

/// Where `host:port` (`host` normalized) is routed, when this sandbox has a router and it
/// names a provider host on the HTTPS or HTTP port.
pub(crate) fn routed(host: &str, port: u16, shared: &Shared) -> Option<RoutedHost> {
    shared.inference.as_ref()?;
    if !matches!(port, 443 | 80) {
        return None;
    }
    PROVIDER_HOSTS
        .iter()
        .find(|(name, _)| *name == host)
        .map(|&(host, kind)| RoutedHost { host, kind, port })
}

/// Accepts a CONNECT to `routed`: recorded, and answered only when interception is
/// available (the router cannot read TLS it cannot terminate).
pub(crate) fn open(routed: RoutedHost, shared: &Shared) -> Result<RoutedHost, Refusal> {
    if let Err(why) = &shared.interception {
        return Err(Refusal::Unreachable(format!(
            "{} is served by corral's inference router, which needs TLS interception, but it \
             is unavailable: {why}",
            routed.host
        )));
    }
    shared.gate.record_routed(routed.host, routed.port, ROUTED);
    Ok(routed)
}

/// The router's path for an absolute-URI request to a provider host (recorded as routed),
/// when this sandbox has a router.
pub(crate) fn absolute_request(request: &Request<Incoming>, shared: &Shared) -> Option<String> {
    let uri = request.uri();
    let default_port = match uri.scheme_str()? {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let host = normalize(uri.host()?).ok()?;
    let routed = routed(&host, uri.port_u16().unwrap_or(default_port), shared)?;
    shared.gate.record_routed(routed.host, routed.port, ROUTED);
    Some(routed.router_path(uri.path_and_query().map_or("/", |p| p.as_str())))
}

/// Serves an accepted tunnel to `routed` (`first`: bytes already read from it): TLS is
/// terminated with a certificate for the host, plain HTTP is read as it is, and each request
/// goes to the router.
pub(crate) async fn serve<C>(
    mut client: C,
    mut first: Vec<u8>,
    routed: RoutedHost,
    shared: Arc<Shared>,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let read = tokio::time::timeout(
        shared.limits.hello_timeout,
        first_bytes(&mut client, &mut first),
    )
    .await;
    let Ok(Some(carried)) = read else {
        return;
    };
    let client = Replay::new(first, client);
    match carried {
        FirstBytes::ClientHello(Some(name))
            if normalize(&name).ok().as_deref() != Some(routed.host) =>
        {
            shared
                .gate
                .refuse_server_name(&name, routed.host, routed.port);
        }
        FirstBytes::ClientHello(_) => serve_tls(client, routed, shared).await,
        FirstBytes::NotTls => serve_http(client, routed, shared).await,
        FirstBytes::Malformed | FirstBytes::Incomplete => {
            shared
                .gate
                .refuse_server_name("<unreadable ClientHello>", routed.host, routed.port);
        }
    }
}

/// Reads the client's first bytes into `first` until it is known what they are (`None`: the
/// client went away).
async fn first_bytes<C: AsyncRead + Unpin>(
    client: &mut C,
    first: &mut Vec<u8>,
) -> Option<FirstBytes> {
    let mut chunk = [0u8; 4096];
    loop {
        match inspect(first) {
            FirstBytes::Incomplete => {}
            known => return Some(known),
        }
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => first.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Terminates the sandbox's TLS with a certificate for the routed host, then serves it.
async fn serve_tls<S>(client: S, routed: RoutedHost, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(interception) = &shared.interception else {
        return;
    };
    let config = match interception.server_config(routed.host) {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(host = routed.host, error = %e, "cannot issue an interception certificate");
            return;
        }
    };
    let accepted = tokio::time::timeout(
        shared.limits.hello_timeout,
        tokio_rustls::TlsAcceptor::from(config).accept(client),
    )
    .await;
    match accepted {
        Ok(Ok(tls)) => serve_http(tls, routed, shared).await,
        Ok(Err(e)) => {
            tracing::debug!(host = routed.host, error = %e, "sandbox TLS handshake failed");
        }
        Err(_) => {}
    }
}

/// Serves HTTP/1.1 requests read from `client`, each relayed to the router.
async fn serve_http<S>(client: S, routed: RoutedHost, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_shared = Arc::clone(&shared);
    let service = service_fn(move |request: Request<Incoming>| {
        let shared = Arc::clone(&service_shared);
        async move {
            let path =
                routed.router_path(request.uri().path_and_query().map_or("/", |p| p.as_str()));
            Ok::<_, std::convert::Infallible>(
                inference::relay(request, &path, shared.inference.as_ref()).await,
            )
        }
    });
    let served = shared
        .limits
        .http1_server()
        .serve_connection(TokioIo::new(client), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(host = routed.host, error = %e, "routed provider connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_host_s_paths_go_to_the_router_under_its_kind() {
        let anthropic = RoutedHost {
            host: "api.anthropic.com",
            kind: "anthropic",
            port: 443,
        };
        assert_eq!(
            anthropic.router_path("/v1/messages?beta=true"),
            "/inference/@anthropic/v1/messages?beta=true"
        );
        assert_eq!(anthropic.router_path("*"), "/inference/@anthropic/*");
    }
}
