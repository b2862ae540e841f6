//! The built-in profiles against DESIGN.md's matrix: for each profile and action, cases that
//! must be allowed and cases that must be denied, with the policy that decides.

use corral_policy::{Action, PolicyEngine, Request, SandboxIdentity};

/// One row: profile, action, expected verdict, and the policy id the reasons must contain.
struct Case {
    profile: &'static str,
    action: Action,
    allowed: bool,
    reason: &'static str,
}

fn connect(host: &str, port: u16, ip: Option<&str>) -> Action {
    Action::Connect {
        host: host.into(),
        port,
        ip: ip.map(|ip| ip.parse().unwrap()),
    }
}

fn push(remote: &str, branch: &str) -> Action {
    Action::GitPush {
        remote: remote.into(),
        repo: "acme/app.git".into(),
        branch: branch.into(),
    }
}

fn model(provider: &str, name: &str) -> Action {
    Action::Inference {
        provider: provider.into(),
        model: name.into(),
    }
}

fn read(path: &str) -> Action {
    Action::Read { path: path.into() }
}

fn write(path: &str) -> Action {
    Action::Write { path: path.into() }
}

fn exec(path: &str) -> Action {
    Action::Exec { path: path.into() }
}

fn allow(profile: &'static str, action: Action, reason: &'static str) -> Case {
    Case {
        profile,
        action,
        allowed: true,
        reason,
    }
}

fn deny(profile: &'static str, action: Action, reason: &'static str) -> Case {
    Case {
        profile,
        action,
        allowed: false,
        reason,
    }
}

const PUBLIC_IP: Option<&str> = Some("140.82.112.3");

fn network_cases() -> Vec<Case> {
    vec![
        // restricted: the allowlist, exact hosts and ports.
        allow(
            "restricted",
            connect("github.com", 443, PUBLIC_IP),
            "restricted/network/allow:github.com:22,443",
        ),
        allow(
            "restricted",
            connect("github.com", 22, PUBLIC_IP),
            "restricted/network/allow:github.com:22,443",
        ),
        allow(
            "restricted",
            connect("GitHub.com.", 443, PUBLIC_IP),
            "restricted/network/allow:github.com:22,443",
        ),
        deny(
            "restricted",
            connect("github.com", 80, PUBLIC_IP),
            "default-deny",
        ),
        deny(
            "restricted",
            connect("api.github.com", 443, PUBLIC_IP),
            "default-deny",
        ),
        deny(
            "restricted",
            connect("evil-github.com", 443, PUBLIC_IP),
            "default-deny",
        ),
        allow(
            "restricted",
            connect("api.anthropic.com", 443, None),
            "restricted/network/allow:api.anthropic.com:443",
        ),
        allow(
            "restricted",
            connect("pypi.org", 443, None),
            "restricted/network/allow:pypi.org:443",
        ),
        allow(
            "restricted",
            connect("files.pythonhosted.org", 443, None),
            "restricted/network/allow:files.pythonhosted.org:443",
        ),
        deny(
            "restricted",
            connect("example.com", 443, PUBLIC_IP),
            "default-deny",
        ),
        // An allowed name that resolves to a private address is refused (DNS rebinding).
        deny(
            "restricted",
            connect("github.com", 443, Some("127.0.0.1")),
            "restricted/network/non-public-address",
        ),
        deny(
            "restricted",
            connect("github.com", 443, Some("::ffff:10.0.0.1")),
            "restricted/network/non-public-address",
        ),
        // moderate: development hosts, with wildcards.
        allow(
            "moderate",
            connect("api.github.com", 443, PUBLIC_IP),
            "moderate/network/allow:*.github.com:443",
        ),
        allow(
            "moderate",
            connect("objects.githubusercontent.com", 443, PUBLIC_IP),
            "moderate/network/allow:*.githubusercontent.com:443",
        ),
        allow(
            "moderate",
            connect("index.crates.io", 443, PUBLIC_IP),
            "moderate/network/allow:*.crates.io:443",
        ),
        allow(
            "moderate",
            connect("github.com", 22, PUBLIC_IP),
            "moderate/network/allow:github.com:22,443",
        ),
        deny(
            "moderate",
            connect("api.github.com", 22, PUBLIC_IP),
            "default-deny",
        ),
        deny(
            "moderate",
            connect("example.com", 443, PUBLIC_IP),
            "default-deny",
        ),
        deny(
            "moderate",
            connect("githubusercontent.com.evil.net", 443, PUBLIC_IP),
            "default-deny",
        ),
        // full: any public host, still never private, loopback, link-local or metadata.
        allow(
            "full",
            connect("example.com", 443, PUBLIC_IP),
            "full/network/allow:*",
        ),
        allow(
            "full",
            connect("example.com", 8080, Some("2606:4700::1111")),
            "full/network/allow:*",
        ),
        deny(
            "full",
            connect("metadata.google.internal", 80, Some("169.254.169.254")),
            "full/network/non-public-address",
        ),
        deny(
            "full",
            connect("169.254.169.254", 80, None),
            "full/network/non-public-address",
        ),
        deny(
            "full",
            connect("localhost", 5432, Some("127.0.0.1")),
            "full/network/non-public-address",
        ),
        deny(
            "full",
            connect("intranet", 443, Some("10.1.2.3")),
            "full/network/non-public-address",
        ),
        deny(
            "full",
            connect("router", 80, Some("192.168.1.1")),
            "full/network/non-public-address",
        ),
        deny(
            "full",
            connect("cgnat", 80, Some("100.64.0.1")),
            "full/network/non-public-address",
        ),
        deny(
            "full",
            connect("v6-local", 80, Some("::1")),
            "full/network/non-public-address",
        ),
        deny(
            "full",
            connect("v6-ula", 80, Some("fd00::1")),
            "full/network/non-public-address",
        ),
        deny(
            "full",
            connect("v6-link", 80, Some("fe80::1")),
            "full/network/non-public-address",
        ),
    ]
}

