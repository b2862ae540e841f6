//! The gate: resolve a destination, decide `connect` for each address, record every decision,
//! and open the connection only to an address that was allowed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use corral_policy::{
    Action, AuditEvent, AuditLog, Decision, PolicyEngine, PolicyHandle, Request, SandboxIdentity,
    TrafficLog,
};

use crate::traffic::Tally;

/// Decisions remembered per policy before the cache starts over (bounds memory for a sandbox
/// trying many hosts).
const MAX_CACHED_DECISIONS: usize = 4096;
use tokio::net::TcpStream;

/// The reason recorded when a tunnel's TLS server name is not the host it was allowed to.
pub const SNI_MISMATCH: &str = "sni-mismatch";

/// Why a destination was not reached.
#[derive(Debug)]
pub enum Refusal {
    /// Policy denied it; the deciding policy ids.
    Denied {
        /// What was asked (`github.com:443`, `GET example.com/x`).
        what: String,
        /// The profile that decided.
        profile: String,
        /// Deciding policy ids.
        reasons: Vec<String>,
    },
    /// The request itself was malformed (bad host or port).
    BadRequest(String),
    /// Allowed, but the host could not be resolved or reached.
    Unreachable(String),
    /// The request names another host than the one its connection was allowed to.
    Misdirected(String),
}

/// Decides and records for one sandbox.
pub struct Gate {
    sandbox: SandboxIdentity,
    policy: Arc<PolicyHandle>,
    audit: Option<Arc<AuditLog>>,
    /// Where each upstream connection's byte counts go when it ends (set once, while the
    /// proxy is built).
    traffic: OnceLock<Arc<TrafficLog>>,
    connect_timeout: Duration,
    cache: Mutex<DecisionCache>,
}

/// Decisions already made under one policy. The sandbox's identity is fixed and Cedar is
/// deterministic, so the same action under the same policy gets the same answer; a new
/// policy (a reloaded profile) starts the cache over. Every use is still recorded.
#[derive(Default)]
struct DecisionCache {
    /// The policy the entries were made under (kept alive, so it cannot be mistaken for a
    /// newer one at the same address).
    engine: Option<Arc<PolicyEngine>>,
    entries: HashMap<Action, Decision>,
}

