//! The URL people reach the gateway at, when that is not its listener: behind a
//! TLS-terminating reverse proxy (oauth2-proxy, an ingress controller, a load balancer) the
//! gateway listens on plain HTTP at 127.0.0.1:7070 while browsers use
//! `https://corral.example.com`. Session host URLs, ticket links and the printed address
//! must use the public scheme and port, and cookies must be `Secure` when it is HTTPS.

use std::fmt;

use axum::http::Uri;
use serde::{Deserialize, Serialize};

/// A validated public base URL: `http` or `https`, a host name, an optional port, nothing
/// else (no path, query or credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicUrl {
    https: bool,
    host: String,
    port: Option<u16>,
}

impl PublicUrl {
    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// The host name, lowercased.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port browsers use: the explicit one, else the scheme's default.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.https { 443 } else { 80 })
    }
}

impl TryFrom<String> for PublicUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<PublicUrl> for String {
    fn from(url: PublicUrl) -> String {
        url.to_string()
    }
}

impl std::str::FromStr for PublicUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "public_url {text:?} {why}: write the scheme and host browsers use, such as \
                 https://corral.example.com"
            )
        };
        let uri: Uri = text.parse().map_err(|_| bad("is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("must start with http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("must not hold credentials"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(
                "must not have a path or query (the gateway is served at /)",
            ));
        }
        let host = authority.host().to_ascii_lowercase();
        let is_name = host.contains(|c: char| c.is_ascii_alphabetic())
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !is_name {
            return Err(bad(
                "must name a host (session hosts are subdomains of it), not an address",
            ));
        }
        Ok(Self {
            https,
            host,
            port: authority.port_u16(),
        })
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme(), self.host)?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_host_and_port_are_read() {
        let url: PublicUrl = "https://Corral.Example.com/".parse().unwrap();
        assert_eq!(
            (url.scheme(), url.host(), url.port()),
            ("https", "corral.example.com", 443)
        );
        assert_eq!(url.to_string(), "https://corral.example.com");
        let url: PublicUrl = "http://corral.test:8080".parse().unwrap();
        assert_eq!((url.scheme(), url.port()), ("http", 8080));
        assert_eq!(url.to_string(), "http://corral.test:8080");
    }

    #[test]
    fn anything_but_a_bare_origin_is_refused_saying_why() {
        for (bad, why) in [
            ("corral.example.com", "http:// or https://"),
            ("ftp://corral.example.com", "http:// or https://"),
            ("https://corral.example.com/corral", "path"),
            ("https://corral.example.com/?a=b", "path or query"),
            ("https://user:pw@corral.example.com", "credentials"),
            ("https://127.0.0.1", "not an address"),
            ("https://", "not a URL"),
        ] {
            let error = bad.parse::<PublicUrl>().unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
