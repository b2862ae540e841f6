//! The gateway's front door: the service hyper calls for each request. A request for a
//! session host goes straight to the ingress; everything else (the gateway's own host: the
//! API, the web pages, `/s/` paths, `/metrics`) through [`super::dispatch`] to the axum
//! router. Session-host requests are the hot path (every asset, API call and event of an
//! agent's web UI), and skipping the router's route matching, boxed-service clones and
//! middleware for them is a measurable share of the gateway's CPU per proxied request
//! (BENCHMARKS.md, Ingress).

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, Response};
use axum::serve::{IncomingStream, Listener};
use tower_service::Service;

use super::{Ingress, dispatch};

/// Makes a [`Front`] for each accepted connection (what `axum::serve` takes).
#[derive(Clone)]
pub struct MakeFront {
    ingress: Arc<Ingress>,
    api: Router,
}

impl MakeFront {
    /// The front door for `ingress` and the API/web router `api`.
    pub fn new(ingress: Arc<Ingress>, api: Router) -> Self {
        Self { ingress, api }
    }
}

impl<L: Listener<Addr = SocketAddr>> Service<IncomingStream<'_, L>> for MakeFront {
    type Response = Front;
    type Error = Infallible;
    type Future = Ready<Result<Front, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, connection: IncomingStream<'_, L>) -> Self::Future {
        ready(Ok(Front {
            ingress: self.ingress.clone(),
            api: self.api.clone(),
            peer: Peer::new(*connection.remote_addr()),
        }))
    }
}

/// The service of one client connection.
#[derive(Clone)]
pub struct Front {
    ingress: Arc<Ingress>,
    api: Router,
    peer: Peer,
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
    fn new(addr: SocketAddr) -> Self {
        let header = HeaderValue::try_from(addr.ip().to_string())
            .expect("an IP address is a valid header value");
        Self { addr, header }
    }
}

impl Service<Request> for Front {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Front { ingress, api, peer } = self.clone();
        Box::pin(async move { Ok(dispatch(ingress, peer, request, api).await) })
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
