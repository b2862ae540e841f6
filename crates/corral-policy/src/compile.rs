//! Profile → Cedar: one policy per rule, each with an `@id` that names the profile, section
//! and rule (`restricted/network/allow:github.com:22,443`, `restricted/git/push-deny:main`), so a decision's reasons point a person at the line they would change.
//!
//! Allow rules become `permit`s and deny rules `forbid`s; Cedar's "forbid wins, nothing
//! permitted means deny" is the whole combining logic. The non-public-address guard is a
//! `forbid` too, with the profile's explicit grants as its `unless`.

use crate::profile::Profile;
use crate::rules::{HostPattern, PairPattern, cedar_pattern, cedar_string};

/// Where the sandbox sees its workspace; every profile may read and write there.
pub const WORKSPACE: &str = "/workspace";
/// The sandbox's home directory (writable only when the profile says so).
pub const SANDBOX_HOME: &str = "/home/corral";

/// One compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// Its `@id`: `<profile>/<section>/<kind>:<rule>`, e.g. `moderate/git/push-deny:release/*`.
    pub id: String,
    /// The Cedar text, annotation included.
    pub text: String,
    /// For a `connect` rule about one exact host, that host: the policy cannot apply to any
    /// other, so decisions about other hosts need not evaluate it.
    pub only_host: Option<String>,
}

/// Compiles a profile's TOML rules (not its raw Cedar files) to Cedar policies.
pub fn compile(profile: &Profile) -> Vec<CompiledPolicy> {
    let mut out = Output {
        profile: &profile.name,
        policies: Vec::new(),
    };
    filesystem(profile, &mut out);
    exec(profile, &mut out);
    network(profile, &mut out);
    http(profile, &mut out);
    git(profile, &mut out);
    pairs(
        &profile.inference,
        "inference",
        ("provider", "name"),
        &mut out,
    );
    pairs(&profile.mcp, "mcp_tool_call", ("server", "name"), &mut out);
    out.policies
}

struct Output<'a> {
    profile: &'a str,
    policies: Vec<CompiledPolicy>,
}

#[derive(Clone, Copy)]
enum Effect {
    Permit,
    Forbid,
}

impl Output<'_> {
    /// Adds a policy unless one with the same id exists (a rule inherited and repeated).
    fn add(&mut self, effect: Effect, id: &str, actions: &[&str], when: &str, unless: &str) {
        self.add_for_host(effect, id, actions, when, unless, None);
    }

    fn add_for_host(
        &mut self,
        effect: Effect,
        id: &str,
        actions: &[&str],
        when: &str,
        unless: &str,
        only_host: Option<&str>,
    ) {
        let id = format!("{}/{id}", self.profile);
        if self.policies.iter().any(|p| p.id == id) {
            return;
        }
        let effect = match effect {
            Effect::Permit => "permit",
            Effect::Forbid => "forbid",
        };
        let action = match actions {
            [one] => format!("action == Action::\"{one}\""),
            many => {
                let list: Vec<String> = many.iter().map(|a| format!("Action::\"{a}\"")).collect();
                format!("action in [{}]", list.join(", "))
            }
        };
        let mut text = format!(
            "@id({})\n{effect} (principal, {action}, resource)",
            cedar_string(&id)
        );
        if when != "true" {
            text.push_str(&format!("\nwhen {{ {when} }}"));
        }
        if !unless.is_empty() {
            text.push_str(&format!("\nunless {{ {unless} }}"));
        }
        text.push(';');
        self.policies.push(CompiledPolicy {
            id,
            text,
            only_host: only_host.map(str::to_string),
        });
    }
}

fn filesystem(profile: &Profile, out: &mut Output<'_>) {
    let fs = &profile.filesystem;
    let builtin_read = [WORKSPACE, "/tmp", SANDBOX_HOME];
    for path in builtin_read
        .iter()
        .copied()
        .chain(fs.read_only.iter().map(String::as_str))
        .chain(fs.read_write.iter().map(String::as_str))
    {
        let id = format!("filesystem/read:{path}");
        out.add(Effect::Permit, &id, &["read"], &path_condition(path), "");
    }
    let mut writable = vec![WORKSPACE, "/tmp"];
    if fs.home_writable {
        writable.push(SANDBOX_HOME);
    }
    for path in writable
        .into_iter()
        .chain(fs.read_write.iter().map(String::as_str))
    {
        let id = format!("filesystem/write:{path}");
        out.add(Effect::Permit, &id, &["write"], &path_condition(path), "");
    }
    for path in &fs.hidden {
        let id = format!("filesystem/hidden:{path}");
        let when = path_condition(path);
        out.add(Effect::Forbid, &id, &["read", "write", "exec"], &when, "");
    }
    for path in &fs.protected {
        let id = format!("filesystem/protected:{path}");
        let when = path_condition(&format!("{WORKSPACE}/{path}"));
        out.add(Effect::Forbid, &id, &["write"], &when, "");
    }
}

fn exec(profile: &Profile, out: &mut Output<'_>) {
    match &profile.exec.allow {
        Some(list) => {
            for path in list {
                let id = format!("exec/allow:{path}");
                out.add(Effect::Permit, &id, &["exec"], &path_condition(path), "");
            }
        }
        None => {
            // "Anything readable": the read permits' conditions, as one exec permit.
            let fs = &profile.filesystem;
            let readable: Vec<String> = [WORKSPACE, "/tmp", SANDBOX_HOME]
                .iter()
                .map(|p| p.to_string())
                .chain(fs.read_only.iter().cloned())
                .chain(fs.read_write.iter().cloned())
                .map(|p| path_condition(&p))
                .collect();
            out.add(
                Effect::Permit,
                "exec/anything-readable",
                &["exec"],
                &readable.join(" || "),
                "",
            );
        }
    }
}