fn git_cases() -> Vec<Case> {
    vec![
        allow(
            "restricted",
            push("github.com", "ai/fix-tests"),
            "restricted/git/push-allow:ai/*",
        ),
        allow(
            "restricted",
            push("github.com", "refs/heads/feature/x"),
            "restricted/git/push-allow:feature/*",
        ),
        allow(
            "restricted",
            push("gitlab.com", "fix/crash"),
            "restricted/git/push-allow:fix/*",
        ),
        deny(
            "restricted",
            push("github.com", "main"),
            "restricted/git/push-deny:main",
        ),
        deny(
            "restricted",
            push("github.com", "master"),
            "restricted/git/push-deny:master",
        ),
        deny("restricted", push("github.com", "dev"), "default-deny"),
        deny(
            "restricted",
            push("github.com", "release/1.0"),
            "default-deny",
        ),
        allow(
            "moderate",
            push("github.com", "dev"),
            "moderate/git/push-allow:*",
        ),
        allow(
            "moderate",
            push("github.com", "ai/x"),
            "moderate/git/push-allow:ai/*",
        ),
        deny(
            "moderate",
            push("github.com", "main"),
            "moderate/git/push-deny:main",
        ),
        deny(
            "moderate",
            push("github.com", "master"),
            "moderate/git/push-deny:master",
        ),
        deny(
            "moderate",
            push("github.com", "release/2.0"),
            "moderate/git/push-deny:release/*",
        ),
        allow("full", push("github.com", "main"), "full/git/push-allow:*"),
        allow(
            "full",
            push("github.com", "release/2.0"),
            "full/git/push-allow:*",
        ),
    ]
}

fn filesystem_cases() -> Vec<Case> {
    vec![
        allow(
            "restricted",
            read("/usr/lib/os-release"),
            "restricted/filesystem/read:/usr",
        ),
        allow(
            "restricted",
            read("/workspace/src/main.rs"),
            "restricted/filesystem/read:/workspace",
        ),
        deny("restricted", read("/home/alice/notes.txt"), "default-deny"),
        deny("restricted", read("/root/.bashrc"), "default-deny"),
        deny(
            "restricted",
            read("/etc/shadow"),
            "restricted/filesystem/hidden:/etc/shadow",
        ),
        deny(
            "restricted",
            read("/workspace/../etc/shadow"),
            "restricted/filesystem/hidden:/etc/shadow",
        ),
        allow(
            "restricted",
            write("/workspace/src/main.rs"),
            "restricted/filesystem/write:/workspace",
        ),
        allow(
            "restricted",
            write("/tmp/x"),
            "restricted/filesystem/write:/tmp",
        ),
        deny("restricted", write("/usr/bin/git"), "default-deny"),
        deny("restricted", write("/home/corral/.bashrc"), "default-deny"),
        deny(
            "restricted",
            write("/workspace/.git/hooks/pre-commit"),
            "restricted/filesystem/protected:.git/hooks",
        ),
        deny(
            "restricted",
            write("/workspace/.git/config"),
            "restricted/filesystem/protected:.git/config",
        ),
        deny(
            "restricted",
            write("/workspace/.envrc"),
            "restricted/filesystem/protected:.envrc",
        ),
        allow(
            "restricted",
            write("/workspace/.git/objects/ab/cdef"),
            "restricted/filesystem/write:/workspace",
        ),
        allow(
            "moderate",
            read("/home/alice/.cargo/bin/cargo"),
            "moderate/filesystem/read:~/.cargo",
        ),
        deny(
            "moderate",
            read("/home/alice/.ssh/id_ed25519"),
            "moderate/filesystem/hidden:/home/*/.ssh",
        ),
        deny(
            "moderate",
            write("/workspace/.vscode/settings.json"),
            "moderate/filesystem/protected:.vscode",
        ),
        allow(
            "full",
            read("/home/alice/notes.txt"),
            "full/filesystem/read:/",
        ),
        deny(
            "full",
            read("/home/alice/.aws/credentials"),
            "full/filesystem/hidden:/home/*/.aws",
        ),
        deny(
            "full",
            read("/root/.ssh/id_rsa"),
            "full/filesystem/hidden:/root/.ssh",
        ),
        deny(
            "full",
            read("/home/bob/.bash_history"),
            "full/filesystem/hidden:/home/*/.bash_history",
        ),
        allow(
            "full",
            write("/home/corral/.config/opencode/x"),
            "full/filesystem/write:/home/corral",
        ),
        allow(
            "full",
            write("/workspace/.git/hooks/pre-commit"),
            "full/filesystem/write:/workspace",
        ),
        deny("full", write("/etc/passwd"), "default-deny"),
    ]
}

