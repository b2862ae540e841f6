//! Absolute-URI HTTP/1.1 forwarding (`GET http://host/path`): the request goes to the host its
//! URI names, decided and guarded like any request the proxy can read.

use std::sync::Arc;

use hyper::{Request, Response, StatusCode};

use crate::exchange::{Target, Upstream, exchange};
use crate::gate::normalize;
use crate::{Body, Shared, reply};

/// Forwards one absolute-URI request.
pub async fn forward(
    request: Request<hyper::body::Incoming>,
    shared: Arc<Shared>,
) -> Response<Body> {
    let uri = request.uri().clone();
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return reply::status(
            StatusCode::BAD_REQUEST,
            format!(
                "corral: this is an egress proxy: send absolute http:// URLs or CONNECT host:port (got {uri})\n"
            ),
        );
    }
    let host = match normalize(uri.host().unwrap_or_default()) {
        Ok(host) => host,
        Err(refusal) => return reply::refusal(refusal),
    };
    let target = Target {
        host,
        port: uri.port_u16().unwrap_or(80),
        tls: false,
    };
    let mut upstream = Upstream::new(target, Arc::clone(&shared.gate), None, None);
    exchange(request, &mut upstream, &shared.credentials).await
}
