//! The inference router: agents in sandboxes call models without ever holding a key.
//!
//! Each running sandbox gets a unix socket, `DATA_DIR/sandboxes/ID/inference.sock`, which its
//! `corral run` egress proxy relays `http://127.0.0.1:3128/inference/...` requests to; the
//! socket, not anything the agent sends, names the sandbox. Per request the router checks the
//! sandbox's placeholder key, its per-sandbox rate and its owner's budget, decides
//! `inference` (provider, model) with the sandbox's profile (recorded in its audit log),
//! rewrites a model alias, swaps the placeholder for the provider's real key, and streams the
//! provider's answer back unbuffered while counting the tokens it reports. Requests a tool
//! sent to the real provider hosts arrive as `/inference/@KIND/...` (`by_kind`).
//!
//! Threat model: everything on the socket comes from a possibly hostile agent. It never sees a
//! real key: keys are sealed at rest ([`keys`]), opened only to build the upstream request
//! (marked sensitive, never logged), and the sandbox's environment holds only its placeholder.
//! A placeholder works only on its own sandbox's socket. Denials name the policy.

mod by_kind;
pub mod keys;
mod meter;
mod route;
mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use corral_policy::{AuditLog, PolicyEngine, PolicyError, Profile};

use crate::config::Config;
use crate::store::{Provider, ProviderKind, Store, StoreError};
pub use keys::{KeyError, ProviderKeys};

/// Where programs in a sandbox reach the router: the egress proxy's address.
pub const ROUTER_URL: &str = "http://127.0.0.1:3128/inference";

/// The inference router shared by every sandbox's socket.
pub struct Inference {
    store: Arc<Store>,
    data_dir: PathBuf,
    sandboxes_dir: PathBuf,
    profiles: BTreeMap<String, PathBuf>,
    keys: OnceLock<ProviderKeys>,
    engines: Mutex<HashMap<String, Arc<PolicyEngine>>>,
    audits: Mutex<HashMap<String, Arc<AuditLog>>>,
    windows: Mutex<HashMap<String, (Instant, i64)>>,
}

/// Serving one sandbox's socket; stops (and removes the socket, and forgets the sandbox's
/// open audit log and rate window) when dropped.
pub struct Serving {
    task: tokio::task::JoinHandle<()>,
    socket: PathBuf,
    inference: Arc<Inference>,
    id: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
        forget(&self.inference.audits, &self.id);
        forget(&self.inference.windows, &self.id);
    }
}

/// Removes `id`'s entry from a per-sandbox map.
fn forget<T>(map: &Mutex<HashMap<String, T>>, id: &str) {
    map.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
}

impl Inference {
    /// A router over `store` with `config`'s data directory and profiles.
    pub fn new(store: Arc<Store>, config: &Config) -> Self {
        Self {
            store,
            data_dir: config.data_dir.clone(),
            sandboxes_dir: config.data_dir.join("sandboxes"),
            profiles: config.profiles.clone(),
            keys: OnceLock::new(),
            engines: Mutex::default(),
            audits: Mutex::default(),
            windows: Mutex::default(),
        }
    }

    /// The provider key, loaded (or created) on first use.
    pub fn keys(&self) -> Result<&ProviderKeys, KeyError> {
        if let Some(keys) = self.keys.get() {
            return Ok(keys);
        }
        let loaded = ProviderKeys::load_or_create(&self.data_dir)?;
        Ok(self.keys.get_or_init(|| loaded))
    }

    /// The socket of sandbox `id`.
    pub fn socket(&self, id: &str) -> PathBuf {
        self.sandboxes_dir.join(id).join("inference.sock")
    }

    /// Serves sandbox `id`'s socket (replacing a stale one) until the returned value drops.
    pub fn serve(self: &Arc<Self>, id: &str) -> std::io::Result<Serving> {
        use std::os::unix::fs::PermissionsExt;
        let socket = self.socket(id);
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket)?;
        // Only the gateway's user (who runs the sandbox's `corral run`) connects.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        let app = route::app(Arc::clone(self), id.to_owned());
        let sandbox = id.to_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(%sandbox, error = %e, "inference socket stopped");
            }
        });
        Ok(Serving {
            task,
            socket,
            inference: Arc::clone(self),
            id: id.to_owned(),
        })
    }

    /// The environment a new sandbox gets so that agents use the router with no set-up:
    /// `ANTHROPIC_BASE_URL`/`ANTHROPIC_API_KEY` for an Anthropic provider,
    /// `OPENAI_BASE_URL`/`OPENAI_API_KEY` for an OpenAI(-compatible) one (the provider named
    /// like its kind first, else the first by name), the sandbox's placeholder as the key, and
    /// `OPENCODE_CONFIG_CONTENT` pointing opencode's providers at the router. Empty when no
    /// provider is configured.
    pub fn sandbox_environment(&self, id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let providers = self.store.providers()?;
        if providers.is_empty() {
            return Ok(Vec::new());
        }
        let placeholder = match self.keys() {
            Ok(keys) => keys.placeholder(id),
            Err(e) => {
                tracing::error!(error = %e, "no provider key: sandboxes get no inference settings");
                return Ok(Vec::new());
            }
        };
        Ok(environment(&providers, &placeholder))
    }

    /// The policy engine for profile `name` (built in, or configured), compiled once.
    fn engine(&self, name: &str) -> Result<Arc<PolicyEngine>, PolicyError> {
        let mut engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(engine) = engines.get(name) {
            return Ok(Arc::clone(engine));
        }
        let profile = match self.profiles.get(name) {
            Some(file) => Profile::load(file)?,
            None => Profile::builtin(name)?,
        };
        let engine = Arc::new(PolicyEngine::new(profile)?);
        engines.insert(name.to_owned(), Arc::clone(&engine));
        Ok(engine)
    }

    /// Sandbox `id`'s audit log (the file its egress proxy appends to as well).
    fn audit(&self, id: &str) -> Option<Arc<AuditLog>> {
        let mut audits = self.audits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(log) = audits.get(id) {
            return Some(Arc::clone(log));
        }
        match AuditLog::open(&self.sandboxes_dir.join(id).join("audit.jsonl")) {
            Ok(log) => {
                let log = Arc::new(log);
                audits.insert(id.to_owned(), Arc::clone(&log));
                Some(log)
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "cannot open the audit log");
                None
            }
        }
    }

    /// Counts one request against sandbox `id`'s per-minute limit; false once it is spent.
    fn admit(&self, id: &str, per_minute: Option<i64>) -> bool {
        let Some(limit) = per_minute else {
            return true;
        };
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let window = windows.entry(id.to_owned()).or_insert((now, 0));
        if now.duration_since(window.0) >= Duration::from_secs(60) {
            *window = (now, 0);
        }
        if window.1 >= limit {
            return false;
        }
        window.1 += 1;
        true
    }
}

