//! The gateway's configuration: one typed [`Config`] built once from a TOML file, then
//! environment variables, then command-line flags (each overriding the one before), and
//! passed down. Nothing else in the gateway reads the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::agents::AgentTemplate;
use crate::git_tokens::{GitTokenSource, git_token_pairs, git_tokens};
pub use crate::public_url::PublicUrl;

/// Shortest `admin_token` corral accepts, so automation cannot set a guessable one.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// What a secret is shown as by `--print-config`.
const REDACTED: &str = "<redacted>";

/// Why the configuration could not be built. Messages name the file or variable at fault and
/// never contain a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has a field corral does not know.
    #[error("config file {}: {message}", path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// An environment variable holds a value corral cannot read.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No data directory was given and neither XDG_DATA_HOME nor HOME is set.
    #[error("no data directory: pass --data-dir, or set XDG_DATA_HOME or HOME")]
    NoDataDir,
    /// A field has a value that parses but cannot be used.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, as named in the config file.
        field: &'static str,
        /// What is wrong and what would be right.
        message: String,
    },
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// A value that must not be printed or logged. `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The effective gateway configuration.
///
/// # Defaults
/// - `listen`: `127.0.0.1:7070`
/// - `data_dir`: `$XDG_DATA_HOME/corral`, else `~/.local/share/corral`
/// - `domain`: `localhost`
/// - `log_format`: `text`
/// - `idle_timeout`: `30m`
/// - `admin_email`: `admin@localhost`
/// - `admin_token`: none (a random token is made and printed on first start)
/// - `trusted_proxies`: none (identity headers are never trusted)
/// - `profiles`: none (only the built-in profiles)
/// - `exec_timeout`: `10m`; `max_exec_timeout`: `1h`
/// - `log_max_size`: `10M`
/// - `git_tokens`: none
/// - `max_upload`: `1G` (largest archive a file upload may send)
/// - `suffix`: empty (session hosts are `<id>.<domain>`)
/// - `agents`: none (only the built-in agent templates)
/// - `tls_cert`, `tls_key`: none (plain HTTP)
/// - `public_url`: none (the listener's own address)
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address the HTTP API listens on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Where the store (and later the workspaces) live.
    pub data_dir: PathBuf,
    /// Domain that sandbox hosts are named under.
    pub domain: String,
    /// Format of log lines on stderr.
    pub log_format: LogFormat,
    /// How long a sandbox may be idle before it is stopped.
    pub idle_timeout: Duration,
    /// Email of the admin user created on first start.
    pub admin_email: String,
    /// Token the first-start admin gets instead of a random one (for automation).
    pub admin_token: Option<Secret>,
    /// Peers whose `X-Forwarded-Email` / `X-Auth-Request-Email` headers are believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Profiles sandboxes may name besides the built-in ones: name → profile TOML file
    /// (`[profiles]` in the config file only; checked at load). Callers choose among the
    /// names; only the operator chooses files.
    pub profiles: BTreeMap<String, PathBuf>,
    /// How long an exec may run when its request names no `timeout_secs`.
    pub exec_timeout: Duration,
    /// The longest `timeout_secs` an exec request may name.
    pub max_exec_timeout: Duration,
    /// Size at which a sandbox's agent log is rotated (one previous file is kept).
    pub log_max_size: u64,
    /// Git tokens by host, handed to every sandbox's egress proxy by reference.
    pub git_tokens: BTreeMap<String, GitTokenSource>,
    /// Largest tar archive, in bytes, a file upload may send (`max_upload = "1G"`,
    /// `CORRAL_MAX_UPLOAD`). Every other request body is a small JSON document.
    pub max_upload: u64,
    /// Added to a sandbox id in its session host name: `<id><suffix>.<domain>` (e.g. `-oc`,
    /// so that one wildcard certificate for `*.<domain>` covers every session host).
    pub suffix: String,
    /// Agent templates besides the built-in ones (`[agents.NAME]` in the config file only).
    pub agents: BTreeMap<String, AgentTemplate>,
    /// Certificate chain (PEM) to serve HTTPS with; reloaded when the file changes.
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The URL browsers use when it is not the listener's (a TLS-terminating proxy in
    /// front): session hosts, ticket links and the printed address take its scheme and port,
    /// and cookies are `Secure` when it is HTTPS. Its host is the domain.
    pub public_url: Option<PublicUrl>,
}

