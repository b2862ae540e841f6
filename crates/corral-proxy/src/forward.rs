//! Absolute-URI HTTP/1.1 forwarding (`GET http://host/path`): an `http_request` decision, then
//! a `connect` decision, then the request passes upstream with its body streamed.

use std::sync::Arc;

use corral_policy::Action;
use http_body_util::BodyExt;
use hyper::header::{HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::gate::{Gate, Refusal, normalize};
use crate::{Body, reply};

/// Hop-by-hop headers (RFC 9110 §7.6.1) that a proxy must not pass on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Forwards one absolute-URI request.
pub async fn forward(request: Request<hyper::body::Incoming>, gate: Arc<Gate>) -> Response<Body> {
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
    let port = uri.port_u16().unwrap_or(80);
    let method = request.method().as_str().to_string();
    let decision = gate.decide(Action::HttpRequest {
        host: host.clone(),
        path: uri.path().to_string(),
        method: method.clone(),
    });
    if !decision.allowed {
        return reply::refusal(Refusal::Denied {
            what: format!("{method} http://{host}{}", uri.path()),
            profile: gate.profile_name(),
            reasons: decision.reasons,
        });
    }
    let stream = match gate.open(&host, port).await {
        Ok(stream) => stream,
        Err(refusal) => return reply::refusal(refusal),
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => {
                return reply::status(
                    StatusCode::BAD_GATEWAY,
                    format!("corral: {host}:{port}: {e}\n"),
                );
            }
        };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let (mut parts, body) = request.into_parts();
    parts.uri = match uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
    {
        Ok(origin_form) => origin_form,
        Err(_) => {
            return reply::status(
                StatusCode::BAD_REQUEST,
                "corral: bad request target\n".into(),
            );
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(HOST) {
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
        if let Ok(value) = HeaderValue::from_str(authority) {
            parts.headers.insert(HOST, value);
        }
    }
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => reply::status(
            StatusCode::BAD_GATEWAY,
            format!("corral: {host}:{port}: {e}\n"),
        ),
    }
}

/// Removes hop-by-hop headers, including any the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}
