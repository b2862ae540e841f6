//! The rules a profile's TOML can say, parsed into types, and their Cedar conditions.
//!
//! Rules are parsed once, when the profile loads, so a mistake is reported with its file and
//! line; compiling a parsed rule to Cedar cannot fail. Host and branch patterns use Cedar's
//! `like`, whose only wildcard is `*` (it matches any characters, `.` and `/` included).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Which hosts a rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: every host.
    Any,
    /// One host name or IP address, exactly.
    Exact(String),
    /// `*.example.com`: every name ending in `.example.com` (not `example.com` itself).
    Subdomains(String),
}

impl HostPattern {
    /// Whether `host` (lower case, no trailing dot) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(name) => name == host,
            Self::Subdomains(parent) => host
                .strip_suffix(parent.as_str())
                .is_some_and(|label| label.len() > 1 && label.ends_with('.')),
        }
    }

    /// Whether the pattern names an IP address literally (an explicit private-address grant).
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Exact(name) => name.parse().ok(),
            _ => None,
        }
    }

    /// The Cedar condition for `attribute` (a host name) matching this pattern.
    pub fn cedar_condition(&self, attribute: &str) -> String {
        match self {
            Self::Any => "true".into(),
            Self::Exact(name) => format!("{attribute} == {}", cedar_string(name)),
            // `like "?*.example.com"` would be exact, but Cedar has no `?`; a name made only of
            // the suffix cannot resolve anyway.
            Self::Subdomains(parent) => {
                format!("{attribute} like {}", cedar_pattern(&format!("*.{parent}")))
            }
        }
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        let (parent, subdomains) = match text.strip_prefix("*.") {
            Some(parent) => (parent, true),
            None => (text, false),
        };
        let name = normalize_host(parent)?;
        if name.contains('*') {
            return Err(format!(
                "{text:?}: a wildcard may only be `*` or a leading `*.` (as in *.example.com)"
            ));
        }
        Ok(if subdomains {
            Self::Subdomains(name)
        } else {
            Self::Exact(name)
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(name) if name.contains(':') => write!(f, "[{name}]"),
            Self::Exact(name) => f.write_str(name),
            Self::Subdomains(parent) => write!(f, "*.{parent}"),
        }
    }
}

/// Lower-cases a host name, drops one trailing dot and strips IPv6 brackets, refusing
/// anything that is not a plausible name or address.
pub fn normalize_host(text: &str) -> Result<String, String> {
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(ip.to_canonical().to_string());
    }
    let name = unbracketed.strip_suffix('.').unwrap_or(unbracketed);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*'));
    if !valid {
        return Err(format!(
            "{text:?} is not a host name or IP address (letters, digits, '-', '.' only)"
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// A closed range of TCP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (equal to `first` for one port).
    pub last: u16,
}

/// `host[:ports]`: a network allow or deny rule. No ports means every port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// Which hosts.
    pub host: HostPattern,
    /// Which ports; empty means all.
    pub ports: Vec<PortRange>,
}

impl HostRule {
    /// Whether a connection to `host:port` matches this rule.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.host.matches(host)
            && (self.ports.is_empty()
                || self
                    .ports
                    .iter()
                    .any(|r| (r.first..=r.last).contains(&port)))
    }

    /// The Cedar condition for a `connect` request matching this rule.
    pub fn cedar(&self) -> String {
        let host = self.host.cedar_condition("resource.name");
        let ports = self.ports_cedar();
        match (host.as_str(), ports) {
            (_, None) => host,
            ("true", Some(ports)) => ports,
            (_, Some(ports)) => format!("{host} && {ports}"),
        }
    }

    fn ports_cedar(&self) -> Option<String> {
        if self.ports.is_empty() {
            return None;
        }
        let singles: Vec<String> = self
            .ports
            .iter()
            .filter(|r| r.first == r.last)
            .map(|r| r.first.to_string())
            .collect();
        let mut alternatives = Vec::new();
        if !singles.is_empty() {
            alternatives.push(format!("[{}].contains(context.port)", singles.join(", ")));
        }
        for range in self.ports.iter().filter(|r| r.first != r.last) {
            alternatives.push(format!(
                "(context.port >= {} && context.port <= {})",
                range.first, range.last
            ));
        }
        Some(if alternatives.len() == 1 {
            alternatives.remove(0)
        } else {
            format!("({})", alternatives.join(" || "))
        })
    }
}

impl FromStr for HostRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (host, ports) = split_host_port(text);
        let host = host.parse::<HostPattern>()?;
        let ports = match ports {
            None | Some("*") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|p| parse_port_range(p.trim()))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{text:?}: {e}"))?,
        };
        Ok(Self { host, ports })
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.host)?;
        for (i, range) in self.ports.iter().enumerate() {
            f.write_str(if i == 0 { ":" } else { "," })?;
            if range.first == range.last {
                write!(f, "{}", range.first)?;
            } else {
                write!(f, "{}-{}", range.first, range.last)?;
            }
        }
        Ok(())
    }
}