/// One source of configuration (the file, the environment or the flags): every field is
/// optional, and a later layer's values replace an earlier one's.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// See [`Config::listen`].
    pub listen: Option<SocketAddr>,
    /// See [`Config::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`Config::domain`].
    pub domain: Option<String>,
    /// See [`Config::log_format`].
    pub log_format: Option<LogFormat>,
    /// See [`Config::idle_timeout`].
    #[serde(default, deserialize_with = "human_duration")]
    pub idle_timeout: Option<Duration>,
    /// See [`Config::admin_email`].
    pub admin_email: Option<String>,
    /// See [`Config::admin_token`].
    pub admin_token: Option<Secret>,
    /// See [`Config::trusted_proxies`].
    pub trusted_proxies: Option<Vec<IpAddr>>,
    /// See [`Config::profiles`] (read from the config file only).
    pub profiles: Option<BTreeMap<String, PathBuf>>,
    /// See [`Config::exec_timeout`].
    #[serde(default, deserialize_with = "human_duration")]
    pub exec_timeout: Option<Duration>,
    /// See [`Config::max_exec_timeout`].
    #[serde(default, deserialize_with = "human_duration")]
    pub max_exec_timeout: Option<Duration>,
    /// See [`Config::log_max_size`]: bytes, or a size such as `10M`.
    #[serde(default, deserialize_with = "size")]
    pub log_max_size: Option<u64>,
    /// See [`Config::git_tokens`]: host → `env:VARIABLE` or `file:PATH`, resolved when the
    /// layers are merged.
    pub git_tokens: Option<BTreeMap<String, String>>,
    /// See [`Config::max_upload`]: bytes, or a size such as `1G`.
    #[serde(default, deserialize_with = "size")]
    pub max_upload: Option<u64>,
    /// See [`Config::suffix`].
    pub suffix: Option<String>,
    /// See [`Config::agents`] (read from the config file only).
    pub agents: Option<BTreeMap<String, AgentTemplate>>,
    /// See [`Config::tls_cert`].
    pub tls_cert: Option<PathBuf>,
    /// See [`Config::tls_key`].
    pub tls_key: Option<PathBuf>,
    /// See [`Config::public_url`].
    pub public_url: Option<PublicUrl>,
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(bytes) => Ok(Some(bytes)),
        Size::Text(text) => corral_policy::parse_size(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{e} (use e.g. 10M or 512K)"))),
    }
}

fn human_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e} (use e.g. 30m or 2h)")))
}

