//! The one decision point: a compiled, schema-validated policy set and `decide`.
//!
//! Threat model: the request fields come from what a sandboxed agent sent (a host name, a
//! path, a branch), so they are normalised here (lower-case hosts, canonical IPs, lexically
//! resolved paths) before Cedar sees them; a path like `/workspace/../etc/shadow` is decided
//! as `/etc/shadow`. Evaluation errors fail closed: a request that makes any policy error is
//! denied, because a skipped `forbid` would otherwise let it through.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use miette::Diagnostic;
use serde::Serialize;

use crate::compile::{CompiledPolicy, compile};
use crate::error::{PolicyError, line_of};
use crate::profile::{Mode, Profile};
use crate::rules::{is_non_public, normalize_host};

/// corral's Cedar schema, as shipped in `profiles/corral.cedarschema`.
pub const SCHEMA_TEXT: &str = include_str!("../../../profiles/corral.cedarschema");

/// The reason given when no policy permits an action.
pub const DEFAULT_DENY: &str = "default-deny";

/// The reason given when evaluating the policies failed (and the request was denied).
pub const EVALUATION_ERROR: &str = "evaluation-error";

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    // The schema ships inside the binary and is parsed by a unit test, so a broken edit
    // fails the build's tests rather than a user's run.
    Schema::from_cedarschema_str(SCHEMA_TEXT)
        .map(|(schema, _warnings)| schema)
        .expect("profiles/corral.cedarschema is valid (checked by tests)")
});

/// Who is asking: the sandbox and what it was created for. Policies can say "only alice's
/// sandboxes" (`principal.owner.email == "alice@example.com"`) or "only for this repo".
#[derive(Debug, Clone, Default, Serialize)]
pub struct SandboxIdentity {
    /// Sandbox id.
    pub id: String,
    /// Owner's email (empty for `corral run`).
    pub owner: String,
    /// Repository the sandbox works on (empty when none).
    pub repo: String,
    /// Branch the sandbox works on (empty when none).
    pub branch: String,
}

/// What a sandbox wants to do, with the resource it wants to do it to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Open a TCP connection to `host:port` (`ip`: the address it resolved to).
    Connect {
        /// Host name or address as the agent named it.
        host: String,
        /// TCP port.
        port: u16,
        /// Resolved address, when known.
        ip: Option<IpAddr>,
    },
    /// Send an HTTP request.
    HttpRequest {
        /// Host.
        host: String,
        /// Request path (without the query).
        path: String,
        /// Method, upper case.
        method: String,
    },
    /// Update a branch with git push.
    GitPush {
        /// Remote host.
        remote: String,
        /// Repository path on the remote, e.g. `acme/app.git`.
        repo: String,
        /// Branch (short name) or full ref name.
        branch: String,
    },
    /// Call a model.
    Inference {
        /// Provider name.
        provider: String,
        /// Model name.
        model: String,
    },
    /// Call an MCP tool.
    McpToolCall {
        /// Server name.
        server: String,
        /// Tool name.
        tool: String,
    },
    /// Execute a file.
    Exec {
        /// Absolute path inside the sandbox.
        path: String,
    },
    /// Read a file or list a directory.
    Read {
        /// Absolute path inside the sandbox.
        path: String,
    },
    /// Create, change or delete a file.
    Write {
        /// Absolute path inside the sandbox.
        path: String,
    },
}

/// The action names, as the schema and `corral policy check --action` spell them.
pub const ACTION_NAMES: &[&str] = &[
    "connect",
    "http_request",
    "git_push",
    "inference",
    "mcp_tool_call",
    "exec",
    "read",
    "write",
];

