//! Decision latency: `connect` and `git_push` with the built-in profiles, and `connect` with a
//! profile of 1,000 network rules (the request matching the last rule, the worst case).
//!
//! Run: `cargo bench -p corral-policy --bench decide`. The p99 is printed after each group by
//! timing single decisions, since criterion reports means and medians.

// criterion's macros generate undocumented public items.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use corral_policy::{Action, PolicyEngine, Profile, Request, SandboxIdentity, is_non_public};
use criterion::{Criterion, criterion_group, criterion_main};

fn request(action: Action) -> Request {
    Request {
        sandbox: SandboxIdentity {
            id: "bench".into(),
            owner: "alice@example.com".into(),
            repo: "github.com/acme/app".into(),
            branch: "ai/work".into(),
        },
        action,
    }
}

fn connect(host: &str) -> Action {
    Action::Connect {
        host: host.into(),
        port: 443,
        ip: Some("140.82.112.3".parse().unwrap()),
    }
}

fn push(branch: &str) -> Action {
    Action::GitPush {
        remote: "github.com".into(),
        repo: "acme/app.git".into(),
        branch: branch.into(),
    }
}

fn thousand_rules() -> PolicyEngine {
    let rules: Vec<String> = (0..1000)
        .map(|i| format!("\"host{i}.example.com:443\""))
        .collect();
    let text = format!("[network]\nallow = [{}]\n", rules.join(", "));
    PolicyEngine::new(Profile::from_toml("thousand.toml", &text).unwrap()).unwrap()
}

/// Prints the 99th percentile of `samples` single decisions.
fn report_p99(label: &str, engine: &PolicyEngine, request: &Request) {
    let mut nanos: Vec<u128> = (0..20_000)
        .map(|_| {
            let start = Instant::now();
            black_box(engine.decide(black_box(request)));
            start.elapsed().as_nanos()
        })
        .collect();
    nanos.sort_unstable();
    let p = |q: f64| nanos[((nanos.len() as f64) * q) as usize] as f64 / 1000.0;
    println!("{label}: p50 {:.1} µs, p99 {:.1} µs", p(0.50), p(0.99));
}

fn decisions(c: &mut Criterion) {
    let mut cases: Vec<(String, PolicyEngine, Request)> = Vec::new();
    for profile in ["restricted", "moderate", "full"] {
        let host = if profile == "moderate" {
            "api.github.com"
        } else {
            "github.com"
        };
        cases.push((
            format!("connect/{profile}"),
            PolicyEngine::builtin(profile).unwrap(),
            request(connect(host)),
        ));
        cases.push((
            format!("git_push/{profile}"),
            PolicyEngine::builtin(profile).unwrap(),
            request(push("main")),
        ));
    }
    cases.push((
        "connect/1000-rules".into(),
        thousand_rules(),
        request(connect("host999.example.com")),
    ));
    for (label, engine, request) in &cases {
        c.bench_function(label, |b| b.iter(|| engine.decide(black_box(request))));
    }
    // The peer: the same connect question answered by reading the TOML rules directly in
    // Rust, with no Cedar, to show what the single auditable decision point costs.
    let restricted = PolicyEngine::builtin("restricted").unwrap();
    let rules = &restricted.profile().network;
    let ip = "140.82.112.3".parse().unwrap();
    c.bench_function("connect/restricted/direct-rules", |b| {
        b.iter(|| {
            let host = black_box("github.com");
            rules.allow.iter().any(|r| r.matches(host, 443))
                && !rules.deny.iter().any(|r| r.matches(host, 443))
                && !is_non_public(ip)
        })
    });
    for (label, engine, request) in &cases {
        report_p99(label, engine, request);
    }
}

criterion_group!(benches, decisions);
criterion_main!(benches);