impl ConfigLayer {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
            path: path.to_owned(),
            // toml's Display quotes the offending line; a line holding a secret must not be
            // echoed, so only the message and position are kept.
            message: describe_toml_error(&text, &e),
        })
    }

    /// Reads the `CORRAL_*` variables through `lookup` (pass `|k| std::env::var(k).ok()`).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        fn parse<T: FromStr>(
            name: &'static str,
            value: Option<String>,
            what: &str,
        ) -> Result<Option<T>, ConfigError>
        where
            T::Err: fmt::Display,
        {
            value
                .map(|v| {
                    v.parse().map_err(|e| ConfigError::Env {
                        name,
                        message: format!("not {what}: {e}"),
                    })
                })
                .transpose()
        }
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let idle_timeout = get("CORRAL_IDLE_TIMEOUT")
            .map(|v| {
                humantime::parse_duration(&v).map_err(|e| ConfigError::Env {
                    name: "CORRAL_IDLE_TIMEOUT",
                    message: format!("{v:?}: {e} (use e.g. 30m or 2h)"),
                })
            })
            .transpose()?;
        let trusted_proxies = get("CORRAL_TRUSTED_PROXIES")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.parse().map_err(|e| ConfigError::Env {
                            name: "CORRAL_TRUSTED_PROXIES",
                            message: format!("{s:?} is not an IP address: {e}"),
                        })
                    })
                    .collect::<Result<Vec<IpAddr>, _>>()
            })
            .transpose()?;
        let exec_timeout = get("CORRAL_EXEC_TIMEOUT")
            .map(|v| {
                humantime::parse_duration(&v).map_err(|e| ConfigError::Env {
                    name: "CORRAL_EXEC_TIMEOUT",
                    message: format!("{v:?}: {e} (use e.g. 10m)"),
                })
            })
            .transpose()?;
        let log_max_size = get("CORRAL_LOG_MAX_SIZE")
            .map(|v| {
                corral_policy::parse_size(&v).map_err(|e| ConfigError::Env {
                    name: "CORRAL_LOG_MAX_SIZE",
                    message: format!("{e} (use e.g. 10M)"),
                })
            })
            .transpose()?;
        let git_tokens = get("CORRAL_GIT_TOKENS")
            .map(|v| {
                git_token_pairs(v.split(',').map(str::trim).filter(|s| !s.is_empty())).map_err(
                    |message| ConfigError::Env {
                        name: "CORRAL_GIT_TOKENS",
                        message,
                    },
                )
            })
            .transpose()?;
        let max_upload = get("CORRAL_MAX_UPLOAD")
            .map(|v| {
                corral_policy::parse_size(&v).map_err(|e| ConfigError::Env {
                    name: "CORRAL_MAX_UPLOAD",
                    message: format!("{e} (use e.g. 512M or 2G)"),
                })
            })
            .transpose()?;
        Ok(Self {
            listen: parse("CORRAL_LISTEN", get("CORRAL_LISTEN"), "an address:port")?,
            data_dir: get("CORRAL_DATA_DIR").map(PathBuf::from),
            domain: get("CORRAL_DOMAIN"),
            log_format: parse(
                "CORRAL_LOG_FORMAT",
                get("CORRAL_LOG_FORMAT"),
                "a log format",
            )?,
            idle_timeout,
            admin_email: get("CORRAL_ADMIN_EMAIL"),
            admin_token: get("CORRAL_ADMIN_TOKEN").map(Secret),
            trusted_proxies,
            profiles: None,
            exec_timeout,
            max_exec_timeout: None,
            log_max_size,
            git_tokens,
            max_upload,
            suffix: lookup("CORRAL_SUFFIX"),
            agents: None,
            tls_cert: get("CORRAL_TLS_CERT").map(PathBuf::from),
            tls_key: get("CORRAL_TLS_KEY").map(PathBuf::from),
            public_url: get("CORRAL_PUBLIC_URL")
                .map(|url| {
                    url.parse().map_err(|message| ConfigError::Env {
                        name: "CORRAL_PUBLIC_URL",
                        message,
                    })
                })
                .transpose()?,
        })
    }

    /// This layer with every value `over` sets replacing ours.
    pub fn overridden_by(self, over: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            listen: over.listen.or(self.listen),
            data_dir: over.data_dir.or(self.data_dir),
            domain: over.domain.or(self.domain),
            log_format: over.log_format.or(self.log_format),
            idle_timeout: over.idle_timeout.or(self.idle_timeout),
            admin_email: over.admin_email.or(self.admin_email),
            admin_token: over.admin_token.or(self.admin_token),
            trusted_proxies: over.trusted_proxies.or(self.trusted_proxies),
            profiles: over.profiles.or(self.profiles),
            exec_timeout: over.exec_timeout.or(self.exec_timeout),
            max_exec_timeout: over.max_exec_timeout.or(self.max_exec_timeout),
            log_max_size: over.log_max_size.or(self.log_max_size),
            git_tokens: over.git_tokens.or(self.git_tokens),
            max_upload: over.max_upload.or(self.max_upload),
            suffix: over.suffix.or(self.suffix),
            agents: over.agents.or(self.agents),
            tls_cert: over.tls_cert.or(self.tls_cert),
            tls_key: over.tls_key.or(self.tls_key),
            public_url: over.public_url.or(self.public_url),
        }
    }
}

/// The message and line of a TOML error, without the quoted source line.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    match line {
        Some(line) => format!("line {line}: {}", e.message()),
        None => e.message().to_owned(),
    }
}

/// The config file used when none is named: `$XDG_CONFIG_HOME/corral/gateway.toml`, else
/// `~/.config/corral/gateway.toml`, if it exists.
pub fn default_config_file(lookup: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = lookup("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| lookup("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("corral/gateway.toml")).filter(|p| p.is_file())
}

