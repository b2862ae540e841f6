//! The CLI's side of the gateway API: where the gateway is and which token to use (saved by
//! `corral login`, overridden by `CORRAL_URL` and `CORRAL_TOKEN`), and JSON requests whose
//! refusals become messages that say what the gateway said.
//!
//! The token is a secret: it is written only to the 0600 credentials file and sent only as a
//! Bearer header; no message here quotes it.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where `corral login` keeps the gateway URL and token.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The gateway's base URL, e.g. `http://127.0.0.1:7070`.
    pub url: String,
    /// The API token.
    pub token: String,
}

/// The credentials file: `$XDG_CONFIG_HOME/corral/credentials.toml`, else
/// `~/.config/corral/credentials.toml`.
pub fn credentials_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|d| Path::new(d).is_absolute()) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .filter(|h| Path::new(h).is_absolute())
            .map(|h| PathBuf::from(h).join(".config"))
            .context("set HOME or XDG_CONFIG_HOME so corral knows where to keep credentials")?,
    };
    Ok(base.join("corral").join("credentials.toml"))
}

/// Saves `credentials` (file mode 0600, directory 0700), replacing the file atomically.
pub fn save(credentials: &Credentials) -> anyhow::Result<PathBuf> {
    let path = credentials_path()?;
    let dir = path.parent().context("credentials path has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let text = toml::to_string(credentials).context("cannot encode the credentials")?;
    let tmp = dir.join(".credentials.toml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// A gateway to talk to.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client for `url` with `token`.
    pub fn new(url: &str, token: &str) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("the gateway URL must start with http:// or https:// (got {base:?})");
        }
        Ok(Self {
            base,
            token: token.to_string(),
            agent: ureq::AgentBuilder::new().build(),
        })
    }

    /// The client the environment and the saved credentials describe: `CORRAL_URL` and
    /// `CORRAL_TOKEN` win over what `corral login` saved.
    pub fn from_environment() -> anyhow::Result<Self> {
        let saved = credentials_path()
            .ok()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| toml::from_str::<Credentials>(&text).ok());
        let url = std::env::var("CORRAL_URL")
            .ok()
            .or_else(|| saved.as_ref().map(|c| c.url.clone()));
        let token = std::env::var("CORRAL_TOKEN")
            .ok()
            .or_else(|| saved.as_ref().map(|c| c.token.clone()));
        match (url, token) {
            (Some(url), Some(token)) => Self::new(&url, &token),
            _ => bail!(
                "not logged in to a gateway: run `corral login --url URL --token TOKEN` \
                 (or set CORRAL_URL and CORRAL_TOKEN)"
            ),
        }
    }

    /// `GET path`, the JSON answer.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(self.request("GET", path), None)
    }

    /// `POST path` with `body`, the JSON answer.
    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(self.request("POST", path), Some(body))
    }

    /// `PUT path` with `body`, the JSON answer.
    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(self.request("PUT", path), Some(body))
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.delete_json(path).map(drop)
    }

    /// `DELETE path`, the JSON answer.
    pub fn delete_json(&self, path: &str) -> anyhow::Result<Value> {
        self.call(self.request("DELETE", path), None)
    }

    /// `GET path` as a stream of bytes (logs), for copying as it arrives.
    pub fn stream(&self, path: &str) -> anyhow::Result<Box<dyn std::io::Read + Send>> {
        match self.request("GET", path).call() {
            Ok(response) => Ok(Box::new(response.into_reader())),
            Err(e) => Err(self.explain(e)),
        }
    }

    /// `PUT path` with `body` streamed as `content_type` (chunked), the JSON answer.
    pub fn put_stream(
        &self,
        path: &str,
        content_type: &str,
        body: impl std::io::Read,
    ) -> anyhow::Result<Value> {
        let request = self.request("PUT", path).set("Content-Type", content_type);
        match request.send(body) {
            Ok(response) => serde_json::from_str(
                &response
                    .into_string()
                    .context("cannot read the gateway's answer")?,
            )
            .context("the gateway answered something not JSON"),
            Err(e) => Err(self.explain(e)),
        }
    }

    /// The WebSocket request for `path` (`ws://` or `wss://`, with the token).
    pub fn websocket_request(
        &self,
        path: &str,
    ) -> anyhow::Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = match self.base.strip_prefix("http") {
            Some(rest) => format!("ws{rest}{path}"),
            None => bail!("the gateway URL must start with http:// or https://"),
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .with_context(|| format!("bad WebSocket URL {url:?}"))?;
        let bearer = format!("Bearer {}", self.token)
            .parse()
            .context("the token is not a valid header value")?;
        request.headers_mut().insert("Authorization", bearer);
        Ok(request)
    }

    /// What the gateway said when it refused with `code` and `body` (its `error.message`).
    pub fn refusal(code: u16, body: &str) -> anyhow::Error {
        let message = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "no explanation given".into());
        let hint = if code == 401 {
            " (log in again: corral login --url URL --token TOKEN)"
        } else {
            ""
        };
        anyhow::anyhow!("the gateway refused ({code}): {message}{hint}")
    }

    /// Where the gateway is, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
    }

    fn call(&self, request: ureq::Request, body: Option<&Value>) -> anyhow::Result<Value> {
        let sent = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        match sent {
            Ok(response) if response.status() == 204 => Ok(Value::Null),
            Ok(response) => {
                let text = response
                    .into_string()
                    .context("cannot read the gateway's answer")?;
                if text.is_empty() {
                    return Ok(Value::Null);
                }
                serde_json::from_str(&text).context("the gateway answered something not JSON")
            }
            Err(e) => Err(self.explain(e)),
        }
    }

    /// Turns a refusal into what the gateway said (its `error.message`), or a transport
    /// failure into where corral tried to connect.
    fn explain(&self, error: ureq::Error) -> anyhow::Error {
        match error {
            ureq::Error::Status(code, response) => {
                Self::refusal(code, &response.into_string().unwrap_or_default())
            }
            ureq::Error::Transport(transport) => anyhow::anyhow!(
                "cannot reach the gateway at {}: {transport} (is `corral up` running there?)",
                self.base
            ),
        }
    }
}
