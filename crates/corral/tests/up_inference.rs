//! The inference router through real sandboxes under a real gateway: curl inside a sandbox
//! calls a model with the sandbox's placeholder key, the provider (a local fake speaking the
//! Anthropic and OpenAI wire formats) sees the real key, which never reaches the sandbox;
//! policy denials name the policy; usage is counted exactly for JSON and streamed answers;
//! a budget cuts requests off at its limit.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use corral_testkit::Gateway;
use corral_testkit::fake_provider::{ANTHROPIC_TOKENS, FakeProvider, OPENAI_TOKENS, REPLY};
use corral_testkit::gateway::{SandboxReaper, add_user, call, get, post};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// The keys the providers are added with; nothing inside a sandbox may ever show them.
const ANTHROPIC_KEY: &str = "sk-ant-real-7f3c9a1e5b2d4068";
const OPENAI_KEY: &str = "sk-openai-real-c4e8a2f6b1d3";

/// A gateway whose `team` profile is moderate minus `anthropic/claude-forbidden*`, with the
/// fake provider added as `anthropic` (through the CLI, alias `fast`) and as `openai`.
struct Setup {
    gw: Gateway,
    _reaper: SandboxReaper,
    admin: String,
    fake: FakeProvider,
    root: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let profile = root.path().join("team.toml");
        std::fs::write(
            &profile,
            "extends = \"moderate\"\n[inference]\nallow = [\"nolocal/*\"]\n\
             deny = [\"anthropic/claude-forbidden*\"]\n",
        )
        .unwrap();
        let config = root.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!("[profiles]\nteam = \"{}\"\n", profile.display()),
        )
        .unwrap();
        let data = root.path().join("data");
        let gw = start_gateway(root.path());
        let admin = gw.printed_token.clone().unwrap();
        let fake = FakeProvider::start();
        let added = Command::new(BIN)
            .args([
                "provider",
                "add",
                "anthropic",
                "--kind",
                "anthropic",
                "--base-url",
            ])
            .arg(&fake.url)
            .args([
                "--key-env",
                "THE_KEY",
                "--allow-private",
                "--alias",
                "fast=claude-real",
            ])
            .env("CORRAL_URL", &gw.url)
            .env("CORRAL_TOKEN", &admin)
            .env("THE_KEY", ANTHROPIC_KEY)
            .output()
            .unwrap();
        assert!(added.status.success(), "{added:?}");
        let (status, body) = post(
            &gw.api("/providers"),
            &admin,
            json!({"name": "openai", "kind": "openai", "base_url": format!("{}/v1", fake.url),
                   "key": OPENAI_KEY, "allow_private": true}),
        );
        assert_eq!(status, 201, "{body}");
        Setup {
            _reaper: SandboxReaper(data),
            gw,
            admin,
            fake,
            root,
        }
    }

    /// Stops the gateway (its sandboxes keep running) and starts it again on the same data.
    fn restart(self) -> Self {
        let Setup {
            gw,
            _reaper,
            admin,
            fake,
            root,
        } = self;
        assert!(gw.terminate().success());
        Setup {
            gw: start_gateway(root.path()),
            _reaper,
            admin,
            fake,
            root,
        }
    }

    /// Creates and starts a sandbox with the `team` profile for `token`'s user.
    fn sandbox(&self, token: &str, name: &str) -> String {
        let (status, body) = post(
            &self.gw.api("/sandboxes"),
            token,
            json!({"name": name, "profile": "team"}),
        );
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let url = self.gw.api(&format!("/sandboxes/{id}/start"));
        let (status, body) = call("POST", &url, Some(token), &[], None);
        assert_eq!(
            (status, body["state"].as_str()),
            (200, Some("running")),
            "{body}"
        );
        id
    }

    /// Runs `script` in the sandbox; returns its stdout (asserting it succeeded).
    fn exec(&self, token: &str, id: &str, script: &str) -> String {
        let url = self.gw.api(&format!("/sandboxes/{id}/exec"));
        let (status, body) = post(&url, token, json!({ "argv": ["sh", "-c", script] }));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["exit_code"], 0, "{body}");
        body["stdout"].as_str().unwrap().to_owned()
    }
}

/// `corral up` on `root/data` with `root/gateway.toml`.
fn start_gateway(root: &Path) -> Gateway {
    let config = root.join("gateway.toml");
    Gateway::start(
        Path::new(BIN),
        &root.join("data"),
        &["--config", config.to_str().unwrap()],
        &[],
    )
}