impl Config {
    /// Builds the effective configuration: `file`, then the environment (through `lookup`),
    /// then `flags`; unset fields take their defaults.
    pub fn load(
        file: Option<&Path>,
        lookup: impl Fn(&str) -> Option<String>,
        flags: ConfigLayer,
    ) -> Result<Self, ConfigError> {
        let from_file = match file {
            Some(path) => ConfigLayer::from_file(path)?,
            None => ConfigLayer::default(),
        };
        let from_env = ConfigLayer::from_env(&lookup)?;
        let layer = from_file.overridden_by(from_env).overridden_by(flags);
        Self::from_layer(layer, &lookup)
    }

    /// Fills the unset fields of `layer` with defaults and checks the result. `lookup` is
    /// only used for the default data directory.
    pub fn from_layer(
        layer: ConfigLayer,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let data_dir = match layer.data_dir {
            Some(dir) => dir,
            None => default_data_dir(&lookup).ok_or(ConfigError::NoDataDir)?,
        };
        let config = Config {
            listen: layer
                .listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7070))),
            data_dir,
            // Behind a proxy, session hosts are subdomains of the public host.
            domain: layer
                .domain
                .or_else(|| layer.public_url.as_ref().map(|u| u.host().to_owned()))
                .unwrap_or_else(|| "localhost".into()),
            log_format: layer.log_format.unwrap_or_default(),
            idle_timeout: layer.idle_timeout.unwrap_or(Duration::from_secs(30 * 60)),
            admin_email: layer
                .admin_email
                .unwrap_or_else(|| "admin@localhost".into()),
            admin_token: layer.admin_token,
            trusted_proxies: layer.trusted_proxies.unwrap_or_default(),
            profiles: layer.profiles.unwrap_or_default(),
            exec_timeout: layer.exec_timeout.unwrap_or(Duration::from_secs(10 * 60)),
            max_exec_timeout: layer
                .max_exec_timeout
                .unwrap_or(Duration::from_secs(60 * 60)),
            log_max_size: layer.log_max_size.unwrap_or(10 * 1024 * 1024),
            git_tokens: git_tokens(layer.git_tokens.unwrap_or_default(), &lookup)?,
            max_upload: layer.max_upload.unwrap_or(1 << 30),
            suffix: layer.suffix.unwrap_or_default(),
            agents: layer.agents.unwrap_or_default(),
            tls_cert: layer.tls_cert,
            tls_key: layer.tls_key,
            public_url: layer.public_url,
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| ConfigError::Invalid {
            field,
            message: message.into(),
        };
        if self.domain.is_empty()
            || !self
                .domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(invalid(
                "domain",
                "must be a host name such as localhost or corral.example.com",
            ));
        }
        self.check_ingress()?;
        if !crate::validate::is_email(&self.admin_email) {
            return Err(invalid("admin_email", "must be an email address"));
        }
        if let Some(token) = &self.admin_token
            && token.expose().chars().count() < MIN_ADMIN_TOKEN_LEN
        {
            return Err(ConfigError::Invalid {
                field: "admin_token",
                message: format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
            });
        }
        if self.exec_timeout.is_zero() || self.exec_timeout > self.max_exec_timeout {
            return Err(invalid(
                "exec_timeout",
                "must be more than 0 and at most max_exec_timeout",
            ));
        }
        if self.log_max_size < 4096 {
            return Err(invalid("log_max_size", "must be at least 4K"));
        }
        if !self.data_dir.is_absolute() {
            return Err(invalid("data_dir", "must be an absolute path"));
        }
        for (name, path) in &self.profiles {
            let profile_error = |message: String| ConfigError::Invalid {
                field: "profiles",
                message: format!("{name}: {message}"),
            };
            if crate::validate::sandbox_name(name).is_err()
                || corral_policy::builtin_names().any(|b| b == name)
            {
                return Err(profile_error(
                    "a profile name must be a DNS label and not a built-in profile's".into(),
                ));
            }
            if !path.is_absolute() {
                return Err(profile_error(format!(
                    "{} must be an absolute path",
                    path.display()
                )));
            }
            corral_policy::Profile::load(path).map_err(|e| profile_error(e.to_string()))?;
        }
        Ok(())
    }

    /// Checks the session-host suffix, the agent templates and the TLS files' pairing.
    fn check_ingress(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| ConfigError::Invalid { field, message };
        let suffix_ok = self.suffix.len() <= 20
            && self
                .suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !self.suffix.ends_with('-');
        // A suffix ending in digits would make `<id>-<port><suffix>` ambiguous.
        if !suffix_ok
            || self
                .suffix
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_digit())
        {
            return Err(invalid(
                "suffix",
                "must be up to 20 lowercase letters, digits and '-', ending in a letter \
                 (e.g. -oc)"
                    .into(),
            ));
        }
        let builtins = crate::agents::builtins();
        for (name, template) in &self.agents {
            if crate::validate::sandbox_name(name).is_err()
                || builtins.contains_key(name)
                || name == crate::agents::CUSTOM
            {
                return Err(invalid(
                    "agents",
                    format!("{name}: an agent name must be a DNS label and not a built-in's"),
                ));
            }
            template
                .check()
                .map_err(|e| invalid("agents", format!("{name}: {e}")))?;
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "tls_cert",
                "tls_cert and tls_key go together: set both or neither".into(),
            ));
        }
        if let Some(url) = &self.public_url
            && !url.host().eq_ignore_ascii_case(&self.domain)
        {
            return Err(invalid(
                "public_url",
                format!(
                    "its host {:?} must be the domain {:?} (session hosts are \
                     <id>.<domain>): set domain to {:?}, or leave domain unset",
                    url.host(),
                    self.domain,
                    url.host()
                ),
            ));
        }
        Ok(())
    }

    /// The scheme browsers reach the gateway with: the public URL's when one is set (a proxy
    /// in front), else `https` when the listener serves TLS, else `http`.
    pub fn browser_scheme(&self) -> &'static str {
        match &self.public_url {
            Some(url) => url.scheme(),
            None if self.tls_cert.is_some() => "https",
            None => "http",
        }
    }

    /// The port browsers reach the gateway on: the public URL's, else the listener's.
    pub fn browser_port(&self) -> u16 {
        self.public_url
            .as_ref()
            .map_or(self.listen.port(), PublicUrl::port)
    }

    /// The configuration as TOML, with secrets shown as `<redacted>`.
    pub fn to_redacted_toml(&self) -> String {
        #[derive(Serialize)]
        struct Shown<'a> {
            listen: String,
            data_dir: &'a Path,
            domain: &'a str,
            log_format: LogFormat,
            idle_timeout: String,
            admin_email: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            admin_token: Option<&'static str>,
            trusted_proxies: Vec<String>,
            suffix: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            tls_cert: Option<&'a Path>,
            #[serde(skip_serializing_if = "Option::is_none")]
            tls_key: Option<&'a Path>,
            #[serde(skip_serializing_if = "Option::is_none")]
            public_url: Option<String>,
            // Tables last: TOML values cannot follow them.
            profiles: &'a BTreeMap<String, PathBuf>,
            exec_timeout: String,
            max_exec_timeout: String,
            log_max_size: String,
            // References (env:VARIABLE, file:PATH), never the tokens.
            git_tokens: BTreeMap<&'a str, String>,
            max_upload: String,
            agents: &'a BTreeMap<String, AgentTemplate>,
        }
        let shown = Shown {
            listen: self.listen.to_string(),
            data_dir: &self.data_dir,
            domain: &self.domain,
            log_format: self.log_format,
            idle_timeout: humantime::format_duration(self.idle_timeout).to_string(),
            admin_email: &self.admin_email,
            admin_token: self.admin_token.as_ref().map(|_| REDACTED),
            trusted_proxies: self.trusted_proxies.iter().map(|a| a.to_string()).collect(),
            profiles: &self.profiles,
            exec_timeout: humantime::format_duration(self.exec_timeout).to_string(),
            max_exec_timeout: humantime::format_duration(self.max_exec_timeout).to_string(),
            log_max_size: corral_policy::format_size(self.log_max_size),
            git_tokens: self
                .git_tokens
                .iter()
                .map(|(host, source)| (host.as_str(), source.reference()))
                .collect(),
            max_upload: corral_policy::format_size(self.max_upload),
            suffix: &self.suffix,
            agents: &self.agents,
            tls_cert: self.tls_cert.as_deref(),
            tls_key: self.tls_key.as_deref(),
            public_url: self.public_url.as_ref().map(ToString::to_string),
        };
        // Serializing plain strings, paths and lists cannot fail; a non-UTF-8 data dir is
        // the one exception, shown lossily instead.
        toml::to_string(&shown).unwrap_or_else(|_| {
            format!(
                "# data_dir is not UTF-8: {}\n",
                self.data_dir.to_string_lossy()
            )
        })
    }
}

