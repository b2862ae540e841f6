//! Profile files as people write them: `extends`, raw Cedar, audit mode, the errors a broken
//! file gets, hot reload and the audit log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corral_policy::{
    Action, AuditEvent, AuditLog, PolicyEngine, PolicyError, PolicyHandle, Profile, Reloaded,
    Request, SandboxIdentity,
};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn engine(dir: &Path, text: &str) -> PolicyEngine {
    let path = write(dir, "profile.toml", text);
    PolicyEngine::new(Profile::load(&path).unwrap()).unwrap()
}

fn error(dir: &Path, name: &str, text: &str) -> String {
    let path = write(dir, name, text);
    match Profile::load(&path).and_then(PolicyEngine::new) {
        Ok(_) => panic!("{name} loaded but should be refused:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn as_user(owner: &str, action: Action) -> Request {
    Request {
        sandbox: SandboxIdentity {
            id: "s1".into(),
            owner: owner.into(),
            repo: "github.com/acme/app".into(),
            branch: "ai/work".into(),
        },
        action,
    }
}

fn push(branch: &str) -> Action {
    Action::GitPush {
        remote: "github.com".into(),
        repo: "acme/app.git".into(),
        branch: branch.into(),
    }
}

fn connect(host: &str, port: u16, ip: &str) -> Action {
    Action::Connect {
        host: host.into(),
        port,
        ip: Some(ip.parse().unwrap()),
    }
}

#[test]
fn a_profile_extending_restricted_adds_rules_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(
        dir.path(),
        r#"
extends = "restricted"
name = "team"
[network]
allow = ["*.example.com:443"]
allow_private = ["10.0.0.5"]
[resources]
pids = 64
"#,
    );
    let profile = engine.profile();
    assert_eq!(profile.name, "team");
    assert_eq!(profile.resources.pids, Some(64));
    assert_eq!(profile.resources.memory_max, Some(2 << 30), "inherited");
    assert!(profile.filesystem.hidden.iter().any(|h| h == "/etc/shadow"));
    let decide = |a| engine.decide(&as_user("", a));
    assert!(decide(connect("api.example.com", 443, "93.184.215.14")).allowed);
    assert!(
        decide(connect("github.com", 22, "140.82.112.3")).allowed,
        "inherited rule"
    );
    // The explicit grant opens one private address, no other.
    let vllm = decide(connect("api.example.com", 443, "10.0.0.5"));
    assert!(vllm.allowed, "{vllm:?}");
    let other = decide(connect("api.example.com", 443, "10.0.0.6"));
    assert_eq!(other.reasons, ["team/network/non-public-address"]);
}

#[test]
fn raw_cedar_files_add_rules_and_forbid_wins() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "extra.cedar",
        r#"
@id("ai-branches")
permit(principal, action == Action::"git_push", resource) when { resource.branch like "ai/*" };

@id("never-main")
forbid(principal, action == Action::"git_push", resource) when { resource.branch == "main" };

@id("only-alice-leaves")
forbid(principal, action == Action::"connect", resource)
unless { principal.owner.email == "alice@example.com" };

permit(principal, action == Action::"git_push", resource) when { resource.branch == "main" };
"#,
    );
    let engine = engine(
        dir.path(),
        "network.allow = [\"*\"]\ncedar = [\"extra.cedar\"]\n",
    );
    let alice = |a| engine.decide(&as_user("alice@example.com", a));
    let bob = |a| engine.decide(&as_user("bob@example.com", a));
    assert_eq!(alice(push("ai/x")).reasons, ["ai-branches"]);
    let main = alice(push("main"));
    assert!(!main.allowed);
    assert_eq!(
        main.reasons,
        ["never-main"],
        "forbid beats the unnamed permit"
    );
    assert!(alice(connect("example.com", 443, "93.184.215.14")).allowed);
    let denied = bob(connect("example.com", 443, "93.184.215.14"));
    assert_eq!(denied.reasons, ["only-alice-leaves"]);
    assert!(engine.cedar_text().contains("@id(\"never-main\")"));
    assert!(
        engine.cedar_text().contains("extra.cedar#4"),
        "unnamed policies get file#n ids"
    );
}

