//! Session host names: `<id><suffix>.<domain>` reaches a sandbox's primary port and
//! `<id>-<port><suffix>.<domain>` another port it serves; the path `/s/<label>/...` on the
//! gateway's own host is the fallback for clients without subdomains.
//!
//! Threat model: the Host header is the attacker's to choose, and a mistake here sends one
//! user's browser (with its cookies) to another user's session. So parsing is strict and
//! hand-written over a grammar of a few characters (no URL crate accepts exactly this): a
//! request has exactly one Host; an absolute-form request target must name the same
//! authority; the name is lowercased and may end in one dot; a port, if any, is decimal; only
//! letters, digits, `-` and `.` are accepted. Anything else is a 400 before any lookup.

use crate::config::Config;

/// What a request's host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTarget {
    /// The gateway itself (its API, and the `/s/` path fallback).
    Gateway,
    /// A session host.
    Session(SessionLabel),
    /// A name under the domain that is no session host (a 404).
    Unknown,
}

/// The sandbox (and port, if named) a session label points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLabel {
    /// The sandbox id.
    pub id: String,
    /// The port named in `<id>-<port>`; none for the primary port.
    pub port: Option<u16>,
}

/// Why a Host could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No Host header (and no authority in the request target).
    #[error("the request has no Host header")]
    Missing,
    /// More than one Host header.
    #[error("the request has more than one Host header")]
    Duplicate,
    /// The request target's authority differs from the Host header.
    #[error("the request target's host differs from the Host header")]
    Conflicting,
    /// Characters or a port a host name cannot have.
    #[error("the Host header is not a valid host name")]
    Invalid,
}

/// How session hosts are named on this gateway, and the URLs that reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionHosts {
    domain: String,
    suffix: String,
    scheme: &'static str,
    port: u16,
}

impl SessionHosts {
    /// The naming of a gateway with this configuration (`listen` holds the bound port).
    pub fn new(config: &Config) -> Self {
        Self {
            domain: config.domain.to_ascii_lowercase(),
            suffix: config.suffix.clone(),
            // Behind a TLS-terminating proxy, browsers use the public scheme and port.
            scheme: config.browser_scheme(),
            port: config.browser_port(),
        }
    }

    /// Whether browsers reach session hosts over TLS (the listener's, or a proxy's in front).
    pub fn is_tls(&self) -> bool {
        self.scheme == "https"
    }

    /// The scheme browsers use, `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// Base URL of a session host: `port` none for the primary port.
    pub fn url(&self, id: &str, port: Option<u16>) -> String {
        let label = match port {
            Some(port) => format!("{id}-{port}"),
            None => id.to_owned(),
        };
        let default_port = matches!((self.scheme, self.port), ("http", 80) | ("https", 443));
        let shown_port = if default_port {
            String::new()
        } else {
            format!(":{}", self.port)
        };
        format!(
            "{}://{label}{}.{}{shown_port}",
            self.scheme, self.suffix, self.domain
        )
    }

    /// What `host` (a Host header's value, already known to be the only one and to agree
    /// with the request target) names.
    pub fn classify(&self, host: &str) -> Result<HostTarget, HostError> {
        // An IPv6 literal (`[::1]:7070`) can only be the gateway itself.
        if host.starts_with('[') {
            return Ok(HostTarget::Gateway);
        }
        let name = host_name(host)?;
        if name == self.domain {
            return Ok(HostTarget::Gateway);
        }
        let Some(label) = name
            .strip_suffix(&self.domain)
            .and_then(|rest| rest.strip_suffix('.'))
        else {
            // An IP address or another name: the gateway (its API answers on any address).
            return Ok(HostTarget::Gateway);
        };
        Ok(self
            .session_label(label)
            .map_or(HostTarget::Unknown, HostTarget::Session))
    }

    /// Reads `<id>[-<port>]<suffix>`; also the first segment of a `/s/` path.
    pub fn session_label(&self, label: &str) -> Option<SessionLabel> {
        let bare = label.strip_suffix(self.suffix.as_str())?;
        if bare.is_empty()
            || bare.contains('.')
            || !bare
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return None;
        }
        if let Some((id, port)) = bare.rsplit_once('-')
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
        {
            // A leading zero or an out-of-range number is not a port, and not an id either.
            let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
            if id.is_empty() || port.to_string().len() != bare.len() - id.len() - 1 {
                return None;
            }
            return Some(SessionLabel {
                id: id.to_owned(),
                port: Some(port),
            });
        }
        Some(SessionLabel {
            id: bare.to_owned(),
            port: None,
        })
    }
}