/// `$XDG_DATA_HOME/corral`, else `~/.local/share/corral`.
fn default_data_dir(lookup: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    lookup("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            lookup("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".local/share"))
        })
        .map(|base| base.join("corral"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_use_xdg_data_home_then_home() {
        let c = Config::load(None, env(&[("HOME", "/home/u")]), ConfigLayer::default()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(c.data_dir, Path::new("/home/u/.local/share/corral"));
        assert_eq!(c.domain, "localhost");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.idle_timeout, Duration::from_secs(1800));
        assert_eq!(c.admin_email, "admin@localhost");
        assert!(c.admin_token.is_none() && c.trusted_proxies.is_empty());

        let c = Config::load(
            None,
            env(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "/xdg")]),
            ConfigLayer::default(),
        )
        .unwrap();
        assert_eq!(c.data_dir, Path::new("/xdg/corral"));

        let err = Config::load(None, env(&[]), ConfigLayer::default()).unwrap_err();
        assert!(matches!(err, ConfigError::NoDataDir));
    }

    #[test]
    fn a_public_url_sets_the_domain_and_must_agree_with_one_given() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "public_url = \"https://Corral.Example.com\"\n");
        let home = env(&[("HOME", "/home/u")]);
        let c = Config::load(Some(&file), &home, ConfigLayer::default()).unwrap();
        assert_eq!(c.domain, "corral.example.com");
        assert!(
            c.to_redacted_toml()
                .contains("public_url = \"https://corral.example.com\"")
        );

        let other = env(&[("HOME", "/home/u"), ("CORRAL_DOMAIN", "other.example")]);
        let err = Config::load(Some(&file), &other, ConfigLayer::default()).unwrap_err();
        assert!(err.to_string().contains("must be the domain"), "{err}");

        let bad = env(&[
            ("HOME", "/home/u"),
            ("CORRAL_PUBLIC_URL", "corral.example.com"),
        ]);
        let err = Config::load(None, &bad, ConfigLayer::default()).unwrap_err();
        assert!(err.to_string().contains("CORRAL_PUBLIC_URL"), "{err}");
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "listen = \"127.0.0.1:1111\"\ndomain = \"file.example\"\nlog_format = \"json\"\n\
             idle_timeout = \"5m\"\ndata_dir = \"/from/file\"\n",
        );
        let vars = env(&[
            ("CORRAL_LISTEN", "127.0.0.1:2222"),
            ("CORRAL_DOMAIN", "env.example"),
        ]);
        let flags = ConfigLayer {
            listen: Some("127.0.0.1:3333".parse().unwrap()),
            ..Default::default()
        };
        let c = Config::load(Some(&file), &vars, flags).unwrap();
        assert_eq!(c.listen.port(), 3333, "flag beats env and file");
        assert_eq!(c.domain, "env.example", "env beats file");
        assert_eq!(c.log_format, LogFormat::Json, "file beats default");
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.data_dir, Path::new("/from/file"));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "domain = \"x\"\nlisten_addr = \"1\"\n");
        let err = Config::load(Some(&file), env(&[("HOME", "/h")]), ConfigLayer::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("listen_addr"),
            "{err}"
        );

        let err = Config::load(
            None,
            env(&[("HOME", "/h"), ("CORRAL_IDLE_TIMEOUT", "soon")]),
            ConfigLayer::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("CORRAL_IDLE_TIMEOUT"), "{err}");

        let err = Config::load(
            None,
            env(&[("HOME", "/h"), ("CORRAL_TRUSTED_PROXIES", "10.0.0.1, nope")]),
            ConfigLayer::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"nope\""), "{err}");
    }

    #[test]
    fn short_admin_token_is_refused_without_echoing_it() {
        let err = Config::load(
            None,
            env(&[("HOME", "/h"), ("CORRAL_ADMIN_TOKEN", "hunter2")]),
            ConfigLayer::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("admin_token") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn a_file_error_does_not_quote_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "admin_token = \"s3cret-value-that-is-long\" x\n",
        );
        let err = ConfigLayer::from_file(&file).unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn extra_profiles_come_from_the_file_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("local.toml");
        std::fs::write(&profile, "extends = \"restricted\"\n").unwrap();
        let file = write(
            dir.path(),
            &format!("[profiles]\nlocal = \"{}\"\n", profile.display()),
        );
        let c = Config::load(Some(&file), env(&[("HOME", "/h")]), ConfigLayer::default()).unwrap();
        assert_eq!(c.profiles.get("local"), Some(&profile));
        let back: ConfigLayer = toml::from_str(&c.to_redacted_toml()).unwrap();
        assert_eq!(back.profiles, Some(c.profiles.clone()));

        for (text, expected) in [
            (
                format!("[profiles]\nrestricted = \"{}\"\n", profile.display()),
                "built-in",
            ),
            ("[profiles]\nlocal = \"rel.toml\"\n".to_string(), "absolute"),
            (
                "[profiles]\nlocal = \"/nonexistent/p.toml\"\n".to_string(),
                "local",
            ),
        ] {
            let file = write(dir.path(), &text);
            let err = Config::load(Some(&file), env(&[("HOME", "/h")]), ConfigLayer::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("profiles") && err.contains(expected), "{err}");
        }
    }

    #[test]
    fn printed_config_redacts_the_token_and_reads_back() {
        let token = "t".repeat(40);
        let c = Config::load(
            None,
            env(&[
                ("HOME", "/h"),
                ("CORRAL_ADMIN_TOKEN", &token),
                ("CORRAL_TRUSTED_PROXIES", "10.0.0.1,::1"),
            ]),
            ConfigLayer::default(),
        )
        .unwrap();
        let text = c.to_redacted_toml();
        assert!(!text.contains(&token), "{text}");
        assert!(text.contains("admin_token = \"<redacted>\""), "{text}");
        let back: ConfigLayer = toml::from_str(&text).unwrap();
        assert_eq!(back.trusted_proxies, Some(c.trusted_proxies.clone()));
        assert_eq!(back.idle_timeout, Some(c.idle_timeout));
        assert_eq!(back.listen, Some(c.listen));
    }

    #[test]
    fn operations_settings_layer_and_git_tokens_print_as_references() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "exec_timeout = \"2m\"\nlog_max_size = \"64K\"\n[git_tokens]\n\
             \"github.com\" = \"env:GH_TOKEN\"\n\"git.example.com\" = \"file:/etc/t\"\n",
        );
        let vars = env(&[("HOME", "/h"), ("GH_TOKEN", "ghp_s3cret")]);
        let c = Config::load(Some(&file), &vars, ConfigLayer::default()).unwrap();
        assert_eq!(c.exec_timeout, Duration::from_secs(120));
        assert_eq!(c.max_exec_timeout, Duration::from_secs(3600));
        assert_eq!(c.log_max_size, 64 * 1024);
        let text = c.to_redacted_toml();
        assert!(!text.contains("ghp_s3cret"), "{text}");
        assert!(text.contains("\"github.com\" = \"env:GH_TOKEN\""), "{text}");
        let back: ConfigLayer = toml::from_str(&text).unwrap();
        assert_eq!(back.log_max_size, Some(64 * 1024));
        assert_eq!(back.exec_timeout, Some(c.exec_timeout));

        // The environment replaces the table; a variable that is not set is named.
        let vars = env(&[("HOME", "/h"), ("CORRAL_GIT_TOKENS", "h.example=env:NOPE")]);
        let err = Config::load(Some(&file), &vars, ConfigLayer::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("git_tokens") && err.contains("NOPE"), "{err}");
        let vars = env(&[("HOME", "/h"), ("CORRAL_EXEC_TIMEOUT", "2h")]);
        let err = Config::load(None, &vars, ConfigLayer::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("exec_timeout"), "{err}");
    }
}