#[test]
fn audit_mode_records_would_deny_but_allows() {
    let dir = tempfile::tempdir().unwrap();
    let git_audit = engine(
        dir.path(),
        "extends = \"restricted\"\n[git]\nmode = \"audit\"\n",
    );
    let main = git_audit.decide(&as_user("", push("main")));
    assert!(main.allowed && main.audit_only, "{main:?}");
    assert_eq!(main.verdict(), "audit-deny");
    assert_eq!(main.reasons, ["profile/git/push-deny:main"]);
    // Other sections still enforce.
    let elsewhere = git_audit.decide(&as_user("", connect("example.com", 443, "93.184.215.14")));
    assert!(!elsewhere.allowed && !elsewhere.audit_only);
    // Allowed actions are plain allows.
    let ai = git_audit.decide(&as_user("", push("ai/x")));
    assert!(ai.allowed && !ai.audit_only);

    // A profile-wide audit mode covers every section without its own.
    let whole = engine(dir.path(), "mode = \"audit\"\n");
    let d = whole.decide(&as_user("", connect("example.com", 443, "93.184.215.14")));
    assert_eq!((d.allowed, d.audit_only), (true, true));
    assert_eq!(d.reasons, ["default-deny"]);
}

#[test]
fn broken_files_are_refused_with_file_line_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(&str, &str, &str)> = vec![
        (
            "syntax.toml",
            "[network]\nallow = [\"github.com:443\"\n",
            "syntax.toml:",
        ),
        (
            "unknown.toml",
            "[network]\nallowed = []\n",
            "unknown.toml:2: unknown field `allowed`",
        ),
        (
            "host.toml",
            "[network]\nallow = [\n  \"github.com:443\",\n  \"git*hub.com\",\n]\n",
            "host.toml:4: network.allow:",
        ),
        (
            "port.toml",
            "[network]\nallow = [\"github.com:99999\"]\n",
            "port.toml:2: network.allow: \"github.com:99999\": \"99999\" is not a port",
        ),
        (
            "size.toml",
            "\n[resources]\nmemory_max = \"lots\"\n",
            "size.toml:3: resources.memory_max: invalid size \"lots\"",
        ),
        (
            "path.toml",
            "[filesystem]\nread_only = [\"usr\"]\n",
            "path.toml:2: filesystem.read_only: \"usr\" must be an absolute path",
        ),
        ("mode.toml", "mode = \"watch\"\n", "mode.toml:1:"),
        (
            "extends.toml",
            "extends = \"paranoid\"\n",
            "extends.toml: extends \"paranoid\"",
        ),
        (
            "push.toml",
            "[[git.push]]\nremote = \"github.com\"\n",
            "push.toml:1: git.push: a push rule needs `allow` or `deny`",
        ),
        (
            "method.toml",
            "[[http.allow]]\nhost = \"api.github.com\"\nmethods = [\"get\"]\n",
            "method.toml:1: http.allow: method \"get\" must be an upper-case",
        ),
        (
            "cedar-missing.toml",
            "cedar = [\"nope.cedar\"]\n",
            "cedar-missing.toml:1: cedar: cannot read",
        ),
    ];
    for (name, text, expected) in cases {
        let message = error(d, name, text);
        assert!(
            message.contains(expected),
            "{name}: expected {expected:?} in {message:?}"
        );
    }
    let cycle = error(d, "a.toml", "extends = \"a.toml\"\n");
    assert!(cycle.contains("cycle"), "{cycle}");
}

