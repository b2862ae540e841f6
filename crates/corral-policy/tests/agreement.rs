//! Property tests: compiling a profile to Cedar and deciding agrees with reading its TOML
//! rules directly (an allow matches, no deny matches, and a non-public address is granted).

use std::net::IpAddr;

use corral_policy::{
    Action, HostRule, PairPattern, PolicyEngine, PrivateGrant, Profile, Request, SandboxIdentity,
    glob_matches, is_non_public,
};
use proptest::prelude::*;

const HOSTS: &[&str] = &[
    "example.com",
    "a.example.com",
    "github.com",
    "api.github.com",
    "vllm.internal",
    "10.0.0.7",
];
const PORTS: &[u16] = &[22, 80, 443, 8080];
const IPS: &[&str] = &[
    "93.184.215.14",
    "10.0.0.5",
    "10.0.0.6",
    "10.0.0.7",
    "192.168.3.4",
    "127.0.0.1",
    "::1",
];
const GRANTS: &[&str] = &["10.0.0.5", "192.168.0.0/16", "vllm.internal"];
const BRANCH_GLOBS: &[&str] = &["ai/*", "main", "*", "release/*", "feature/*", "*fix*"];
const BRANCHES: &[&str] = &["main", "ai/x", "release/1", "dev", "feature/y", "hotfix/z"];

fn host_rule() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        Just("*".to_string()),
        prop::sample::select(HOSTS).prop_map(str::to_string),
        Just("*.example.com".to_string()),
        Just("*.github.com".to_string()),
    ];
    let ports = prop::sample::subsequence(PORTS, 0..=2);
    (host, ports).prop_map(|(host, ports)| {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        if ports.is_empty() {
            host
        } else {
            format!("{host}:{}", ports.join(","))
        }
    })
}

fn quoted(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", items.join(", "))
}

fn network_profile() -> impl Strategy<Value = (Vec<String>, Vec<String>, Vec<String>)> {
    (
        prop::collection::vec(host_rule(), 0..5),
        prop::collection::vec(host_rule(), 0..3),
        prop::sample::subsequence(GRANTS, 0..=3)
            .prop_map(|g| g.iter().map(|s| s.to_string()).collect()),
    )
}

/// The network decision read straight from the rules.
fn expected_connect(
    allow: &[HostRule],
    deny: &[HostRule],
    grants: &[PrivateGrant],
    host: &str,
    port: u16,
    ip: IpAddr,
) -> bool {
    let permitted = allow.iter().any(|r| r.matches(host, port));
    let forbidden = deny.iter().any(|r| r.matches(host, port));
    let granted = grants.iter().any(|g| g.covers(host, Some(ip)))
        || allow
            .iter()
            .any(|r| r.host.ip().is_some() && r.host.matches(host));
    permitted && !forbidden && (!is_non_public(ip) || granted)
}

fn decide(engine: &PolicyEngine, action: Action) -> bool {
    engine
        .decide(&Request {
            sandbox: SandboxIdentity::default(),
            action,
        })
        .allowed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn connect_decisions_agree_with_the_toml(
        (allow, deny, grants) in network_profile(),
        requests in prop::collection::vec(
            (prop::sample::select(HOSTS), prop::sample::select(PORTS), prop::sample::select(IPS)),
            1..12,
        ),
    ) {
        let text = format!(
            "[network]\nallow = {}\ndeny = {}\nallow_private = {}\n",
            quoted(&allow), quoted(&deny), quoted(&grants)
        );
        let engine = PolicyEngine::new(Profile::from_toml("generated.toml", &text).unwrap()).unwrap();
        let allow: Vec<HostRule> = allow.iter().map(|r| r.parse().unwrap()).collect();
        let deny: Vec<HostRule> = deny.iter().map(|r| r.parse().unwrap()).collect();
        let grants: Vec<PrivateGrant> = grants.iter().map(|g| g.parse().unwrap()).collect();
        for (host, port, ip) in requests {
            let ip: IpAddr = ip.parse().unwrap();
            let action = Action::Connect { host: host.into(), port, ip: Some(ip) };
            prop_assert_eq!(
                decide(&engine, action),
                expected_connect(&allow, &deny, &grants, host, port, ip),
                "{} -> {}:{} at {}", text, host, port, ip
            );
        }
    }

    #[test]
    fn push_decisions_agree_with_the_toml(
        allow in prop::sample::subsequence(BRANCH_GLOBS, 0..=3),
        deny in prop::sample::subsequence(BRANCH_GLOBS, 0..=2),
    ) {
        prop_assume!(!(allow.is_empty() && deny.is_empty()));
        let as_strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let text = format!(
            "[[git.push]]\nremote = \"*\"\nallow = {}\ndeny = {}\n",
            quoted(&as_strings(&allow)), quoted(&as_strings(&deny))
        );
        let engine = PolicyEngine::new(Profile::from_toml("generated.toml", &text).unwrap()).unwrap();
        for branch in BRANCHES {
            let expected = allow.iter().any(|g| glob_matches(g, branch))
                && !deny.iter().any(|g| glob_matches(g, branch));
            let action = Action::GitPush {
                remote: "github.com".into(), repo: "acme/app".into(), branch: branch.to_string(),
            };
            prop_assert_eq!(decide(&engine, action), expected, "{} -> {}", text, branch);
        }
    }

    #[test]
    fn model_decisions_agree_with_the_toml(
        allow in prop::sample::subsequence(&["anthropic/*", "openai/gpt-4*", "*/*", "local/qwen"][..], 0..=2),
        deny in prop::sample::subsequence(&["*/*-preview", "openai/*"][..], 0..=1),
    ) {
        let as_strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let text = format!(
            "[inference]\nallow = {}\ndeny = {}\n",
            quoted(&as_strings(&allow)), quoted(&as_strings(&deny))
        );
        let engine = PolicyEngine::new(Profile::from_toml("generated.toml", &text).unwrap()).unwrap();
        let parse = |v: &[&str]| v.iter().map(|p| PairPattern::parse(p, "p/m").unwrap()).collect::<Vec<_>>();
        let (allow, deny) = (parse(&allow), parse(&deny));
        for (provider, model) in [("anthropic", "claude-x"), ("openai", "gpt-4o"), ("openai", "gpt-4o-preview"), ("local", "qwen")] {
            let expected = allow.iter().any(|p| p.matches(provider, model))
                && !deny.iter().any(|p| p.matches(provider, model));
            let action = Action::Inference { provider: provider.into(), model: model.into() };
            prop_assert_eq!(decide(&engine, action), expected, "{} -> {}/{}", text, provider, model);
        }
    }
}