impl Action {
    /// The Cedar action name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::HttpRequest { .. } => "http_request",
            Self::GitPush { .. } => "git_push",
            Self::Inference { .. } => "inference",
            Self::McpToolCall { .. } => "mcp_tool_call",
            Self::Exec { .. } => "exec",
            Self::Read { .. } => "read",
            Self::Write { .. } => "write",
        }
    }

    /// The resource in one line, for audit events and messages: `github.com:443`,
    /// `POST api.github.com/repos`, `github.com/acme/app.git#main`.
    pub fn resource_label(&self) -> String {
        match self {
            Self::Connect { host, port, .. } => format!("{host}:{port}"),
            Self::HttpRequest { host, path, method } => format!("{method} {host}{path}"),
            Self::GitPush {
                remote,
                repo,
                branch,
            } => format!("{remote}/{repo}#{branch}"),
            Self::Inference { provider, model } => format!("{provider}/{model}"),
            Self::McpToolCall { server, tool } => format!("{server}/{tool}"),
            Self::Exec { path } | Self::Read { path } | Self::Write { path } => path.clone(),
        }
    }

    /// The same action with its fields normalised as decisions see them.
    fn normalized(&self) -> Result<Self, PolicyError> {
        let host = |h: &str| normalize_host(h).map_err(PolicyError::Request);
        Ok(match self {
            Self::Connect { host: h, port, ip } => Self::Connect {
                host: host(h)?,
                port: *port,
                ip: ip
                    .map(|ip| ip.to_canonical())
                    .or_else(|| h.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())),
            },
            Self::HttpRequest {
                host: h,
                path,
                method,
            } => Self::HttpRequest {
                host: host(h)?,
                path: normalize_url_path(path),
                method: method.to_ascii_uppercase(),
            },
            Self::GitPush {
                remote,
                repo,
                branch,
            } => Self::GitPush {
                remote: host(remote)?,
                repo: repo.trim_matches('/').to_string(),
                branch: branch
                    .strip_prefix("refs/heads/")
                    .unwrap_or(branch)
                    .to_string(),
            },
            Self::Exec { path } => Self::Exec {
                path: normalize_path(path)?,
            },
            Self::Read { path } => Self::Read {
                path: normalize_path(path)?,
            },
            Self::Write { path } => Self::Write {
                path: normalize_path(path)?,
            },
            other => other.clone(),
        })
    }
}

/// The path an HTTP server would act on: the query dropped, `%2e`, `%2f` and `%5c` decoded,
/// backslashes as slashes, and `.` and `..` segments resolved, so a rule for `/repos/*` cannot
/// be walked out of with `/repos/../admin` or `/repos/%2e%2e/admin`.
fn normalize_url_path(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut decoded = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        decoded.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3).map(str::to_ascii_lowercase);
        match code.as_deref() {
            Some("2e") => decoded.push('.'),
            Some("2f") | Some("5c") => decoded.push('/'),
            _ => {
                decoded.push('%');
                rest = &rest[at + 1..];
                continue;
            }
        }
        rest = &rest[at + 3..];
    }
    decoded.push_str(rest);
    let decoded = decoded.replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let trailing = decoded.ends_with('/') && !segments.is_empty();
    format!("/{}{}", segments.join("/"), if trailing { "/" } else { "" })
}

/// Resolves `.` and `..` lexically; refuses relative paths.
fn normalize_path(path: &str) -> Result<String, PolicyError> {
    if !path.starts_with('/') {
        return Err(PolicyError::Request(format!(
            "path {path:?} must be absolute (as seen inside the sandbox)"
        )));
    }
    let mut out = PathBuf::from("/");
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out.to_string_lossy().into_owned())
}

/// One decision to make.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    /// Who asks.
    pub sandbox: SandboxIdentity,
    /// What for.
    #[serde(flatten)]
    pub action: Action,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the action may go ahead.
    pub allowed: bool,
    /// True when policies deny but the section is in audit mode, so the action goes ahead and
    /// the denial is only recorded.
    pub audit_only: bool,
    /// The ids of the policies that decided: the permits that allowed, or the forbids that
    /// denied, or [`DEFAULT_DENY`] when nothing permitted.
    pub reasons: Vec<String>,
    /// Errors met while deciding (the request is then denied).
    pub errors: Vec<String>,
}

impl Decision {
    /// `allow`, `deny`, or `audit-deny` (denied by policy, allowed by audit mode).
    pub fn verdict(&self) -> &'static str {
        match (self.allowed, self.audit_only) {
            (true, false) => "allow",
            (true, true) => "audit-deny",
            (false, _) => "deny",
        }
    }

    /// The deciding policies, comma-separated, for headers and one-line messages.
    pub fn reasons_text(&self) -> String {
        self.reasons.join(", ")
    }

    fn denied(reason: &str, error: String) -> Self {
        Self {
            allowed: false,
            audit_only: false,
            reasons: vec![reason.into()],
            errors: vec![error],
        }
    }
}

/// A profile compiled to Cedar and validated against the schema, ready to decide.
#[derive(Debug)]
pub struct PolicyEngine {
    profile: Profile,
    index: PolicyIndex,
    compiled: Vec<CompiledPolicy>,
}