/// Splits `host:ports`, `[v6]:ports` and bare `v6` addresses.
fn split_host_port(text: &str) -> (&str, Option<&str>) {
    if let Some(rest) = text.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        let ports = rest[end + 1..].strip_prefix(':');
        return (&text[..end + 2], ports);
    }
    if text.matches(':').count() > 1 {
        return (text, None);
    }
    match text.split_once(':') {
        Some((host, ports)) => (host, Some(ports)),
        None => (text, None),
    }
}

fn parse_port_range(text: &str) -> Result<PortRange, String> {
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{p:?} is not a port (1-65535)")),
    };
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(text)?, port(text)?),
    };
    if first > last {
        return Err(format!("port range {text:?} runs backwards"));
    }
    Ok(PortRange { first, last })
}

/// An address (or network) that may be reached although it is private, loopback or
/// link-local: `10.0.0.5`, `192.168.0.0/16`, or a host name such as `vllm.internal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivateGrant {
    /// A host name, exactly.
    Host(String),
    /// An address or CIDR network.
    Network(String),
}

impl PrivateGrant {
    /// The Cedar condition for a `connect` request this grant covers.
    pub fn cedar(&self) -> String {
        match self {
            Self::Host(name) => format!("resource.name == {}", cedar_string(name)),
            Self::Network(net) => format!(
                "(context has ip && context.ip.isInRange(ip({})))",
                cedar_string(net)
            ),
        }
    }

    /// Whether this grant covers a connection to `host` resolved to `ip`.
    pub fn covers(&self, host: &str, ip: Option<IpAddr>) -> bool {
        match self {
            Self::Host(name) => name == host,
            Self::Network(net) => ip.is_some_and(|ip| network_contains(net, ip)),
        }
    }
}

impl FromStr for PrivateGrant {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some((addr, bits)) = text.split_once('/') {
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{text:?}: {addr:?} is not an IP address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match bits.parse::<u8>() {
                Ok(b) if b <= max => Ok(Self::Network(format!("{ip}/{b}"))),
                _ => Err(format!("{text:?}: the prefix length must be 0-{max}")),
            }
        } else if let Ok(ip) = text.parse::<IpAddr>() {
            Ok(Self::Network(ip.to_canonical().to_string()))
        } else {
            let name = normalize_host(text)?;
            if name.contains('*') {
                return Err(format!(
                    "{text:?}: private-address grants name one host or network, no wildcards"
                ));
            }
            Ok(Self::Host(name))
        }
    }
}

impl fmt::Display for PrivateGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(s) | Self::Network(s) => f.write_str(s),
        }
    }
}

/// Whether `net` (`addr` or `addr/bits`) contains `ip`.
pub fn network_contains(net: &str, ip: IpAddr) -> bool {
    let (addr, bits) = match net.split_once('/') {
        Some((a, b)) => (a, b.parse::<u32>().unwrap_or(0)),
        None => (net, if net.contains(':') { 128 } else { 32 }),
    };
    let Ok(base) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (base, ip.to_canonical()) {
        (IpAddr::V4(base), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(base) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(base), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(base) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// Networks no sandbox reaches unless a profile grants them by name: loopback, private,
/// link-local (cloud metadata lives there), CGNAT, multicast, reserved and IPv4-mapped.
pub const NON_PUBLIC_NETWORKS: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Whether an address is outside the public internet (see [`NON_PUBLIC_NETWORKS`]).
pub fn is_non_public(ip: IpAddr) -> bool {
    NON_PUBLIC_NETWORKS
        .iter()
        .any(|net| network_contains(net, ip))
}

/// One HTTP rule: a host, the methods (empty: any) and the path globs (empty: any).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HttpRule {
    /// Which hosts.
    #[serde(serialize_with = "serialize_display")]
    pub host: HostPattern,
    /// Upper-case methods; empty means any.
    pub methods: Vec<String>,
    /// Path globs (`*` matches anything); empty means any.
    pub paths: Vec<String>,
}

impl HttpRule {
    /// The Cedar condition for an `http_request` matching this rule.
    pub fn cedar(&self) -> String {
        let mut parts = vec![self.host.cedar_condition("resource.host")];
        if !self.methods.is_empty() {
            let methods: Vec<String> = self.methods.iter().map(|m| cedar_string(m)).collect();
            parts.push(format!("[{}].contains(context.method)", methods.join(", ")));
        }
        if !self.paths.is_empty() {
            let paths: Vec<String> = self
                .paths
                .iter()
                .map(|p| format!("resource.path like {}", cedar_pattern(p)))
                .collect();
            parts.push(format!("({})", paths.join(" || ")));
        }
        parts.retain(|p| p != "true");
        if parts.is_empty() {
            "true".into()
        } else {
            parts.join(" && ")
        }
    }

    /// Whether a request matches this rule.
    pub fn matches(&self, host: &str, method: &str, path: &str) -> bool {
        self.host.matches(host)
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| glob_matches(p, path)))
    }

    /// Checks methods and paths.
    pub fn validate(&self) -> Result<(), String> {
        for method in &self.methods {
            if method.is_empty() || !method.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(format!(
                    "method {method:?} must be an upper-case HTTP method such as GET"
                ));
            }
        }
        for path in &self.paths {
            if !path.starts_with('/') && path != "*" {
                return Err(format!("path {path:?} must start with '/' (or be \"*\")"));
            }
        }
        Ok(())
    }
}

