//! The proxy's own answers: denials that name the policy, and errors that say what to do.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};

use crate::Body;
use crate::gate::Refusal;

/// Header naming the policies that denied a request.
pub const DENY_HEADER: &str = "x-corral-deny";

/// A small text body.
pub fn text(body: String) -> Body {
    bytes(body.into_bytes())
}

/// A body of raw bytes.
pub fn bytes(body: Vec<u8>) -> Body {
    Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    text(String::new())
}

/// The response for a refusal: 403 for policy, 400 for a bad request, 502 for unreachable,
/// 421 for a request addressed to another host than its connection's.
pub fn refusal(refusal: Refusal) -> Response<Body> {
    match refusal {
        Refusal::Denied {
            what,
            profile,
            reasons,
        } => {
            let ids = reasons.join(", ");
            let body = format!(
                "corral: {what} denied by policy {ids} (profile {profile}).\n\
                 To allow it, add a rule to the profile's [network] allow list (or http rules), \
                 or pass --allow-net to corral run.\n"
            );
            let mut response = Response::new(text(body));
            *response.status_mut() = StatusCode::FORBIDDEN;
            if let Ok(value) = hyper::header::HeaderValue::from_str(&ids) {
                response.headers_mut().insert(DENY_HEADER, value);
            }
            response
        }
        Refusal::BadRequest(message) => {
            status(StatusCode::BAD_REQUEST, format!("corral: {message}\n"))
        }
        Refusal::Unreachable(message) => {
            status(StatusCode::BAD_GATEWAY, format!("corral: {message}\n"))
        }
        Refusal::Misdirected(message) => status(
            StatusCode::MISDIRECTED_REQUEST,
            format!("corral: {message}\n"),
        ),
    }
}

/// A response with `code` and a text body.
pub fn status(code: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(text(body));
    *response.status_mut() = code;
    response
}