/// The lowercased name of `host` (`name[.][:port]`), checked character by character.
fn host_name(host: &str) -> Result<String, HostError> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(HostError::Invalid);
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && name.split('.').all(|l| !l.is_empty() && l.len() <= 63);
    if valid {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(HostError::Invalid)
    }
}

/// The one host a request names: its only Host header, which an absolute-form target must
/// agree with (case aside).
pub fn request_host(request: &axum::http::request::Parts) -> Result<String, HostError> {
    let mut values = request.headers.get_all(axum::http::header::HOST).iter();
    let host = match (values.next(), values.next()) {
        (Some(host), None) => host.to_str().map_err(|_| HostError::Invalid)?.to_owned(),
        (Some(_), Some(_)) => return Err(HostError::Duplicate),
        (None, _) => return Err(HostError::Missing),
    };
    if let Some(authority) = request.uri.authority()
        && !authority.as_str().eq_ignore_ascii_case(&host)
    {
        return Err(HostError::Conflicting);
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(suffix: &str) -> SessionHosts {
        SessionHosts {
            domain: "localhost".into(),
            suffix: suffix.into(),
            scheme: "http",
            port: 7070,
        }
    }

    fn session(id: &str, port: Option<u16>) -> HostTarget {
        HostTarget::Session(SessionLabel {
            id: id.into(),
            port,
        })
    }

    #[test]
    fn names_map_to_sessions_ports_or_the_gateway() {
        let h = hosts("");
        let cases = [
            ("localhost:7070", Ok(HostTarget::Gateway)),
            ("127.0.0.1:7070", Ok(HostTarget::Gateway)),
            ("[::1]:7070", Ok(HostTarget::Gateway)),
            ("abc123.localhost:7070", Ok(session("abc123", None))),
            ("ABC123.LocalHost:7070", Ok(session("abc123", None))),
            ("abc123.localhost.:7070", Ok(session("abc123", None))),
            ("abc123.localhost", Ok(session("abc123", None))),
            ("abc123-8080.localhost", Ok(session("abc123", Some(8080)))),
            ("abc123-08080.localhost", Ok(HostTarget::Unknown)),
            ("abc123-99999.localhost", Ok(HostTarget::Unknown)),
            ("abc123-0.localhost", Ok(HostTarget::Unknown)),
            ("-8080.localhost", Ok(HostTarget::Unknown)),
            ("a.abc123.localhost", Ok(HostTarget::Unknown)),
            ("abc123.localhost..", Err(HostError::Invalid)),
            ("abc123.localhost:", Err(HostError::Invalid)),
            ("abc123.localhost:70x", Err(HostError::Invalid)),
            ("abc123.localhost:7070:7070", Err(HostError::Invalid)),
            ("abc123.localhost@evil", Err(HostError::Invalid)),
            ("abc_123.localhost", Err(HostError::Invalid)),
            ("abc123 .localhost", Err(HostError::Invalid)),
            ("", Err(HostError::Invalid)),
            ("evilocalhost", Ok(HostTarget::Gateway)),
        ];
        for (host, expected) in cases {
            assert_eq!(h.classify(host), expected, "{host}");
        }
    }

    #[test]
    fn a_suffix_must_be_there() {
        let h = hosts("-oc");
        assert_eq!(h.classify("abc-oc.localhost"), Ok(session("abc", None)));
        assert_eq!(
            h.classify("abc-3000-oc.localhost"),
            Ok(session("abc", Some(3000)))
        );
        assert_eq!(h.classify("abc.localhost"), Ok(HostTarget::Unknown));
        assert_eq!(
            h.url("abc", Some(3000)),
            "http://abc-3000-oc.localhost:7070"
        );
    }

    #[test]
    fn duplicate_or_conflicting_hosts_are_refused() {
        let parts = |target: &str, hosts: &[&str]| {
            let mut request = axum::http::Request::builder().uri(target);
            for host in hosts {
                request = request.header("host", *host);
            }
            request.body(()).unwrap().into_parts().0
        };
        assert_eq!(
            request_host(&parts("/", &["a.localhost"])),
            Ok("a.localhost".into())
        );
        assert_eq!(
            request_host(&parts("/", &["a.localhost", "b.localhost"])),
            Err(HostError::Duplicate)
        );
        assert_eq!(request_host(&parts("/", &[])), Err(HostError::Missing));
        assert_eq!(
            request_host(&parts("http://b.localhost/", &["a.localhost"])),
            Err(HostError::Conflicting)
        );
        assert_eq!(
            request_host(&parts("http://A.localhost/", &["a.localhost"])),
            Ok("a.localhost".into())
        );
    }
}