/// Git push rules for the remotes matching `remote`: which branches may and may not be pushed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PushRule {
    /// Which remote hosts.
    #[serde(serialize_with = "serialize_display")]
    pub remote: HostPattern,
    /// Branch globs that may be pushed.
    pub allow: Vec<String>,
    /// Branch globs that may never be pushed (these win).
    pub deny: Vec<String>,
}

/// `left/right` with `*` globs on either side: `anthropic/claude-*` for inference,
/// `github/create_issue` for MCP tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairPattern {
    /// Provider or server glob.
    pub left: String,
    /// Model or tool glob.
    pub right: String,
}

impl PairPattern {
    /// Parses `left/right`; `*` alone means `*/*`.
    pub fn parse(text: &str, what: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self {
                left: "*".into(),
                right: "*".into(),
            });
        }
        match text.split_once('/') {
            Some((left, right)) if !left.is_empty() && !right.is_empty() => {
                check_plain(left)?;
                check_plain(right)?;
                Ok(Self {
                    left: left.into(),
                    right: right.into(),
                })
            }
            _ => Err(format!("{text:?} must look like {what}")),
        }
    }

    /// The Cedar condition, with `left` and `right` naming the resource's attributes.
    pub fn cedar(&self, left: &str, right: &str) -> String {
        let part = |attr: &str, glob: &str| {
            if glob == "*" {
                None
            } else if glob.contains('*') {
                Some(format!("resource.{attr} like {}", cedar_pattern(glob)))
            } else {
                Some(format!("resource.{attr} == {}", cedar_string(glob)))
            }
        };
        let parts: Vec<String> = [part(left, &self.left), part(right, &self.right)]
            .into_iter()
            .flatten()
            .collect();
        if parts.is_empty() {
            "true".into()
        } else {
            parts.join(" && ")
        }
    }

    /// Whether `left/right` matches.
    pub fn matches(&self, left: &str, right: &str) -> bool {
        glob_matches(&self.left, left) && glob_matches(&self.right, right)
    }
}

impl fmt::Display for PairPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.left, self.right)
    }
}

/// Refuses quotes, backslashes and control characters, which have no place in names and
/// globs and would only make the compiled Cedar harder to read.
pub fn check_plain(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("an empty pattern matches nothing; remove it".into());
    }
    if text
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err(format!(
            "{text:?} contains a quote, backslash or control character"
        ));
    }
    Ok(())
}

/// Cedar's `like`, in Rust: `*` matches any run of characters, everything else itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    if !text.ends_with(last) {
        return false;
    }
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// A Cedar string literal.
pub fn cedar_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A Cedar `like` pattern: `*` stays a wildcard.
pub fn cedar_pattern(glob: &str) -> String {
    cedar_string(glob)
}

/// Serializes a value through its `Display` form (rules are shown the way they are written).
pub fn serialize_display<T: fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules_parse_and_print_back() {
        for text in [
            "github.com:22,443",
            "*.npmjs.org:443",
            "*",
            "*:443",
            "10.0.0.5:8000-8100",
            "[::1]:8080",
        ] {
            let rule: HostRule = text.parse().unwrap();
            assert_eq!(rule.to_string(), text);
        }
    }

    #[test]
    fn bad_host_rules_say_what_is_wrong() {
        for (text, fragment) in [
            ("github.com:0", "not a port"),
            ("github.com:443-22", "backwards"),
            ("git*hub.com", "leading `*.`"),
            ("gith ub.com", "not a host name"),
            ("github.com:http", "not a port"),
        ] {
            let err = text.parse::<HostRule>().unwrap_err();
            assert!(err.contains(fragment), "{text}: {err}");
        }
    }

    #[test]
    fn subdomain_patterns_do_not_match_the_parent_or_lookalikes() {
        let p: HostPattern = "*.github.com".parse().unwrap();
        assert!(p.matches("api.github.com"));
        assert!(p.matches("a.b.github.com"));
        assert!(!p.matches("github.com"));
        assert!(!p.matches("evilgithub.com"));
    }

    #[test]
    fn non_public_addresses_include_metadata_and_mapped_loopback() {
        for ip in [
            "169.254.169.254",
            "127.0.0.1",
            "10.1.2.3",
            "::1",
            "fd00::1",
            "100.64.0.1",
        ] {
            assert!(is_non_public(ip.parse().unwrap()), "{ip}");
        }
        assert!(is_non_public("::ffff:127.0.0.1".parse().unwrap()));
        for ip in ["140.82.112.3", "2606:4700::1111"] {
            assert!(!is_non_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn globs_behave_like_cedar_like() {
        assert!(glob_matches("ai/*", "ai/x/y"));
        assert!(glob_matches("release/*", "release/"));
        assert!(!glob_matches("ai/*", "main"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "abc"));
        assert!(!glob_matches("a*b*c", "acb"));
        assert!(!glob_matches("ab*ba", "aba"));
    }
}
