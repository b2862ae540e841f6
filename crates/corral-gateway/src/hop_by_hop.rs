//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so a proxy never
//! passes them on, nor the headers a request's or response's Connection header names. One
//! list for the gateway's two proxies (session hosts and the inference router).

use axum::http::header::{self, HeaderMap, HeaderName};

/// Whether `name` is a hop-by-hop header, Upgrade included (an upgrade re-adds its pair).
/// A string match: comparing with each `HeaderName` costs more, and this runs for every
/// header of every proxied request and response.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The header names the Connection header lists, lowercased.
pub fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers and those the Connection header names.
pub fn strip(headers: &mut HeaderMap) {
    // Most requests and responses carry none: one pass over the names.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<String> = connection_tokens(headers).collect();
    for name in named {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(name);
        }
    }
    let hop_by_hop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    for name in hop_by_hop {
        headers.remove(name);
    }
}
