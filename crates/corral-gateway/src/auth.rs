//! Credentials: API tokens, passwords and the identity a trusted auth proxy vouches for.
//!
//! Threat model: anyone can reach the listening port. A token is 256 random bits, so it
//! cannot be guessed; the store keeps only its SHA-256, so a leaked database does not leak
//! working tokens (a fast hash is enough for random values, and a slow one on every request
//! would cap throughput). Passwords are people's and guessable, so they get argon2id. An
//! identity header (`X-Forwarded-Email`, `X-Auth-Request-Email`) is believed only from a peer
//! address the operator listed in `trusted_proxies`; from anyone else it is ignored, since
//! any client can send it.

use std::net::IpAddr;
use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Prefix of every token corral makes, so a leaked one is recognisable (secret scanners).
pub const TOKEN_PREFIX: &str = "corral_";

/// Headers an auth proxy (oauth2-proxy) puts the signed-in user's email in.
pub const IDENTITY_HEADERS: [&str; 2] = ["x-forwarded-email", "x-auth-request-email"];

/// Why a credential could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The operating system's random source failed.
    #[error("no randomness from the operating system: {0}")]
    Random(getrandom::Error),
    /// argon2 refused to hash (it only does for absurd parameters or lengths).
    #[error("cannot hash the password: {0}")]
    Hash(argon2::password_hash::Error),
}

/// A new API token: `corral_` and 256 random bits in base64url.
pub fn new_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(AuthError::Random)?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The hex SHA-256 of a token: what the store keeps and looks tokens up by.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// `n` random bytes as hex (for random sandbox ids).
pub fn random_hex(n: usize) -> Result<String, AuthError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(AuthError::Random)?;
    Ok(hex(&bytes))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Two table look-ups a byte: this runs on every request that carries a token.
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// An argon2id hash of `password` in PHC format, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(AuthError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(AuthError::Hash)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(AuthError::Hash)
}

/// Whether `password` matches `phc`, or, when there is no hash (no such user, or a user
/// without a password), `false` after the same work, so timing does not tell which.
pub fn verify_password(password: &str, phc: Option<&str>) -> bool {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("corral-dummy-password").ok());
    let (target, real) = match phc {
        Some(phc) => (Some(phc), true),
        None => (dummy.as_deref(), false),
    };
    let Some(parsed) = target.and_then(|t| PasswordHash::new(t).ok()) else {
        return false;
    };
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    matches && real
}

/// Whether `peer` is one of the `trusted` proxies (IPv4-mapped IPv6 counts as IPv4).
pub fn is_trusted_peer(peer: IpAddr, trusted: &[IpAddr]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|t| t.to_canonical() == peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_two_lowercase_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43, "256 bits in base64url");
        assert_eq!(token_hash(&a).len(), 64);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", Some(&phc)));
        assert!(!verify_password("wrong", Some(&phc)));
        assert!(!verify_password("correct horse", None));
        assert!(!verify_password("x", Some("not a phc string")));
    }

    #[test]
    fn trusted_peers() {
        let trusted: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap()];
        assert!(is_trusted_peer("10.0.0.1".parse().unwrap(), &trusted));
        assert!(is_trusted_peer(
            "::ffff:10.0.0.1".parse().unwrap(),
            &trusted
        ));
        assert!(!is_trusted_peer("10.0.0.2".parse().unwrap(), &trusted));
        assert!(!is_trusted_peer("127.0.0.1".parse().unwrap(), &[]));
    }
}