#[test]
fn broken_cedar_is_refused_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "syntax.cedar",
        "// rules\n\npermit(principal, action, resource) when { resource.branch like };\n",
    );
    let message = error(d, "p1.toml", "cedar = [\"syntax.cedar\"]\n");
    assert!(message.contains("syntax.cedar:3:"), "{message}");

    write(
        d,
        "schema.cedar",
        "@id(\"ok\")\npermit(principal, action == Action::\"connect\", resource);\n\n@id(\"typo\")\npermit(principal, action == Action::\"git_push\", resource)\n  when { resource.brnach == \"x\" };\n",
    );
    let message = error(d, "p2.toml", "cedar = [\"schema.cedar\"]\n");
    assert!(message.contains("schema.cedar:4:"), "{message}");
    assert!(
        message.contains("typo") && message.contains("brnach"),
        "{message}"
    );

    write(
        d,
        "dup.cedar",
        "@id(\"x\")\npermit(principal, action, resource);\n@id(\"x\")\nforbid(principal, action, resource);\n",
    );
    let message = error(d, "p3.toml", "cedar = [\"dup.cedar\"]\n");
    assert!(message.contains("\"x\""), "{message}");
}

#[test]
fn a_changed_profile_is_swapped_in_and_a_broken_edit_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "live.toml",
        "[network]\nallow = [\"github.com:443\"]\n",
    );
    let handle = PolicyHandle::load(path.to_str().unwrap()).unwrap();
    let example = || handle.decide(&as_user("", connect("example.com", 443, "93.184.215.14")));
    assert!(!example().allowed);
    assert_eq!(handle.reload().unwrap(), Reloaded::Unchanged);

    std::fs::write(&path, "[network]\nallow = [\"example.com:443\"]\n").unwrap();
    assert_eq!(handle.reload().unwrap(), Reloaded::Swapped);
    assert_eq!(example().reasons, ["live/network/allow:example.com:443"]);

    std::fs::write(&path, "[network]\nallow = [\"example.com:443\"\n").unwrap();
    let err = handle.reload().unwrap_err();
    assert!(matches!(err, PolicyError::Toml { .. }), "{err}");
    assert!(example().allowed, "the last good policy stays in use");
    assert_eq!(
        handle.reload().unwrap(),
        Reloaded::Unchanged,
        "a broken edit is reported once"
    );
}

#[test]
fn the_watcher_reloads_without_being_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "watched.toml", "[network]\nallow = []\n");
    let handle = Arc::new(PolicyHandle::load(path.to_str().unwrap()).unwrap());
    let (sender, reports) = std::sync::mpsc::channel();
    let watcher = handle.watch(Duration::from_millis(20), move |r| {
        let _ = sender.send(r.map_err(|e| e.to_string()));
    });
    std::fs::write(&path, "[network]\nallow = [\"example.com\"]\n").unwrap();
    let report = reports.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(report, Ok(Reloaded::Swapped));
    assert!(
        handle
            .decide(&as_user("", connect("example.com", 8443, "93.184.215.14")))
            .allowed
    );
    drop(watcher);
}

#[test]
fn the_audit_log_gets_one_private_json_line_per_decision() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let engine = PolicyEngine::builtin("restricted").unwrap();
    for branch in ["ai/x", "main"] {
        let request = as_user("alice@example.com", push(branch));
        let decision = engine.decide(&request);
        log.record(&AuditEvent::new(&request, "restricted", &decision))
            .unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let events: Vec<AuditEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].decision, "allow");
    assert_eq!(events[0].policies, ["restricted/git/push-allow:ai/*"]);
    assert_eq!(events[1].decision, "deny");
    assert_eq!(events[1].policies, ["restricted/git/push-deny:main"]);
    assert_eq!(events[1].user, "alice@example.com");
    assert_eq!(events[1].action, "git_push");
    assert_eq!(events[1].resource, "github.com/acme/app.git#main");
    assert_eq!(events[1].context["repo"], "acme/app.git");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