fn exec_cases() -> Vec<Case> {
    vec![
        allow(
            "restricted",
            exec("/usr/bin/git"),
            "restricted/exec/allow:/usr/bin/git",
        ),
        allow(
            "restricted",
            exec("/usr/lib/git-core/git-remote-https"),
            "restricted/exec/allow:/usr/lib/git-core",
        ),
        allow(
            "restricted",
            exec("/usr/bin/python3.11"),
            "restricted/exec/allow:/usr/bin/python3.*",
        ),
        allow(
            "restricted",
            exec("/workspace/scripts/test.sh"),
            "restricted/exec/allow:/workspace",
        ),
        deny("restricted", exec("/usr/bin/perl"), "default-deny"),
        deny("restricted", exec("/usr/bin/nc"), "default-deny"),
        deny("restricted", exec("/tmp/payload"), "default-deny"),
        allow(
            "moderate",
            exec("/usr/bin/perl"),
            "moderate/exec/allow:/usr/bin",
        ),
        allow(
            "moderate",
            exec("/home/alice/.cargo/bin/cargo"),
            "moderate/exec/allow:~/.cargo/bin",
        ),
        allow(
            "moderate",
            exec("/tmp/build/a.out"),
            "moderate/exec/allow:/tmp",
        ),
        deny(
            "moderate",
            exec("/home/alice/.ssh/evil"),
            "moderate/filesystem/hidden:/home/*/.ssh",
        ),
        allow(
            "full",
            exec("/opt/tool/bin/tool"),
            "full/exec/anything-readable",
        ),
        deny(
            "full",
            exec("/root/.ssh/x"),
            "full/filesystem/hidden:/root/.ssh",
        ),
    ]
}

fn ai_cases() -> Vec<Case> {
    vec![
        allow(
            "restricted",
            model("anthropic", "claude-sonnet-4"),
            "restricted/inference/allow:anthropic/*",
        ),
        allow(
            "restricted",
            model("openai", "gpt-4o"),
            "restricted/inference/allow:openai/*",
        ),
        deny("restricted", model("local-vllm", "qwen"), "default-deny"),
        allow(
            "full",
            model("local-vllm", "qwen"),
            "full/inference/allow:*/*",
        ),
        deny(
            "restricted",
            Action::McpToolCall {
                server: "github".into(),
                tool: "create_issue".into(),
            },
            "default-deny",
        ),
        allow(
            "full",
            Action::McpToolCall {
                server: "github".into(),
                tool: "create_issue".into(),
            },
            "full/mcp/allow:*/*",
        ),
    ]
}

fn check_all(cases: Vec<Case>) {
    let mut engines = std::collections::HashMap::new();
    let mut failures = Vec::new();
    for case in cases {
        let engine = engines
            .entry(case.profile)
            .or_insert_with(|| PolicyEngine::builtin(case.profile).unwrap());
        let decision = engine.decide(&Request {
            sandbox: SandboxIdentity::default(),
            action: case.action.clone(),
        });
        let reason_ok = decision.reasons.iter().any(|r| r == case.reason);
        if decision.allowed != case.allowed || !reason_ok || decision.audit_only {
            failures.push(format!(
                "{} {:?}: expected {} by {}, got {:?}",
                case.profile,
                case.action,
                if case.allowed { "allow" } else { "deny" },
                case.reason,
                decision
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn network_follows_the_design_matrix() {
    check_all(network_cases());
}

#[test]
fn git_push_follows_the_design_matrix() {
    check_all(git_cases());
}

#[test]
fn files_follow_the_design_matrix() {
    check_all(filesystem_cases());
}

#[test]
fn exec_follows_the_design_matrix() {
    check_all(exec_cases());
}

#[test]
fn inference_and_mcp_follow_the_profiles() {
    check_all(ai_cases());
}

#[test]
fn builtin_limits_match_the_design() {
    let gib = 1u64 << 30;
    let restricted = PolicyEngine::builtin("restricted").unwrap();
    let r = &restricted.profile().resources;
    assert_eq!(
        (r.memory_max, r.cpus, r.pids),
        (Some(2 * gib), Some(1.0), Some(512))
    );
    for name in ["moderate", "full"] {
        let engine = PolicyEngine::builtin(name).unwrap();
        let r = &engine.profile().resources;
        assert_eq!(
            (r.memory_max, r.memory_high, r.cpus, r.pids),
            (Some(3 * gib), Some(5 * gib / 2), Some(1.5), Some(1024)),
            "{name}"
        );
    }
}