impl Gate {
    /// A gate for `sandbox`.
    pub fn new(
        sandbox: SandboxIdentity,
        policy: Arc<PolicyHandle>,
        audit: Option<Arc<AuditLog>>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            sandbox,
            policy,
            audit,
            traffic: OnceLock::new(),
            connect_timeout,
            cache: Mutex::new(DecisionCache::default()),
        }
    }

    /// Records every upstream connection's byte counts to `log` from now on (only the first
    /// log set counts).
    pub(crate) fn count_traffic(&self, log: Arc<TrafficLog>) {
        let _ = self.traffic.set(log);
    }

    /// A tally for a new upstream connection to `host:port` (none without a traffic log).
    pub(crate) fn tally(&self, host: &str, port: u16) -> Option<Tally> {
        let log = self.traffic.get()?;
        Some(Tally::new(Arc::clone(log), host, port))
    }

    /// The sandbox's id, for logs.
    pub fn sandbox_id(&self) -> &str {
        &self.sandbox.id
    }

    /// Decides `action`, records it, and returns the decision.
    pub fn decide(&self, action: Action) -> Decision {
        let request = Request {
            sandbox: self.sandbox.clone(),
            action,
        };
        let engine = self.policy.current();
        let decision = self.evaluate(&engine, &request);
        self.record(&request, &engine.profile().name, &decision);
        decision
    }

    /// `engine`'s decision on `request`, from the cache when it was made before.
    fn evaluate(&self, engine: &Arc<PolicyEngine>, request: &Request) -> Decision {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if !cache
            .engine
            .as_ref()
            .is_some_and(|e| Arc::ptr_eq(e, engine))
        {
            cache.engine = Some(Arc::clone(engine));
            cache.entries.clear();
        }
        if let Some(decision) = cache.entries.get(&request.action) {
            return decision.clone();
        }
        let decision = engine.decide(request);
        if decision.errors.is_empty() {
            if cache.entries.len() >= MAX_CACHED_DECISIONS {
                cache.entries.clear();
            }
            cache
                .entries
                .insert(request.action.clone(), decision.clone());
        }
        decision
    }

    fn record(&self, request: &Request, profile: &str, decision: &Decision) {
        let event = AuditEvent::new(request, profile, decision);
        tracing::info!(
            sandbox = %self.sandbox.id,
            action = %event.action,
            resource = %event.resource,
            decision = %event.decision,
            policies = %decision.reasons_text(),
            "egress decision"
        );
        if let Some(audit) = &self.audit
            && let Err(e) = audit.record(&event)
        {
            tracing::warn!(error = %e, "audit log write failed");
        }
    }

    /// Records a tunnel refused because its TLS ClientHello named `claimed` rather than the
    /// host that was allowed: domain fronting, or relaying through an allowed host.
    pub fn refuse_server_name(&self, claimed: &str, allowed: &str, port: u16) {
        let request = Request {
            sandbox: self.sandbox.clone(),
            action: Action::Connect {
                host: claimed.to_string(),
                port,
                ip: None,
            },
        };
        let decision = Decision {
            allowed: false,
            audit_only: false,
            reasons: vec![SNI_MISMATCH.to_string()],
            errors: vec![format!("the tunnel was allowed to {allowed}:{port}")],
        };
        let event = AuditEvent::new(&request, &self.profile_name(), &decision);
        tracing::warn!(sandbox = %self.sandbox.id, claimed, allowed, "TLS server name does not match the CONNECT host");
        if let Some(audit) = &self.audit
            && let Err(e) = audit.record(&event)
        {
            tracing::warn!(error = %e, "audit log write failed");
        }
    }

    /// Records a connection to `host:port` that `reason` (the inference router) serves in
    /// the host's place: allowed without a `connect` decision, the host never contacted.
    pub fn record_routed(&self, host: &str, port: u16, reason: &str) {
        let request = Request {
            sandbox: self.sandbox.clone(),
            action: Action::Connect {
                host: host.to_string(),
                port,
                ip: None,
            },
        };
        let decision = Decision {
            allowed: true,
            audit_only: false,
            reasons: vec![reason.to_string()],
            errors: Vec::new(),
        };
        self.record(&request, &self.profile_name(), &decision);
    }

    /// Whether the profile now in force needs `host`'s TLS intercepted.
    pub fn profile_intercepts(&self, host: &str) -> bool {
        self.policy.current().profile().intercepts(host)
    }

    /// The profile name now in force.
    pub fn profile_name(&self) -> String {
        self.policy.current().profile().name.clone()
    }

    /// Resolves `host`, decides `connect` for each address and connects to the first allowed
    /// one. The first denial is reported when none is allowed.
    pub async fn open(&self, host: &str, port: u16) -> Result<TcpStream, Refusal> {
        let host = normalize(host)?;
        // Decided on the name first: a name no rule allows is never looked up, so the
        // sandbox cannot leak data through the proxy's DNS queries.
        let by_name = Request {
            sandbox: self.sandbox.clone(),
            action: Action::Connect {
                host: host.clone(),
                port,
                ip: None,
            },
        };
        let engine = self.policy.current();
        // An address needs no lookup: its own decision below is the only one needed.
        let named = match host.parse::<IpAddr>() {
            Ok(_) => None,
            Err(_) => Some(self.evaluate(&engine, &by_name)),
        };
        if let Some(named) = named.filter(|named| !named.allowed) {
            self.record(&by_name, &engine.profile().name, &named);
            return Err(Refusal::Denied {
                what: format!("connect to {host}:{port}"),
                profile: engine.profile().name.clone(),
                reasons: named.reasons,
            });
        }
        let addresses = self.resolve(&host, port).await?;
        let mut first_denial = None;
        let mut last_error = None;
        for address in addresses {
            let decision = self.decide(Action::Connect {
                host: host.clone(),
                port,
                ip: Some(address.ip()),
            });
            if !decision.allowed {
                first_denial.get_or_insert(decision.reasons);
                continue;
            }
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last_error = Some(format!("{address}: {e}")),
                Err(_) => last_error = Some(format!("{address}: timed out")),
            }
        }
        match (first_denial, last_error) {
            (_, Some(error)) => Err(Refusal::Unreachable(format!(
                "cannot connect to {host}:{port} ({error})"
            ))),
            (Some(reasons), None) => Err(Refusal::Denied {
                what: format!("connect to {host}:{port}"),
                profile: self.profile_name(),
                reasons,
            }),
            (None, None) => Err(Refusal::Unreachable(format!("{host} has no addresses"))),
        }
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        match tokio::net::lookup_host((host, port)).await {
            Ok(found) => Ok(found.collect()),
            Err(e) => Err(Refusal::Unreachable(format!("cannot resolve {host}: {e}"))),
        }
    }
}

/// Lower-cases a host and strips brackets and a trailing dot, refusing what is not a host
/// (patterns included).
pub fn normalize(host: &str) -> Result<String, Refusal> {
    let host = corral_policy::normalize_host(host).map_err(Refusal::BadRequest)?;
    // `*` belongs in rules, not in a destination (it would reach the resolver as a label).
    if host.contains('*') {
        return Err(Refusal::BadRequest(format!(
            "{host:?} is a pattern, not a host: name the host to connect to"
        )));
    }
    Ok(host)
}