/// The variables for `providers` (not empty) with the sandbox's `placeholder`.
fn environment(providers: &[Provider], placeholder: &str) -> Vec<(String, String)> {
    let mut env = vec![("CORRAL_INFERENCE_URL".to_owned(), ROUTER_URL.to_owned())];
    let anthropic = by_kind::pick(providers, "anthropic");
    let openai = by_kind::pick(providers, "openai");
    if let Some(p) = anthropic {
        env.push((
            "ANTHROPIC_BASE_URL".into(),
            format!("{ROUTER_URL}/{}", p.name),
        ));
        env.push(("ANTHROPIC_API_KEY".into(), placeholder.to_owned()));
    }
    if let Some(p) = openai {
        env.push((
            "OPENAI_BASE_URL".into(),
            format!("{ROUTER_URL}/{}/v1", p.name),
        ));
        env.push(("OPENAI_API_KEY".into(), placeholder.to_owned()));
    }
    env.push((
        "OPENCODE_CONFIG_CONTENT".into(),
        opencode_config(providers, placeholder),
    ));
    env
}

/// An opencode configuration with one provider entry per corral provider, each pointing at
/// the router with the placeholder key (opencode ignores `*_BASE_URL` for some providers).
fn opencode_config(providers: &[Provider], placeholder: &str) -> String {
    let mut entries = serde_json::Map::new();
    for p in providers {
        let base = format!("{ROUTER_URL}/{}/v1", p.name);
        let mut entry = serde_json::json!({
            "options": { "baseURL": base, "apiKey": placeholder },
        });
        if p.kind == ProviderKind::OpenAiCompatible {
            entry["npm"] = "@ai-sdk/openai-compatible".into();
            entry["name"] = p.name.clone().into();
        }
        if !p.aliases.is_empty() {
            let models: serde_json::Map<String, serde_json::Value> = p
                .aliases
                .keys()
                .map(|alias| (alias.clone(), serde_json::json!({ "name": alias })))
                .collect();
            entry["models"] = models.into();
        }
        entries.insert(p.name.clone(), entry);
    }
    serde_json::json!({ "$schema": "https://opencode.ai/config.json", "provider": entries })
        .to_string()
}

/// The UTC day (`YYYY-MM-DD`) of now.
fn today() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    now[..10].to_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A provider record for tests: no key, no aliases.
    pub(crate) fn provider(name: &str, kind: ProviderKind) -> Provider {
        Provider {
            name: name.into(),
            kind,
            base_url: "http://x".into(),
            sealed_key: Vec::new(),
            allow_private: false,
            aliases: BTreeMap::new(),
            created: 0,
        }
    }

    #[test]
    fn the_environment_points_agents_at_the_router_with_the_placeholder() {
        let providers = [
            provider("claude", ProviderKind::Anthropic),
            provider("local", ProviderKind::OpenAiCompatible),
            provider("openai", ProviderKind::OpenAi),
        ];
        let env: HashMap<String, String> =
            environment(&providers, "sk-corral-x").into_iter().collect();
        assert_eq!(env["ANTHROPIC_BASE_URL"], format!("{ROUTER_URL}/claude"));
        assert_eq!(env["OPENAI_BASE_URL"], format!("{ROUTER_URL}/openai/v1"));
        assert_eq!(env["ANTHROPIC_API_KEY"], "sk-corral-x");
        let opencode: serde_json::Value =
            serde_json::from_str(&env["OPENCODE_CONFIG_CONTENT"]).unwrap();
        assert_eq!(
            opencode["provider"]["local"]["npm"],
            "@ai-sdk/openai-compatible"
        );
        assert!(today().starts_with("20"));
    }

    #[test]
    fn the_rate_window_admits_up_to_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let layer = crate::config::ConfigLayer {
            data_dir: Some(dir.path().to_owned()),
            ..Default::default()
        };
        let config = Config::from_layer(layer, |_| None).unwrap();
        let inference = Inference::new(store, &config);
        assert!((0..3).all(|_| inference.admit("s", Some(3))));
        assert!(!inference.admit("s", Some(3)));
        assert!(inference.admit("other", Some(3)));
        assert!(inference.admit("s", None));
    }
}
