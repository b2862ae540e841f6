//! The inference relay: requests for `http://127.0.0.1:3128/inference/...` (the proxy's own
//! address, where a sandbox's `ANTHROPIC_BASE_URL` and `OPENAI_BASE_URL` point) go to the
//! gateway's inference router over the sandbox's inference socket, and its answer streams
//! back unbuffered. Requests for the real provider hosts take the same way when the sandbox
//! has a router (`provider_host`).
//!
//! Threat model: the socket names the sandbox to the router, so nothing the agent sends can
//! claim another sandbox's identity; the router, not this relay, checks the placeholder key,
//! the policy and the budget. The relay adds nothing and holds no key.

use std::path::{Path, PathBuf};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::{Body, Shared, reply};

/// The path prefix the router serves.
pub(crate) const PREFIX: &str = "/inference/";

/// The proxy's port inside the sandbox (an absolute-form request to it is for the proxy).
const PROXY_PORT: u16 = 3128;

/// Headers that concern only the hop to the proxy.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Where the gateway's inference router for this sandbox listens.
#[derive(Debug, Clone)]
pub struct InferenceRoute {
    socket: PathBuf,
}

impl InferenceRoute {
    /// The router on the unix socket at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }
}

/// The router's path (and query) for `request`, when it is addressed to the router: an
/// origin-form `/inference/...` request (clients that honour `NO_PROXY=127.0.0.1` connect to
/// the proxy's address directly), an absolute-form one for the proxy's own address (clients
/// that send everything to the proxy), or an absolute-form one for a provider host the
/// router serves in the host's place.
pub(crate) fn router_path(request: &Request<Incoming>, shared: &Shared) -> Option<String> {
    let uri = request.uri();
    let own = uri.path().starts_with(PREFIX)
        && uri.host().is_none_or(|host| {
            matches!(host, "127.0.0.1" | "localhost") && uri.port_u16() == Some(PROXY_PORT)
        });
    if own {
        return Some(uri.path_and_query().map_or("/", |p| p.as_str()).to_owned());
    }
    crate::provider_host::absolute_request(request, shared)
}

/// Relays `request` to the router as a request for `path` (and query), or says why it
/// cannot.
pub(crate) async fn relay(
    request: Request<Incoming>,
    path: &str,
    route: Option<&InferenceRoute>,
) -> Response<Body> {
    let Some(route) = route else {
        return reply::status(
            StatusCode::NOT_FOUND,
            "corral: no inference router: this sandbox was not started by a corral gateway \
             (corral up), which routes /inference/ to model providers\n"
                .into(),
        );
    };
    match send(request, path, &route.socket).await {
        Ok(response) => response,
        Err(e) => reply::status(
            StatusCode::BAD_GATEWAY,
            format!("corral: the gateway's inference router did not answer: {e}\n"),
        ),
    }
}

async fn send(
    request: Request<Incoming>,
    path: &str,
    socket: &Path,
) -> Result<Response<Body>, String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "inference socket connection ended");
        }
    });
    let (mut parts, body) = request.into_parts();
    parts.uri = path.parse().map_err(|_| "bad request target".to_string())?;
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    let response = sender
        .send_request(Request::from_parts(parts, body.boxed()))
        .await
        .map_err(|e| e.to_string())?;
    let (mut parts, body) = response.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    Ok(Response::from_parts(parts, body.boxed()))
}
