//! Git tokens the gateway hands to its sandboxes' egress proxies (`[git_tokens]` in the
//! config: host → `env:VARIABLE` or `file:PATH`).
//!
//! Threat model: a token must never reach a sandbox, a command line, the store, an API
//! response, `--print-config` or a log line. So the gateway passes each sandbox's
//! `corral run` only the reference (`--git-token HOST=env:VARIABLE` or `HOST=file:PATH`); an
//! `env:` token is read from the gateway's environment once, when the configuration is
//! loaded, kept as a [`Secret`] and set as that variable in the environment of `corral run`
//! alone (whose proxy adds it to the host's requests; the sandbox's own environment is built
//! from scratch). A `file:` token is read by `corral run` itself: keep the file where no
//! sandbox profile can read it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::config::{ConfigError, Secret};

/// Where a host's git token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum GitTokenSource {
    /// An environment variable of the gateway, read at load.
    Env {
        /// The variable's name.
        variable: String,
        /// Its value.
        value: Secret,
    },
    /// A file `corral run` reads when it starts.
    File(PathBuf),
}

impl fmt::Debug for GitTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reference())
    }
}

impl GitTokenSource {
    /// Parses `env:VARIABLE` (looked up through `lookup`) or `file:PATH` (absolute). The
    /// error says what is wrong; it never holds a token.
    pub fn parse(source: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        if let Some(variable) = source.strip_prefix("env:") {
            let valid = !variable.is_empty()
                && variable
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !variable.starts_with(|c: char| c.is_ascii_digit());
            // The sandbox process needs PATH (and the rest of the names corral run reads) for
            // itself.
            if !valid || variable == "PATH" || variable.starts_with("CORRAL_") {
                return Err(format!(
                    "env:{variable}: not a usable variable name (letters, digits and _, not \
                     PATH or CORRAL_*)"
                ));
            }
            let value = lookup(variable)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("env:{variable}: the variable {variable} is not set"))?;
            if value.trim().contains(char::is_control) {
                return Err(format!(
                    "env:{variable}: the token holds a line break or control character"
                ));
            }
            return Ok(Self::Env {
                variable: variable.to_owned(),
                value: Secret::new(value),
            });
        }
        if let Some(path) = source.strip_prefix("file:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!("file:{}: must be an absolute path", path.display()));
            }
            return Ok(Self::File(path));
        }
        // Not echoed: it may be the token itself, written in by mistake.
        Err("use env:VARIABLE or file:PATH (the token itself never goes in the config)".into())
    }

    /// What `corral run --git-token HOST=...` is given: `env:VARIABLE` or `file:PATH`, never
    /// the token.
    pub fn reference(&self) -> String {
        match self {
            Self::Env { variable, .. } => format!("env:{variable}"),
            Self::File(path) => format!("file:{}", path.display()),
        }
    }
}

/// Parses `HOST=env:VARIABLE` or `HOST=file:PATH` (a `--git-token` flag or one item of
/// `CORRAL_GIT_TOKENS`) into the host, lowercased, and its source.
pub fn parse_pair(
    pair: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(String, GitTokenSource), String> {
    let (host, source) = pair
        .split_once('=')
        .ok_or_else(|| "use HOST=env:VARIABLE or HOST=file:PATH".to_owned())?;
    let host = check_host(host)?;
    let source = GitTokenSource::parse(source, lookup).map_err(|e| format!("{host}: {e}"))?;
    Ok((host, source))
}

/// A host name as the egress proxy matches it: lowercase letters, digits, `-` and `.`.
pub fn check_host(host: &str) -> Result<String, String> {
    let host = host.trim().to_ascii_lowercase();
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if valid {
        Ok(host)
    } else {
        Err(format!("{host:?} is not a host name"))
    }
}

/// `HOST=SOURCE` items (flags, or `CORRAL_GIT_TOKENS`) as the `[git_tokens]` table; the
/// sources are checked when the layers are merged.
pub fn git_token_pairs<'a>(
    pairs: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeMap<String, String>, String> {
    pairs
        .into_iter()
        .map(|pair| {
            let (host, source) = pair
                .split_once('=')
                .ok_or_else(|| "use HOST=env:VARIABLE or HOST=file:PATH".to_owned())?;
            Ok((host.to_owned(), source.to_owned()))
        })
        .collect()
}

/// Checks each `[git_tokens]` entry and reads its `env:` variable through `lookup`.
pub(crate) fn git_tokens(
    table: BTreeMap<String, String>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, GitTokenSource>, ConfigError> {
    table
        .into_iter()
        .map(|(host, source)| {
            parse_pair(&format!("{host}={source}"), &lookup).map_err(|message| {
                ConfigError::Invalid {
                    field: "git_tokens",
                    message,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "GH_TOKEN").then(|| "ghp_s3cret".to_owned())
    }

    #[test]
    fn sources_are_references_and_errors_never_hold_the_token() {
        let (host, source) = parse_pair("GitHub.com=env:GH_TOKEN", lookup).unwrap();
        assert_eq!(host, "github.com");
        assert_eq!(source.reference(), "env:GH_TOKEN");
        assert!(!format!("{source:?}").contains("s3cret"));
        let (_, file) = parse_pair("h=file:/etc/corral/token", lookup).unwrap();
        assert_eq!(file.reference(), "file:/etc/corral/token");

        for (pair, expected) in [
            ("h=env:MISSING", "not set"),
            ("h=env:PATH", "PATH"),
            ("h=env:CORRAL_ADMIN_TOKEN", "CORRAL_"),
            ("h=file:rel/token", "absolute"),
            ("h=ghp_s3cret", "env:VARIABLE"),
            ("no-source", "HOST="),
            ("bad host=env:GH_TOKEN", "host name"),
        ] {
            let err = parse_pair(pair, lookup).unwrap_err();
            assert!(err.contains(expected), "{pair}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