/// The validated policies split by the action they can apply to, and for `connect` by the
/// exact host a rule names, so a decision evaluates only policies that could match it (Cedar
/// evaluates every policy in the set it is given). The split is exact: a policy left out of a
/// set is one whose scope or host condition can never hold for requests that use that set.
#[derive(Debug, Default)]
struct PolicyIndex {
    by_action: HashMap<String, ActionPolicies>,
}

#[derive(Debug, Default)]
struct ActionPolicies {
    /// Policies not tied to one host.
    general: PolicySet,
    /// For each host some rule names exactly: `general` plus that host's rules.
    by_host: HashMap<String, PolicySet>,
}

impl PolicyIndex {
    fn new(all: &PolicySet, compiled: &[CompiledPolicy]) -> Result<Self, PolicyError> {
        let mut index = Self::default();
        let only_host = |id: &str| {
            compiled
                .iter()
                .find(|c| c.id == id)
                .and_then(|c| c.only_host.clone())
        };
        let internal = |e: cedar_policy::PolicySetError| PolicyError::Request(e.to_string());
        for action in ACTION_NAMES {
            let uid = uid("Action", action);
            let mut entry = ActionPolicies::default();
            let mut host_rules: Vec<(String, Policy)> = Vec::new();
            for policy in all.policies() {
                let applies = match policy.action_constraint() {
                    ActionConstraint::Any => true,
                    ActionConstraint::Eq(a) => a == uid,
                    ActionConstraint::In(list) => list.contains(&uid),
                };
                if !applies {
                    continue;
                }
                match only_host(policy.id().as_ref()) {
                    Some(host) => host_rules.push((host, policy.clone())),
                    None => entry.general.add(policy.clone()).map_err(internal)?,
                }
            }
            for (host, policy) in host_rules {
                let set = match entry.by_host.entry(host) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => v.insert(entry.general.clone()),
                };
                set.add(policy).map_err(internal)?;
            }
            index.by_action.insert(action.to_string(), entry);
        }
        Ok(index)
    }

    fn policies_for(&self, action: &Action) -> Option<&PolicySet> {
        let entry = self.by_action.get(action.name())?;
        let host = match action {
            Action::Connect { host, .. } => Some(host),
            _ => None,
        };
        Some(
            host.and_then(|h| entry.by_host.get(h))
                .unwrap_or(&entry.general),
        )
    }
}

impl PolicyEngine {
    /// Compiles `profile` and its raw Cedar files and validates all of it against the
    /// schema. Nothing is usable unless everything is valid.
    pub fn new(profile: Profile) -> Result<Self, PolicyError> {
        let profile_file = profile
            .sources
            .first()
            .cloned()
            .unwrap_or_else(|| PathBuf::from(format!("profiles/{}.toml", profile.name)));
        let mut compiled = compile(&profile);
        let mut policies = PolicySet::new();
        for policy in &compiled {
            let parsed = Policy::parse(Some(PolicyId::new(&policy.id)), &policy.text)
                .map_err(|e| cedar_error(&profile_file, &policy.text, &e, &policy.id))?;
            add(&mut policies, parsed, &profile_file)?;
        }
        for file in &profile.cedar {
            for (id, text) in raw_policies(&file.path, &file.text)? {
                let parsed = Policy::parse(Some(PolicyId::new(&id)), &text)
                    .map_err(|e| cedar_error(&file.path, &file.text, &e, &id))?;
                add(&mut policies, parsed, &file.path)?;
                let text = format!("// {id} (from {})\n{text}", file.path.display());
                compiled.push(CompiledPolicy {
                    id,
                    text,
                    only_host: None,
                });
            }
        }
        validate(&policies, &profile, &profile_file)?;
        let index = PolicyIndex::new(&policies, &compiled)?;
        Ok(Self {
            profile,
            index,
            compiled,
        })
    }

    /// A built-in profile, compiled.
    pub fn builtin(name: &str) -> Result<Self, PolicyError> {
        Self::new(Profile::builtin(name)?)
    }

    /// The profile this engine decides for.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The Cedar policies, as `corral policy show --cedar` prints them.
    pub fn cedar_text(&self) -> String {
        let texts: Vec<&str> = self.compiled.iter().map(|p| p.text.as_str()).collect();
        texts.join("\n\n") + "\n"
    }

