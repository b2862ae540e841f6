//! The gateway's front door: what every request meets first. A request for a session host
//! goes straight to the ingress; everything else (the gateway's own host: the API, the web
//! pages, `/s/` paths, `/metrics`) through [`super::dispatch`] to the axum router.
//! Session-host requests are the hot path (every asset, API call and event of an agent's web
//! UI), and skipping the router's route matching, boxed-service clones and middleware for
//! them is a measurable share of the gateway's CPU per proxied request (BENCHMARKS.md,
//! Ingress).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, Response};
use tower_service::Service;

use super::{Ingress, dispatch};

/// The front door of a gateway: its ingress and its API/web router.
#[derive(Clone)]
pub struct Front {
    ingress: Arc<Ingress>,
    api: Router,
}

impl Front {
    /// The front door for `ingress` and the API/web router `api`.
    pub fn new(ingress: Arc<Ingress>, api: Router) -> Self {
        Self { ingress, api }
    }

    /// Answers one request from the client at `peer`.
    pub async fn handle(self, peer: Peer, request: Request) -> Response<Body> {
        dispatch(self.ingress, peer, request, self.api).await
    }
}

/// The client at the other end of a connection.
#[derive(Clone)]
pub struct Peer {
    /// Its address.
    pub addr: SocketAddr,
    /// Its IP address as a header value (X-Forwarded-For), made once per connection.
    pub header: HeaderValue,
}

impl Peer {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let header = HeaderValue::try_from(addr.ip().to_string())
            .expect("an IP address is a valid header value");
        Self { addr, header }
    }
}

/// Hands `request` to the API/web router, which learns the client's address as axum's
/// `ConnectInfo`.
pub async fn to_api(mut api: Router, peer: SocketAddr, mut request: Request) -> Response<Body> {
    request.extensions_mut().insert(ConnectInfo(peer));
    match api.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
