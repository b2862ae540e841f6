//! The ingress's own answers: JSON errors in the API's shape (`{"error":{"code","message"}}`)
//! and, for browsers, the small page shown while a stopped session starts.

use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use axum::http::{Response, StatusCode};

/// A JSON error.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    let body = serde_json::json!({ "error": { "code": code, "message": message.into() } });
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header(CACHE_CONTROL, "no-store")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

/// The 404 for a session host or `/s/` path the caller may not use: the same words whether
/// the sandbox does not exist or is someone else's.
pub fn not_found() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no sandbox here: check the address, or open the sandbox from the gateway's page",
    )
}

/// Whether the client is a browser navigating (it asks for HTML).
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// 503 "still starting": a page that reloads itself for browsers, JSON for others.
pub fn starting(html: bool, retry: Duration) -> Response<Body> {
    let seconds = retry.as_secs().max(1);
    if !html {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the sandbox is starting and its server does not accept connections yet: retry shortly",
        );
        if let Ok(value) = seconds.to_string().parse() {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        return response;
    }
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{seconds}\"><title>Starting…</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>Starting your sandbox…</h1>\
         <p>This page reloads by itself until its server is ready.</p></body></html>"
    );
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(CONTENT_TYPE, "text/html; charset=utf-8")
        .header(CACHE_CONTROL, "no-store")
        .header(RETRY_AFTER, seconds)
        .body(Body::from(page))
        .unwrap_or_default()
}
