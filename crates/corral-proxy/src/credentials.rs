//! Credentials the proxy adds on the way out, so a sandbox never holds them: a git token
//! configured for a host becomes that host's `Authorization` header, and whatever
//! `Authorization` the agent sent to that host is dropped.
//!
//! Threat model: the token is read on the host side (an environment variable or a file of the
//! person running corral) and lives only in this process; it is marked sensitive so hyper
//! never logs it, and nothing here formats it into a message.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use hyper::header::HeaderValue;

/// User name sent with a bare token: GitHub, Gitea and Forgejo accept any user name with a
/// token as the password; GitLab accepts `oauth2` or any name for personal access tokens.
pub const TOKEN_USER: &str = "x-access-token";

/// Why a credential could not be added.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The token is empty or holds characters a header cannot carry.
    #[error("the token for {host} is empty or contains a line break or control character")]
    BadToken {
        /// The host the token was for.
        host: String,
    },
    /// The host is not a host name.
    #[error("{0}")]
    BadHost(String),
}

/// `Authorization` headers per host, added by the proxy to requests it can read (intercepted
/// HTTPS and plain HTTP).
#[derive(Clone, Default)]
pub struct Credentials {
    by_host: HashMap<String, HeaderValue>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hosts: Vec<&String> = self.by_host.keys().collect();
        hosts.sort();
        f.debug_struct("Credentials")
            .field("hosts", &hosts)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// No credentials.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a git token for `host`: HTTP Basic with `user:password` when the token holds a
    /// colon, else with [`TOKEN_USER`] and the token as the password. Surrounding whitespace
    /// (a file's trailing newline) is ignored.
    pub fn add_token(&mut self, host: &str, token: &str) -> Result<(), CredentialError> {
        let host = corral_policy::normalize_host(host).map_err(CredentialError::BadHost)?;
        let token = token.trim();
        if token.is_empty() || token.chars().any(char::is_control) {
            return Err(CredentialError::BadToken { host });
        }
        let pair = if token.contains(':') {
            token.to_string()
        } else {
            format!("{TOKEN_USER}:{token}")
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| CredentialError::BadToken { host: host.clone() })?;
        value.set_sensitive(true);
        self.by_host.insert(host, value);
        Ok(())
    }

    /// The header to send to `host` (already normalized), if one is configured.
    pub fn for_host(&self, host: &str) -> Option<&HeaderValue> {
        self.by_host.get(host)
    }

    /// Whether any credential is configured.
    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_token_becomes_basic_auth_and_never_shows_in_debug() {
        let mut credentials = Credentials::new();
        credentials
            .add_token("GitHub.com.", "s3cret-token\n")
            .unwrap();
        let value = credentials.for_host("github.com").unwrap();
        let expected =
            base64::engine::general_purpose::STANDARD.encode("x-access-token:s3cret-token");
        assert_eq!(value.to_str().unwrap(), format!("Basic {expected}"));
        assert!(value.is_sensitive());
        assert!(!format!("{credentials:?}").contains("s3cret"));
        assert!(format!("{value:?}").contains("Sensitive"));
    }

    #[test]
    fn a_user_and_password_pair_is_kept_and_bad_tokens_are_refused() {
        let mut credentials = Credentials::new();
        credentials.add_token("git.example", "oauth2:abc").unwrap();
        let expected = base64::engine::general_purpose::STANDARD.encode("oauth2:abc");
        assert_eq!(
            credentials
                .for_host("git.example")
                .unwrap()
                .to_str()
                .unwrap(),
            format!("Basic {expected}")
        );
        let refused = credentials
            .add_token("git.example", "a\r\nX-Evil: 1")
            .unwrap_err();
        assert!(!refused.to_string().contains("Evil"), "{refused}");
        assert!(credentials.add_token("git.example", "  ").is_err());
        assert!(credentials.add_token("bad host/", "x").is_err());
    }
}