fn network(profile: &Profile, out: &mut Output<'_>) {
    let net = &profile.network;
    for (rules, effect, kind) in [
        (&net.allow, Effect::Permit, "allow"),
        (&net.deny, Effect::Forbid, "deny"),
    ] {
        for rule in rules {
            let id = format!("network/{kind}:{rule}");
            let only_host = match &rule.host {
                HostPattern::Exact(name) => Some(name.as_str()),
                _ => None,
            };
            out.add_for_host(effect, &id, &["connect"], &rule.cedar(), "", only_host);
        }
    }
    // `public_ip` is corral's classification of the resolved address (see NON_PUBLIC_NETWORKS);
    // checking a Bool keeps this guard cheap on the path every connection takes.
    let when = "context has public_ip && !context.public_ip";
    let mut grants: Vec<String> = net.allow_private.iter().map(|g| g.cedar()).collect();
    for rule in &net.allow {
        if let HostPattern::Exact(name) = &rule.host
            && rule.host.ip().is_some()
        {
            grants.push(format!("resource.name == {}", cedar_string(name)));
        }
    }
    grants.dedup();
    out.add(
        Effect::Forbid,
        "network/non-public-address",
        &["connect"],
        when,
        &grants.join(" || "),
    );
}

fn http(profile: &Profile, out: &mut Output<'_>) {
    let http = &profile.http;
    for (i, rule) in http.allow.iter().enumerate() {
        let id = format!("http/allow:{}#{}", rule.host, i + 1);
        out.add(Effect::Permit, &id, &["http_request"], &rule.cedar(), "");
    }
    for (i, rule) in http.deny.iter().enumerate() {
        let id = format!("http/deny:{}#{}", rule.host, i + 1);
        out.add(Effect::Forbid, &id, &["http_request"], &rule.cedar(), "");
    }
    // Hosts without HTTP rules are not inspected: their requests are the connect decision's.
    let inspected: Vec<String> = http
        .allow
        .iter()
        .chain(&http.deny)
        .map(|r| r.host.cedar_condition("resource.host"))
        .collect();
    let unless = inspected.join(" || ");
    out.add(
        Effect::Permit,
        "http/uninspected-hosts",
        &["http_request"],
        "true",
        &unless,
    );
}

fn git(profile: &Profile, out: &mut Output<'_>) {
    for rule in &profile.git.push {
        let remote = rule.remote.cedar_condition("resource.remote");
        for (globs, effect, kind) in [
            (&rule.allow, Effect::Permit, "allow"),
            (&rule.deny, Effect::Forbid, "deny"),
        ] {
            for glob in globs {
                let id = match &rule.remote {
                    HostPattern::Any => format!("git/push-{kind}:{glob}"),
                    remote => format!("git/push-{kind}:{glob}@{remote}"),
                };
                let branch = glob_condition("resource.branch", glob);
                let when = join_and(&[&remote, &branch]);
                out.add(effect, &id, &["git_push"], &when, "");
            }
        }
    }
}

fn pairs(
    rules: &crate::profile::PairRules,
    action: &str,
    (left, right): (&str, &str),
    out: &mut Output<'_>,
) {
    let section = if action == "inference" {
        "inference"
    } else {
        "mcp"
    };
    let condition = |p: &PairPattern| p.cedar(left, right);
    for pattern in &rules.allow {
        let id = format!("{section}/allow:{pattern}");
        out.add(Effect::Permit, &id, &[action], &condition(pattern), "");
    }
    for pattern in &rules.deny {
        let id = format!("{section}/deny:{pattern}");
        out.add(Effect::Forbid, &id, &[action], &condition(pattern), "");
    }
}

/// `resource.path` is `path` or lies below it; `~/` means any home, `*` any characters.
pub fn path_condition(path: &str) -> String {
    let alternatives: Vec<String> = match path.strip_prefix("~/") {
        Some(rest) => vec![format!("/root/{rest}"), format!("/home/*/{rest}")],
        None => vec![path.to_string()],
    };
    let conditions: Vec<String> = alternatives
        .iter()
        .map(|p| {
            if p == "/" {
                return "resource.path like \"/*\"".to_string();
            }
            let itself = glob_condition("resource.path", p);
            let below = format!("resource.path like {}", cedar_pattern(&format!("{p}/*")));
            format!("{itself} || {below}")
        })
        .collect();
    format!("({})", conditions.join(" || "))
}

/// `attribute == "x"` for a plain value, `attribute like "x*"` for a glob, `true` for `*`.
fn glob_condition(attribute: &str, glob: &str) -> String {
    if glob == "*" {
        "true".into()
    } else if glob.contains('*') {
        format!("{attribute} like {}", cedar_pattern(glob))
    } else {
        format!("{attribute} == {}", cedar_string(glob))
    }
}

fn join_and(parts: &[&str]) -> String {
    let parts: Vec<&str> = parts.iter().copied().filter(|p| *p != "true").collect();
    if parts.is_empty() {
        "true".into()
    } else {
        parts.join(" && ")
    }
}