    /// Decides one request.
    pub fn decide(&self, request: &Request) -> Decision {
        let action = match request.action.normalized() {
            Ok(action) => action,
            Err(e) => return Decision::denied(EVALUATION_ERROR, e.to_string()),
        };
        let response = match cedar_request(&request.sandbox, &self.profile.name, &action) {
            Ok((cedar_request, entities)) => match self.index.policies_for(&action) {
                Some(policies) => {
                    Authorizer::new().is_authorized(&cedar_request, policies, &entities)
                }
                None => {
                    return Decision::denied(
                        EVALUATION_ERROR,
                        format!("no policies for action {}", action.name()),
                    );
                }
            },
            Err(e) => return Decision::denied(EVALUATION_ERROR, e),
        };
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        let mut reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        reasons.sort();
        let policy_allows = response.decision() == CedarDecision::Allow && errors.is_empty();
        if reasons.is_empty() {
            reasons.push(
                if errors.is_empty() {
                    DEFAULT_DENY
                } else {
                    EVALUATION_ERROR
                }
                .into(),
            );
        }
        let audit = self.mode_for(&action) == Mode::Audit;
        Decision {
            allowed: policy_allows || audit,
            audit_only: !policy_allows && audit,
            reasons,
            errors,
        }
    }

    /// The mode `action` is decided in: its section's, else the profile's.
    pub fn mode_for(&self, action: &Action) -> Mode {
        let p = &self.profile;
        let section = match action {
            Action::Connect { .. } => p.network.mode,
            Action::HttpRequest { .. } => p.http.mode,
            Action::GitPush { .. } => p.git.mode,
            Action::Inference { .. } => p.inference.mode,
            Action::McpToolCall { .. } => p.mcp.mode,
            Action::Exec { .. } => p.exec.mode,
            Action::Read { .. } | Action::Write { .. } => p.filesystem.mode,
        };
        p.section_mode(section)
    }
}

fn add(policies: &mut PolicySet, policy: Policy, file: &Path) -> Result<(), PolicyError> {
    let id = policy.id().to_string();
    policies.add(policy).map_err(|_| PolicyError::Cedar {
        file: file.to_path_buf(),
        line: 1,
        message: format!("two policies have the id {id:?}; give each its own @id"),
    })
}

/// Splits a raw Cedar file into policies with ids: its `@id` annotation, or
/// `<file name>#<n>` (1-based) when it has none.
fn raw_policies(path: &Path, text: &str) -> Result<Vec<(String, String)>, PolicyError> {
    let set = PolicySet::from_str(text).map_err(|e| cedar_error(path, text, &e, ""))?;
    if set.templates().next().is_some() {
        return Err(PolicyError::Cedar {
            file: path.to_path_buf(),
            line: 1,
            message: "templates (policies with ?principal or ?resource) are not supported".into(),
        });
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (n, policy) in set.policies().enumerate() {
        let id = match policy.annotation("id") {
            Some(id) => id.to_string(),
            None => format!("{file_name}#{}", n + 1),
        };
        out.push((id, policy.to_string()));
    }
    Ok(out)
}

fn validate(
    policies: &PolicySet,
    profile: &Profile,
    profile_file: &Path,
) -> Result<(), PolicyError> {
    let result = Validator::new(SCHEMA.clone()).validate(policies, ValidationMode::Strict);
    let Some(error) = result.validation_errors().next() else {
        return Ok(());
    };
    let id = error.policy_id().to_string();
    let message = format!("policy {id:?}: {error}");
    let raw = profile.cedar.iter().find(|file| {
        raw_policies(&file.path, &file.text)
            .map(|list| list.iter().any(|(raw_id, _)| *raw_id == id))
            .unwrap_or(false)
    });
    Err(match raw {
        Some(file) => PolicyError::Cedar {
            file: file.path.clone(),
            line: policy_line(&file.text, &id),
            message,
        },
        None => PolicyError::Cedar {
            file: profile_file.to_path_buf(),
            line: 1,
            message,
        },
    })
}

/// The line a raw policy starts on: where its `@id("…")` is, else the first line.
fn policy_line(text: &str, id: &str) -> usize {
    let needle = format!("\"{id}\"");
    text.find(&needle).map_or(1, |at| line_of(text, at))
}

fn cedar_error(file: &Path, text: &str, error: &dyn Diagnostic, id: &str) -> PolicyError {
    let offset = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let detail = error.help().map(|h| format!(" ({h})")).unwrap_or_default();
    let what = if id.is_empty() {
        String::new()
    } else {
        format!("policy {id:?}: ")
    };
    PolicyError::Cedar {
        file: file.to_path_buf(),
        line: offset.map_or(1, |o| line_of(text, o)),
        message: format!("{what}{error}{detail}"),
    }
}

fn uid(type_name: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(type_name).expect("entity type names are fixed identifiers"),
        EntityId::new(id),
    )
}

