//! Tickets and session-host cookies: random 256-bit values handed out once and kept in the
//! store only as SHA-256 hashes (like API tokens), each bound to one user and one sandbox.
//!
//! Why a ticket and not the gateway's own cookie: a cookie set for the gateway's host is
//! never sent to a session host (and must not be: a sandbox's server sees what its host is
//! sent). So the web page asks the API for a ticket, the browser opens
//! `<session host>/_corral/auth?ticket=...`, and the session host swaps the ticket (single
//! use, short-lived) for a cookie of its own: host-only (no Domain attribute, so sibling
//! session hosts never see it), HttpOnly, SameSite=Lax, Secure under TLS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::auth::{AuthError, token_hash};

/// The path on every session host that spends a ticket.
pub const AUTH_PATH: &str = "/_corral/auth";
/// Name of the session host's cookie. The gateway removes it before a request reaches the
/// sandbox.
pub const COOKIE: &str = "corral_host";
/// How long a ticket may wait to be spent.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// How long a session-host cookie lasts.
pub const COOKIE_TTL: Duration = Duration::from_secs(12 * 3600);

/// A new random secret and its hash (what the store keeps).
pub fn new_secret() -> Result<(String, String), AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(AuthError::Random)?;
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&secret);
    Ok((secret, hash))
}

/// Unix seconds `ttl` from now.
pub fn expiry(ttl: Duration) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (now + ttl.as_secs()) as i64
}

/// The `Set-Cookie` value for a new session-host cookie.
pub fn set_cookie(secret: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={secret}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
        COOKIE_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}