/// curl calls with the sandbox's settings: `$1` is the API path under the base URL, `$2` the
/// JSON body. `ant` uses the Anthropic settings, `oai` the OpenAI ones; both print the status
/// on a line of its own after the body.
const CLIENTS: &str = r#"
ant() { curl -sS -N -w '\nstatus=%{http_code}\n' "$ANTHROPIC_BASE_URL$1" -H "x-api-key: $ANTHROPIC_API_KEY" -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' -d "$2"; }
oai() { curl -sS -N -w '\nstatus=%{http_code}\n' "$OPENAI_BASE_URL$1" -H "Authorization: Bearer $OPENAI_API_KEY" -H 'content-type: application/json' -d "$2"; }
"#;

fn sections(output: &str) -> Vec<String> {
    output
        .split("\n===\n")
        .map(|s| s.trim_end().to_owned())
        .collect::<Vec<_>>()
}

/// Usage rows for the caller, summed per (provider, model), once `requests` are counted
/// (each is recorded before its answer ends, so this only guards against a hang).
fn usage(setup: &Setup, token: &str, requests: i64) -> Vec<(String, String, i64, i64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, rows) = get(&setup.gw.api("/usage"), token);
        assert_eq!(status, 200, "{rows}");
        let rows = rows.as_array().unwrap().clone();
        let total: i64 = rows.iter().map(|r| r["requests"].as_i64().unwrap()).sum();
        if total >= requests || Instant::now() > deadline {
            let mut out: Vec<_> = rows
                .iter()
                .map(|r| {
                    (
                        r["provider"].as_str().unwrap().to_owned(),
                        r["model"].as_str().unwrap().to_owned(),
                        r["requests"].as_i64().unwrap(),
                        r["input_tokens"].as_i64().unwrap(),
                        r["output_tokens"].as_i64().unwrap(),
                    )
                })
                .collect();
            out.sort();
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn curl_with_the_placeholder_gets_completions_the_provider_sees_the_real_key_and_usage_is_exact() {
    let setup = Setup::new();
    let alice = add_user(&setup.gw, &setup.admin, "alice@example.com");
    // The same local server, but its entry does not allow private addresses.
    let (status, body) = post(
        &setup.gw.api("/providers"),
        &setup.admin,
        json!({"name": "nolocal", "kind": "openai-compatible", "base_url": setup.fake.url,
               "key": OPENAI_KEY}),
    );
    assert_eq!(status, 201, "{body}");
    let id = setup.sandbox(&alice, "work");
    let script = format!(
        r#"{CLIENTS}
ant /v1/messages '{{"model":"fast","max_tokens":10,"messages":[{{"role":"user","content":"hi"}}]}}'
echo ===
ant /v1/messages '{{"model":"claude-stream","stream":true,"max_tokens":10,"messages":[]}}'
echo ===
oai /chat/completions '{{"model":"gpt-x","messages":[{{"role":"user","content":"hi"}}]}}'
echo ===
oai /chat/completions '{{"model":"gpt-x","stream":true,"messages":[]}}'
echo ===
curl -sS -i "$ANTHROPIC_BASE_URL/v1/messages" -H "x-api-key: $ANTHROPIC_API_KEY" -d '{{"model":"claude-forbidden-9","messages":[]}}'
echo
echo ===
curl -sS -w '\nstatus=%{{http_code}}' "$CORRAL_INFERENCE_URL/nolocal/v1/chat/completions" -H "Authorization: Bearer $OPENAI_API_KEY" -d '{{"model":"m","messages":[]}}'
echo
echo ===
# A client that sends everything to the proxy, ignoring NO_PROXY (absolute-form request).
curl -sS -w '\nstatus=%{{http_code}}' --noproxy '' -x http://127.0.0.1:3128 "$ANTHROPIC_BASE_URL/v1/messages" -H "x-api-key: $ANTHROPIC_API_KEY" -d '{{"model":"claude-proxied","messages":[]}}'
"#
    );
    let out = sections(&setup.exec(&alice, &id, &script));
    assert_eq!(out.len(), 7, "{out:#?}");
    // JSON through an alias: the provider got the real model name.
    let message: Value = serde_json::from_str(out[0].lines().next().unwrap()).unwrap();
    assert_eq!(message["content"][0]["text"], REPLY, "{}", out[0]);
    assert_eq!(message["model"], "claude-real");
    assert!(out[0].ends_with("status=200"), "{}", out[0]);
    // Streams arrive as the provider's events, every piece of them.
    let streamed: String = out[1]
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, REPLY, "{}", out[1]);
    assert!(out[1].contains("event: message_stop"), "{}", out[1]);
    assert!(
        out[2].contains(REPLY) && out[2].ends_with("status=200"),
        "{}",
        out[2]
    );
    assert!(out[3].contains("data: [DONE]"), "{}", out[3]);
    // A model the profile denies: 403 naming the policy, and the provider never saw it.
    let denied = &out[4];
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(denied.contains(r#""code":"denied_by_policy""#), "{denied}");
    assert!(
        denied.contains("x-corral-deny: team/inference/deny:anthropic/claude-forbidden*"),
        "{denied}"
    );
    assert!(
        denied.contains("denied by policy team/inference/deny"),
        "{denied}"
    );

    // A provider on a private address without --allow-private: refused, never reached.
    assert!(
        out[5].ends_with("status=502") && out[5].contains("--allow-private"),
        "{}",
        out[5]
    );
    assert!(
        out[6].contains(REPLY) && out[6].ends_with("status=200"),
        "{}",
        out[6]
    );
    let seen = setup.fake.seen();
    assert_eq!(seen.len(), 5, "{seen:#?}");
    for request in &seen {
        let expected = if request.path == "/v1/messages" {
            ANTHROPIC_KEY
        } else {
            OPENAI_KEY
        };
        assert_eq!(request.key.as_deref(), Some(expected), "{request:?}");
    }
    assert_eq!(seen[0].model.as_deref(), Some("claude-real"));
    // The router asked for the usage chunk of an OpenAI stream so it could count it.
    assert_eq!(seen[3].body["stream_options"]["include_usage"], true);
    assert_eq!(seen[4].model.as_deref(), Some("claude-proxied"));

    let (ai, ao) = ANTHROPIC_TOKENS;
    let (oi, oo) = OPENAI_TOKENS;
    assert_eq!(
        usage(&setup, &alice, 5),
        vec![
            ("anthropic".into(), "claude-proxied".into(), 1, ai, ao),
            ("anthropic".into(), "claude-real".into(), 1, ai, ao),
            ("anthropic".into(), "claude-stream".into(), 1, ai, ao),
            ("openai".into(), "gpt-x".into(), 2, 2 * oi, 2 * oo),
        ]
    );
    // The decisions are in the sandbox's audit log, allow and deny.
    let audit = std::fs::read_to_string(
        setup
            .root
            .path()
            .join("data/sandboxes")
            .join(&id)
            .join("audit.jsonl"),
    )
    .unwrap();
    assert!(
        audit.contains(r#""resource":"anthropic/claude-forbidden-9""#),
        "{audit}"
    );
    assert!(
        audit.contains(r#""policies":["team/inference/allow:anthropic/*"]"#),
        "{audit}"
    );

    // The real keys are nowhere in the sandbox: not its environment, not a process's
    // environment or command line, not a file it can read.
    let inside = setup.exec(
        &alice,
        &id,
        "env; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null; \
         find /workspace /tmp \"$HOME\" /run -type f -size -1M -exec cat {} + 2>/dev/null; \
         echo; echo scanned",
    );
    assert!(inside.contains("scanned") && inside.contains("ANTHROPIC_API_KEY=sk-corral-"));
    for key in [ANTHROPIC_KEY, OPENAI_KEY] {
        assert!(
            !inside.contains(key),
            "a real key is visible inside the sandbox"
        );
        let db = std::fs::read(setup.root.path().join("data/corral.db")).unwrap();
        assert!(
            !db.windows(key.len()).any(|w| w == key.as_bytes()),
            "key stored unsealed"
        );
        assert!(!audit.contains(key));
    }
    // Nor does the API give them out.
    let (status, providers) = get(&setup.gw.api("/providers"), &setup.admin);
    assert_eq!(status, 200);
    let listed = providers.to_string();
    assert!(
        !listed.contains(ANTHROPIC_KEY) && !listed.contains(OPENAI_KEY),
        "{listed}"
    );
    assert!(providers[0].get("key").is_none(), "{listed}");
    assert_eq!(providers[0]["aliases"]["fast"], "claude-real");
    let (status, _) = get(&setup.gw.api("/providers"), &alice);
    assert_eq!(status, 403);
}

#[test]
fn the_budget_cuts_off_at_its_limit_and_a_placeholder_works_only_in_its_own_sandbox() {
    let setup = Setup::new();
    let bob = add_user(&setup.gw, &setup.admin, "bob@example.com");
    let (ai, ao) = ANTHROPIC_TOKENS;
    // Room for exactly two answers: the third request finds the budget spent.
    let url = setup.gw.api("/budgets/bob@example.com");
    let (status, body) = call(
        "PUT",
        &url,
        Some(&setup.admin),
        &[],
        Some(&json!({"tokens_per_day": 2 * (ai + ao)}).to_string()),
    );
    assert_eq!(status, 200, "{body}");
    let first = setup.sandbox(&bob, "one");
    let second = setup.sandbox(&bob, "two");
    let request = r#"'{"model":"claude-x","max_tokens":5,"messages":[]}'"#;
    let script = format!(
        "{CLIENTS}\nfor i in 1 2 3; do ant /v1/messages {request}; echo ===; done\n\
         echo \"$ANTHROPIC_API_KEY\""
    );
    let out = sections(&setup.exec(&bob, &first, &script));
    assert!(
        out[0].ends_with("status=200") && out[1].ends_with("status=200"),
        "{out:#?}"
    );
    assert!(out[2].ends_with("status=429"), "{out:#?}");
    assert!(
        out[2].contains("inference budget of bob@example.com is spent")
            && out[2].contains(&format!(
                "{} of {} tokens today",
                2 * (ai + ao),
                2 * (ai + ao)
            )),
        "{}",
        out[2]
    );
    assert_eq!(setup.fake.seen().len(), 2);
    let (status, rows) = get(&setup.gw.api("/usage"), &bob);
    assert_eq!(status, 200);
    let tokens: i64 = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["input_tokens"].as_i64().unwrap() + r["output_tokens"].as_i64().unwrap())
        .sum();
    assert_eq!(tokens, 2 * (ai + ao), "{rows}");

    // The first sandbox's placeholder, sent from the second: refused before any policy.
    let placeholder = out[3].trim();
    assert!(placeholder.starts_with("sk-corral-"), "{placeholder}");
    let stolen = setup.exec(
        &bob,
        &second,
        &format!(
            "curl -sS -w '\\nstatus=%{{http_code}}' \"$ANTHROPIC_BASE_URL/v1/messages\" \
             -H 'x-api-key: {placeholder}' -d '{{}}'; echo; test \"$ANTHROPIC_API_KEY\" != '{placeholder}' && echo distinct"
        ),
    );
    assert!(
        stolen.contains("status=401") && stolen.contains("not this sandbox's"),
        "{stolen}"
    );
    assert!(stolen.contains("distinct"), "{stolen}");
    assert_eq!(setup.fake.seen().len(), 2);

    // One request per minute per sandbox (and no token limit any more).
    let (status, body) = call(
        "PUT",
        &url,
        Some(&setup.admin),
        &[],
        Some(&json!({"sandbox_requests_per_minute": 1}).to_string()),
    );
    assert_eq!(status, 200, "{body}");
    let twice =
        format!("{CLIENTS}\nant /v1/messages {request}; echo ===; ant /v1/messages {request}");
    let out = sections(&setup.exec(&bob, &second, &twice));
    assert!(out[0].ends_with("status=200"), "{out:#?}");
    assert!(
        out[1].ends_with("status=429")
            && out[1].contains("1 inference requests per minute")
            && out[1].contains(r#""code":"rate_limited""#),
        "{out:#?}"
    );

    // A restarted gateway serves the sockets of the sandboxes it adopts.
    let setup = setup.restart();
    let out = sections(&setup.exec(
        &bob,
        &first,
        &format!("{CLIENTS}\nant /v1/messages {request}"),
    ));
    assert!(out[0].ends_with("status=200"), "{out:#?}");
    assert_eq!(setup.fake.seen().len(), 4);
}

#[test]
fn a_real_opencode_in_a_sandbox_completes_a_prompt_through_corral_with_no_set_up() {
    let setup = Setup::new();
    let carol = add_user(&setup.gw, &setup.admin, "carol@example.com");
    // `full` runs anything readable: the opencode placed in the workspace.
    let (status, body) = post(
        &setup.gw.api("/sandboxes"),
        &carol,
        json!({"name": "agent", "profile": "full"}),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let url = setup.gw.api(&format!("/sandboxes/{id}/start"));
    let (status, body) = call("POST", &url, Some(&carol), &[], None);
    assert_eq!(status, 200, "{body}");
    corral_testkit::opencode::place_in_workspace(
        &setup
            .root
            .path()
            .join("data/sandboxes")
            .join(&id)
            .join("workspace"),
    );
    // Nothing configured by hand: the sandbox's environment is all opencode gets.
    let out = setup.exec(
        &carol,
        &id,
        &format!(
            "cd /workspace && OPENCODE_DISABLE_MODELS_FETCH=1 {} run --model anthropic/claude-sonnet-4-5 'say hi' 2>&1",
            corral_testkit::opencode::IN_SANDBOX
        ),
    );
    assert!(out.contains(REPLY), "{out}");
    let seen = setup.fake.seen();
    assert!(
        seen.iter()
            .any(|s| s.path == "/v1/messages" && s.model.as_deref() == Some("claude-sonnet-4-5")),
        "{seen:#?}"
    );
    assert!(
        seen.iter().all(|s| s.key.as_deref() == Some(ANTHROPIC_KEY)),
        "{seen:#?}"
    );
    let rows = usage(&setup, &carol, 1);
    assert!(
        rows.iter().any(|(p, m, n, i, o)| p == "anthropic"
            && m == "claude-sonnet-4-5"
            && *n >= 1
            && *i == *n * ANTHROPIC_TOKENS.0
            && *o == *n * ANTHROPIC_TOKENS.1),
        "{rows:?}"
    );
}

/// curl calls that ignore the base-URL settings and talk HTTPS to the real provider hosts
/// (through the egress proxy, as any tool does): `$1` is the key, `$2` the JSON body.
const HOST_CLIENTS: &str = r#"
ant_host() { curl -sS -N -i --suppress-connect-headers "https://api.anthropic.com/v1/messages" -H "x-api-key: $1" -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' -d "$2"; }
oai_host() { curl -sS -N -i --suppress-connect-headers "https://api.openai.com/v1/chat/completions" -H "Authorization: Bearer $1" -H 'content-type: application/json' -d "$2"; }
"#;

#[test]
fn requests_to_the_real_provider_hosts_are_routed_like_base_url_requests() {
    let setup = Setup::new();
    let dave = add_user(&setup.gw, &setup.admin, "dave@example.com");
    let id = setup.sandbox(&dave, "direct-hosts");
    let script = format!(
        r#"{HOST_CLIENTS}
ant_host "$ANTHROPIC_API_KEY" '{{"model":"claude-direct","max_tokens":10,"messages":[{{"role":"user","content":"hi"}}]}}'
echo; echo ===
ant_host "$ANTHROPIC_API_KEY" '{{"model":"claude-direct-stream","stream":true,"max_tokens":10,"messages":[]}}'
echo; echo ===
oai_host "$OPENAI_API_KEY" '{{"model":"gpt-direct","messages":[{{"role":"user","content":"hi"}}]}}'
echo; echo ===
ant_host sk-ant-a-key-of-the-agent-s-own '{{"model":"claude-direct","messages":[]}}'
echo; echo ===
ant_host "$ANTHROPIC_API_KEY" '{{"model":"claude-forbidden-2","messages":[]}}'
echo; echo ===
# An absolute-URI request for the host, as a client sending plain HTTP to the proxy makes.
curl -sS -i --noproxy '' -x http://127.0.0.1:3128 http://api.anthropic.com/v1/messages -H "x-api-key: $ANTHROPIC_API_KEY" -d '{{"model":"claude-plain","messages":[]}}'
echo; echo ===
# A tunnel to the provider host whose TLS asks for another server: refused, no certificate.
curl -sS -p --connect-to front.example:443:api.anthropic.com:443 https://front.example/v1/messages -H "x-api-key: $ANTHROPIC_API_KEY" -d '{{"model":"claude-fronted","messages":[]}}' 2>&1 || echo "exit=$?"
"#
    );
    let out = sections(&setup.exec(&dave, &id, &script));
    assert_eq!(out.len(), 7, "{out:#?}");
    // The fake provider's answers, JSON and streamed, through corral's certificate for the
    // host (curl verifies it against the sandbox's bundle).
    assert!(
        out[0].starts_with("HTTP/1.1 200") && out[0].contains(REPLY),
        "{}",
        out[0]
    );
    let streamed: String = out[1]
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, REPLY, "{}", out[1]);
    assert!(
        out[2].starts_with("HTTP/1.1 200") && out[2].contains(REPLY),
        "{}",
        out[2]
    );
    assert!(
        out[5].starts_with("HTTP/1.1 200") && out[5].contains(REPLY),
        "{}",
        out[5]
    );
    // A key the agent brought itself is refused, not passed on.
    assert!(
        out[3].starts_with("HTTP/1.1 401") && out[3].contains("not this sandbox's"),
        "{}",
        out[3]
    );
    // The inference policy governs: a denied model names the policy.
    let denied = &out[4];
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(
        denied.contains("x-corral-deny: team/inference/deny:anthropic/claude-forbidden*")
            && denied.contains(r#""code":"denied_by_policy""#),
        "{denied}"
    );

    assert!(out[6].contains("exit="), "{}", out[6]);

    // The provider saw the allowed requests only, each with the real key of its kind.
    let seen = setup.fake.seen();
    let models: Vec<_> = seen.iter().map(|s| s.model.clone().unwrap()).collect();
    assert_eq!(
        models,
        [
            "claude-direct",
            "claude-direct-stream",
            "gpt-direct",
            "claude-plain"
        ],
        "{seen:#?}"
    );
    for request in &seen {
        let expected = if request.path == "/v1/messages" {
            ANTHROPIC_KEY
        } else {
            OPENAI_KEY
        };
        assert_eq!(request.key.as_deref(), Some(expected), "{request:?}");
    }
    let (ai, ao) = ANTHROPIC_TOKENS;
    let (oi, oo) = OPENAI_TOKENS;
    assert_eq!(
        usage(&setup, &dave, 4),
        vec![
            ("anthropic".into(), "claude-direct".into(), 1, ai, ao),
            ("anthropic".into(), "claude-direct-stream".into(), 1, ai, ao),
            ("anthropic".into(), "claude-plain".into(), 1, ai, ao),
            ("openai".into(), "gpt-direct".into(), 1, oi, oo),
        ]
    );

    // The audit shows the connections as routed (never a decision on a resolved address:
    // the hosts were not looked up) and each request's inference decision.
    let audit = std::fs::read_to_string(
        setup
            .root
            .path()
            .join("data/sandboxes")
            .join(&id)
            .join("audit.jsonl"),
    )
    .unwrap();
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let connects: Vec<_> = events
        .iter()
        .filter(|e| e["action"] == "connect")
        .map(|e| (e["resource"].as_str().unwrap(), e["policies"].to_string()))
        .collect();
    assert!(!connects.is_empty(), "{audit}");
    for (resource, policies) in &connects {
        let fronted =
            (*resource, policies.as_str()) == ("front.example:443", r#"["sni-mismatch"]"#);
        let routed = [
            "api.anthropic.com:443",
            "api.openai.com:443",
            "api.anthropic.com:80",
        ]
        .contains(resource)
            && policies == r#"["inference-router"]"#;
        assert!(fronted || routed, "{audit}");
    }
    assert!(
        connects.iter().any(|(r, _)| *r == "front.example:443"),
        "{audit}"
    );
    assert!(
        events.iter().any(|e| e["action"] == "inference"
            && e["resource"] == "anthropic/claude-forbidden-2"
            && e["decision"] == "deny"),
        "{audit}"
    );

    // Without a provider of the host's kind, the agent is told which one to add.
    let url = setup.gw.api("/providers/anthropic");
    let (status, body) = call("DELETE", &url, Some(&setup.admin), &[], None);
    assert_eq!(status, 204, "{body}");
    let out = setup.exec(
        &dave,
        &id,
        &format!(
            "{HOST_CLIENTS}\nant_host \"$ANTHROPIC_API_KEY\" '{{\"model\":\"claude-direct\",\"messages\":[]}}'"
        ),
    );
    assert!(
        out.starts_with("HTTP/1.1 404")
            && out.contains("corral provider add anthropic --kind anthropic"),
        "{out}"
    );
    assert_eq!(setup.fake.seen().len(), 4);
}