fn string(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_string())
}

fn entity(uid: EntityUid, attrs: &[(&str, RestrictedExpression)]) -> Result<Entity, String> {
    let attrs: HashMap<String, RestrictedExpression> = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Entity::new(uid, attrs, HashSet::new()).map_err(|e| e.to_string())
}

/// Builds the Cedar request and the entities it refers to.
fn cedar_request(
    sandbox: &SandboxIdentity,
    profile: &str,
    action: &Action,
) -> Result<(cedar_policy::Request, Entities), String> {
    let owner = uid("User", &sandbox.owner);
    let principal = uid("Sandbox", &sandbox.id);
    let mut entities = vec![
        entity(owner.clone(), &[("email", string(&sandbox.owner))])?,
        entity(
            principal.clone(),
            &[
                ("id", string(&sandbox.id)),
                ("owner", RestrictedExpression::new_entity_uid(owner)),
                ("profile", string(profile)),
                ("repo", string(&sandbox.repo)),
                ("branch", string(&sandbox.branch)),
            ],
        )?,
    ];
    let mut context: Vec<(String, RestrictedExpression)> = Vec::new();
    let (resource_type, attrs): (&str, Vec<(&str, &str)>) = match action {
        Action::Connect { host, port, ip } => {
            context.push((
                "port".into(),
                RestrictedExpression::new_long(i64::from(*port)),
            ));
            if let Some(ip) = ip {
                context.push(("ip".into(), RestrictedExpression::new_ip(ip.to_string())));
                context.push((
                    "public_ip".into(),
                    RestrictedExpression::new_bool(!is_non_public(*ip)),
                ));
            }
            ("Host", vec![("name", host.as_str())])
        }
        Action::HttpRequest { host, path, method } => {
            context.push(("method".into(), string(method)));
            (
                "Url",
                vec![("host", host.as_str()), ("path", path.as_str())],
            )
        }
        Action::GitPush {
            remote,
            repo,
            branch,
        } => (
            "Ref",
            vec![
                ("remote", remote.as_str()),
                ("repo", repo.as_str()),
                ("branch", branch.as_str()),
            ],
        ),
        Action::Inference { provider, model } => (
            "Model",
            vec![("provider", provider.as_str()), ("name", model.as_str())],
        ),
        Action::McpToolCall { server, tool } => (
            "Tool",
            vec![("server", server.as_str()), ("name", tool.as_str())],
        ),
        Action::Exec { path } | Action::Read { path } | Action::Write { path } => {
            ("Path", vec![("path", path.as_str())])
        }
    };
    let resource = uid(resource_type, &action.resource_label());
    let attrs: Vec<(&str, RestrictedExpression)> =
        attrs.into_iter().map(|(k, v)| (k, string(v))).collect();
    entities.push(entity(resource.clone(), &attrs)?);
    let context = Context::from_pairs(context).map_err(|e| e.to_string())?;
    let request = cedar_policy::Request::new(
        principal,
        uid("Action", action.name()),
        resource,
        context,
        None,
    )
    .map_err(|e| e.to_string())?;
    let entities = Entities::from_entities(entities, None).map_err(|e| e.to_string())?;
    Ok((request, entities))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parses() {
        let (_, warnings) = Schema::from_cedarschema_str(SCHEMA_TEXT).unwrap();
        assert_eq!(warnings.count(), 0);
    }

    #[test]
    fn every_builtin_profile_compiles_and_validates() {
        for name in crate::builtin_names() {
            PolicyEngine::builtin(name).unwrap();
        }
    }

    #[test]
    fn url_paths_are_decided_as_a_server_would_read_them() {
        for (raw, decided) in [
            ("/repos/acme/app", "/repos/acme/app"),
            ("", "/"),
            ("/repos/../admin", "/admin"),
            ("/repos/%2e%2E/admin?x=/repos/", "/admin"),
            ("/repos%2f..%2fadmin", "/admin"),
            ("/repos\\..\\admin", "/admin"),
            ("/a//b/./c/", "/a/b/c/"),
            ("/100%25", "/100%25"),
        ] {
            assert_eq!(normalize_url_path(raw), decided, "{raw}");
        }
    }

    #[test]
    fn paths_resolve_lexically_before_deciding() {
        assert_eq!(
            normalize_path("/workspace/../etc/shadow").unwrap(),
            "/etc/shadow"
        );
        assert_eq!(normalize_path("/a/./b//c/").unwrap(), "/a/b/c");
        assert!(normalize_path("etc/shadow").is_err());
    }
}
