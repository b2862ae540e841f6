//! `corral up` over real HTTP: the real binary on a free loopback port, driven with a real
//! HTTP client. What the gateway promises about first start, tokens, refusals, sandbox
//! visibility, repo-session ids, configuration and shutdown.

use std::path::Path;
use std::process::Command;

use corral_testkit::Gateway;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// A method, a URL, an optional bearer token, extra headers and an optional JSON body;
/// returns the status and the JSON body (Null when empty).
fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = ureq::request(method, url);
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.set("Content-Type", "application/json");
    }
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(body) => request.send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    let text = response.into_string().expect("read body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, value)
}

/// POSTs a 200 kB body the way careful clients do (`Expect: 100-continue`) over a raw
/// connection, sending the body only if the server asks for it.
fn oversized_post(url: &str, token: &str) -> (u16, Value) {
    use std::io::{BufRead, BufReader, Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let body = json!({ "name": "x".repeat(200_000) }).to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    assert!(
        !status_line.contains(" 100 "),
        "the server asked for a body it cannot accept: {status_line}"
    );
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut text = vec![0; length];
    reader.read_exact(&mut text).unwrap();
    (status, serde_json::from_slice(&text).unwrap())
}

fn get(url: &str, token: &str) -> (u16, Value) {
    call("GET", url, Some(token), &[], None)
}

fn post(url: &str, token: &str, body: Value) -> (u16, Value) {
    call("POST", url, Some(token), &[], Some(&body.to_string()))
}

fn delete(url: &str, token: &str) -> (u16, Value) {
    call("DELETE", url, Some(token), &[], None)
}

/// Asserts a JSON error with this status and returns its message.
fn error_message(response: (u16, Value), status: u16) -> String {
    assert_eq!(response.0, status, "{}", response.1);
    let message = response.1["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message in {}", response.1));
    assert!(response.1["error"]["code"].is_string(), "{}", response.1);
    message.to_owned()
}

fn start(root: &Path) -> Gateway {
    Gateway::start(Path::new(BIN), &root.join("data"), &[], &[])
}

/// Admin creates a user; returns the user's first token.
fn add_user(gw: &Gateway, admin: &str, email: &str) -> String {
    let (status, body) = post(&gw.api("/users"), admin, json!({ "email": email }));
    assert_eq!(status, 201, "{body}");
    body["token"]["token"]
        .as_str()
        .expect("first token")
        .to_owned()
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn first_start_prints_a_working_admin_token_once_and_sigterm_exits_0() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let token = gw
        .printed_token
        .clone()
        .expect("first start prints a token");
    assert!(token.starts_with("corral_") && token.len() >= 40, "{token}");
    let (status, me) = get(&gw.api("/me"), &token);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["email"], "admin@localhost");
    assert_eq!(me["role"], "admin");
    let status = gw.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM must exit cleanly: {status:?}"
    );

    let again = start(root.path());
    assert!(again.printed_token.is_none(), "{}", again.stdout);
    assert!(!again.stdout.contains("admin token"), "{}", again.stdout);
    assert!(!again.stdout.contains(&token));
    assert_eq!(
        get(&again.api("/me"), &token).0,
        200,
        "the token survives a restart"
    );
}

#[test]
fn corral_admin_token_is_honoured_and_never_printed() {
    let root = tempfile::tempdir().unwrap();
    let token = "automation-token-0123456789abcdef0123456789";
    let gw = Gateway::start(
        Path::new(BIN),
        &root.path().join("data"),
        &["--admin-email", "ops@example.com"],
        &[("CORRAL_ADMIN_TOKEN", token)],
    );
    assert!(gw.printed_token.is_none());
    assert!(!gw.stdout.contains(token), "{}", gw.stdout);
    let (status, me) = get(&gw.api("/me"), token);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["email"], "ops@example.com");
    assert_eq!(me["role"], "admin");
}

#[test]
fn a_short_admin_token_is_refused_without_echoing_it() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(root.path().join("data"))
        .env("CORRAL_ADMIN_TOKEN", "hunter2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("admin_token"), "{stderr}");
    assert!(
        !stderr.contains("hunter2") && !String::from_utf8_lossy(&out.stdout).contains("hunter2")
    );
}

#[test]
fn refusals_are_json_and_say_why() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let me = gw.api("/me");

    let missing = error_message(call("GET", &me, None, &[], None), 401);
    assert!(missing.contains("Bearer"), "{missing}");
    let wrong = error_message(get(&me, "corral_not-a-real-token"), 401);
    assert!(wrong.contains("invalid token"), "{wrong}");
    let scheme = error_message(
        call("GET", &me, None, &[("Authorization", "Basic YTpi")], None),
        401,
    );
    assert!(scheme.contains("Bearer"), "{scheme}");

    let user = add_user(&gw, &admin, "carol@example.com");
    let forbidden = error_message(post(&gw.api("/users"), &user, json!({"email": "x@y"})), 403);
    assert!(forbidden.contains("admin"), "{forbidden}");
    error_message(
        post(
            &gw.api("/tokens"),
            &user,
            json!({"name": "t", "user": "admin@localhost"}),
        ),
        403,
    );
    error_message(
        post(
            &gw.api("/users"),
            &admin,
            json!({"email": "carol@example.com"}),
        ),
        409,
    );

    // Malformed input is the caller's mistake: 4xx JSON, never a 5xx.
    let sandboxes = gw.api("/sandboxes");
    error_message(
        call("POST", &sandboxes, Some(&user), &[], Some("{not json")),
        400,
    );
    let unknown = error_message(
        post(&sandboxes, &user, json!({"profile": "full", "colour": 1})),
        400,
    );
    assert!(unknown.contains("colour"), "{unknown}");
    error_message(post(&sandboxes, &user, json!({"name": "Not_A_Label"})), 400);
    error_message(post(&sandboxes, &user, json!({"branch": "main"})), 400);
    error_message(
        post(&sandboxes, &user, json!({"repo": "r", "branch": "a..b"})),
        400,
    );
    error_message(post(&sandboxes, &user, json!({"ports": [8080, 8080]})), 400);
    error_message(post(&sandboxes, &user, json!({"ports": [70000]})), 400);
    error_message(oversized_post(&sandboxes, &user), 413);
    error_message(get(&gw.api("/sandboxes/%FF"), &user), 400);
    error_message(delete(&gw.api("/tokens/%FF"), &user), 400);
    error_message(
        call(
            "POST",
            &sandboxes,
            Some(&user),
            &[("Content-Type", "text/plain")],
            Some("{}"),
        ),
        415,
    );
    error_message(get(&gw.api("/nowhere"), &user), 404);
    error_message(call("PUT", &me, Some(&user), &[], None), 405);
}

#[test]
fn a_bad_profile_is_refused_naming_the_valid_ones() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    for profile in ["paranoid", "/etc/passwd", "../profiles/full.toml"] {
        let message = error_message(
            post(&gw.api("/sandboxes"), &admin, json!({ "profile": profile })),
            400,
        );
        for valid in ["full", "moderate", "restricted"] {
            assert!(message.contains(valid), "{message}");
        }
    }
    let (status, body) = post(
        &gw.api("/sandboxes"),
        &admin,
        json!({ "profile": "moderate" }),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["profile"], "moderate");
    assert_eq!(body["state"], "stopped");
}

#[test]
fn users_see_and_touch_only_their_own_sandboxes() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let alice = add_user(&gw, &admin, "alice@example.com");
    let bob = add_user(&gw, &admin, "bob@example.com");

    let (status, created) = post(
        &gw.api("/sandboxes"),
        &alice,
        json!({"name": "dev", "ports": [8080]}),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["owner"], "alice@example.com");
    let url = gw.api(&format!("/sandboxes/{id}"));

    // To bob, alice's sandbox looks exactly like one that does not exist.
    let hidden = error_message(get(&url, &bob), 404);
    let absent = error_message(get(&gw.api("/sandboxes/000000000000"), &bob), 404);
    assert_eq!(
        hidden.replace(&id, "ID"),
        absent.replace("000000000000", "ID")
    );
    error_message(delete(&url, &bob), 404);
    assert_eq!(get(&gw.api("/sandboxes"), &bob), (200, json!([])));

    // Names are per user: bob may also call his "dev".
    assert_eq!(
        post(&gw.api("/sandboxes"), &bob, json!({"name": "dev"})).0,
        201
    );
    error_message(
        post(&gw.api("/sandboxes"), &alice, json!({"name": "dev"})),
        409,
    );

    let (status, mine) = get(&url, &alice);
    assert_eq!((status, &mine["ports"]), (200, &json!([8080])));
    let (_, all) = get(&gw.api("/sandboxes"), &admin);
    assert_eq!(
        all.as_array().unwrap().len(),
        2,
        "admins see every sandbox: {all}"
    );
    assert_eq!(get(&url, &admin).0, 200);

    assert_eq!(delete(&url, &alice).0, 204);
    error_message(get(&url, &alice), 404);
}

#[test]
fn a_repo_session_has_the_hash_id_and_creating_it_again_returns_it() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let alice = add_user(&gw, &admin, "alice@example.com");
    let bob = add_user(&gw, &admin, "bob@example.com");
    let repo = "https://git.example/acme/app.git";
    let request =
        json!({"repo": repo, "branch": "ai/fix", "profile": "moderate", "agent": "opencode"});

    let (status, first) = post(&gw.api("/sandboxes"), &alice, request.clone());
    assert_eq!(status, 201, "{first}");
    let expected = sha256_hex(&format!("alice@example.com\n{repo}\nai/fix"))[..12].to_owned();
    assert_eq!(first["id"], expected.as_str());
    assert_eq!(
        (first["branch"].as_str(), first["agent"].as_str()),
        (Some("ai/fix"), Some("opencode"))
    );

    let (status, again) = post(&gw.api("/sandboxes"), &alice, request.clone());
    assert_eq!(status, 200, "the same session, not a new one: {again}");
    assert_eq!(again, first);
    assert_eq!(
        get(&gw.api("/sandboxes"), &alice)
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let (status, bobs) = post(&gw.api("/sandboxes"), &bob, request);
    assert_eq!(status, 201);
    assert_ne!(bobs["id"], first["id"], "the id includes the owner");

    let (status, main) = post(&gw.api("/sandboxes"), &alice, json!({"repo": repo}));
    assert_eq!(status, 201);
    let expected = sha256_hex(&format!("alice@example.com\n{repo}\nmain"))[..12].to_owned();
    assert_eq!(
        (main["id"].as_str(), main["branch"].as_str()),
        (Some(expected.as_str()), Some("main"))
    );
}

#[test]
fn tokens_are_stored_only_as_hashes() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let user = add_user(&gw, &admin, "dave@example.com");
    let (status, extra) = post(&gw.api("/tokens"), &user, json!({"name": "laptop"}));
    assert_eq!(status, 201, "{extra}");
    let extra = extra["token"].as_str().unwrap().to_owned();
    assert_eq!(get(&gw.api("/me"), &extra).1["email"], "dave@example.com");
    let (_, listed) = get(&gw.api("/tokens"), &user);
    assert!(
        !listed.to_string().contains(&extra),
        "a listing never shows values: {listed}"
    );

    // Every byte the gateway wrote (database, WAL, shared memory), while it runs and after
    // it stops: no token value, only token hashes.
    let raw = |dir: &Path| -> Vec<u8> {
        std::fs::read_dir(dir)
            .unwrap()
            .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect()
    };
    let contains = |haystack: &[u8], needle: &str| {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    };
    let tokens = [&admin, &user, &extra];
    let running = raw(&data);
    assert_eq!(gw.terminate().code(), Some(0));
    let stopped = raw(&data);
    for bytes in [&running, &stopped] {
        for token in tokens {
            let body = &token["corral_".len()..];
            assert!(!contains(bytes, body), "a raw token is in the data dir");
        }
    }

    let db = rusqlite::Connection::open(data.join("corral.db")).unwrap();
    let mut stmt = db.prepare("SELECT hash FROM tokens ORDER BY id").unwrap();
    let hashes: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<String> = tokens.iter().map(|t| sha256_hex(t)).collect();
    assert_eq!(hashes, expected);
}

#[test]
fn an_identity_header_counts_only_from_a_trusted_proxy() {
    let root = tempfile::tempdir().unwrap();
    let untrusting = start(root.path());
    for header in ["X-Forwarded-Email", "X-Auth-Request-Email"] {
        let message = error_message(
            call(
                "GET",
                &untrusting.api("/me"),
                None,
                &[(header, "admin@localhost")],
                None,
            ),
            401,
        );
        assert!(message.contains("trusted_proxies"), "{message}");
    }
    // A header from an untrusted peer does not change who a token belongs to either.
    let admin = untrusting.printed_token.clone().unwrap();
    let user = add_user(&untrusting, &admin, "erin@example.com");
    let (_, me) = call(
        "GET",
        &untrusting.api("/me"),
        Some(&user),
        &[("X-Forwarded-Email", "admin@localhost")],
        None,
    );
    assert_eq!(me["email"], "erin@example.com");
    drop(untrusting);

    let other = tempfile::tempdir().unwrap();
    let trusting = Gateway::start(
        Path::new(BIN),
        &other.path().join("data"),
        &["--trusted-proxy", "127.0.0.1"],
        &[],
    );
    let (status, me) = call(
        "GET",
        &trusting.api("/me"),
        None,
        &[("X-Auth-Request-Email", "frank@example.com")],
        None,
    );
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["email"].as_str(), me["role"].as_str()),
        (Some("frank@example.com"), Some("user"))
    );
    error_message(
        call(
            "GET",
            &trusting.api("/me"),
            None,
            &[("X-Forwarded-Email", "not an email")],
            None,
        ),
        401,
    );
}

#[test]
fn password_login_gives_a_token() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let (status, body) = post(
        &gw.api("/users"),
        &admin,
        json!({"email": "gina@example.com", "password": "correct horse battery"}),
    );
    assert_eq!(status, 201, "{body}");
    let login = |email: &str, password: &str| {
        call(
            "POST",
            &gw.api("/login"),
            None,
            &[],
            Some(&json!({"email": email, "password": password}).to_string()),
        )
    };
    let wrong = error_message(login("gina@example.com", "wrong"), 401);
    let nobody = error_message(login("nobody@example.com", "correct horse battery"), 401);
    assert_eq!(
        wrong, nobody,
        "a refusal does not reveal which emails exist"
    );
    // The admin has no password: it cannot log in with one.
    error_message(login("admin@localhost", ""), 401);

    let (status, body) = login("gina@example.com", "correct horse battery");
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap();
    assert_eq!(get(&gw.api("/me"), token).1["email"], "gina@example.com");
}

#[test]
fn config_file_then_env_then_flags_and_print_config_redacts() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("gateway.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1111\"\ndomain = \"file.example\"\nlog_format = \"json\"\n\
         idle_timeout = \"5m\"\nadmin_email = \"file@example.com\"\n",
    )
    .unwrap();
    let token = "secret-token-0123456789abcdef0123456789";
    let out = Command::new(BIN)
        .args(["up", "--print-config", "--config"])
        .arg(&file)
        .args(["--listen", "127.0.0.1:3333", "--data-dir", "/srv/corral"])
        .env_clear()
        .env("HOME", root.path())
        .env("CORRAL_LISTEN", "127.0.0.1:2222")
        .env("CORRAL_DOMAIN", "env.example")
        .env("CORRAL_ADMIN_TOKEN", token)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "listen = \"127.0.0.1:3333\"", // flag over env over file
        "domain = \"env.example\"",    // env over file
        "log_format = \"json\"",       // file over default
        "idle_timeout = \"5m\"",
        "admin_email = \"file@example.com\"",
        "data_dir = \"/srv/corral\"",
        "admin_token = \"<redacted>\"",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "missing {line:?} in:\n{printed}"
        );
    }
    assert!(!printed.contains(token), "{printed}");

    // Without a data dir anywhere, the XDG default applies.
    let out = Command::new(BIN)
        .args(["up", "--print-config"])
        .env_clear()
        .env("HOME", "/home/someone")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("data_dir = \"/home/someone/.local/share/corral\""),
        "{printed}"
    );
    assert!(printed.contains("listen = \"127.0.0.1:7070\""), "{printed}");
    assert!(!printed.contains("admin_token"), "{printed}");

    // A relative --data-dir is relative to the current directory.
    let out = Command::new(BIN)
        .args(["up", "--print-config", "--data-dir", "rel/data"])
        .current_dir(root.path())
        .env_clear()
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    let expected = format!("data_dir = \"{}/rel/data\"", root.path().display());
    assert!(printed.lines().any(|l| l == expected), "{printed}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(root.path().join("data"))
        .env_clear()
        .env("HOME", root.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    // The first event is the admin creation; then "gateway listening".
    let mut events = Vec::new();
    while events.len() < 2 {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "stderr closed"
        );
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        events.push(event);
    }
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "gateway listening"),
        "{events:?}"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_openapi_document_describes_the_routes_the_server_has() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let (status, doc) = call("GET", &gw.api("/openapi.json"), None, &[], None);
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let url = format!("{}{}", gw.url, path.replace("{id}", "x"));
            let (status, body) = call(&method.to_uppercase(), &url, None, &[], None);
            // Without credentials or a body every documented operation refuses, but it
            // exists: never "no such endpoint" or "method not allowed".
            assert!(
                status != 405 && body["error"]["message"] != "no such endpoint",
                "{method} {path}: {status} {body}"
            );
            assert!(
                (400..500).contains(&status),
                "{method} {path}: {status} {body}"
            );
        }
    }
    assert_eq!(operations, 11, "{paths:?}");
    let create = &paths["/api/v1/sandboxes"]["post"]["responses"];
    assert!(
        create["200"].is_object() && create["201"].is_object(),
        "{create}"
    );
    assert!(doc["components"]["schemas"]["CreateSandbox"].is_object());
}

#[test]
fn sigint_also_exits_0() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    assert_eq!(gw.stop_with("INT").code(), Some(0));
}

#[test]
fn concurrent_creates_of_one_repo_session_make_one_sandbox() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let request = json!({"repo": "https://git.example/acme/app.git", "branch": "dev"});
    let statuses: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| post(&gw.api("/sandboxes"), &admin, request.clone())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = statuses.iter().filter(|(s, _)| *s == 201).count();
    let existing = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, existing), (1, 7), "{statuses:?}");
    assert!(statuses.iter().all(|(_, b)| b["id"] == statuses[0].1["id"]));
    assert_eq!(
        get(&gw.api("/sandboxes"), &admin)
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_revoked_token_stops_working_and_only_its_owner_can_revoke_it() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let hal = add_user(&gw, &admin, "hal@example.com");
    let (_, extra) = post(&gw.api("/tokens"), &hal, json!({"name": "ci"}));
    let (id, extra) = (
        extra["id"].as_i64().unwrap(),
        extra["token"].as_str().unwrap().to_owned(),
    );
    let url = gw.api(&format!("/tokens/{id}"));

    error_message(delete(&url, &admin), 404);
    assert_eq!(get(&gw.api("/me"), &extra).0, 200);
    assert_eq!(delete(&url, &hal).0, 204);
    error_message(get(&gw.api("/me"), &extra), 401);
    assert_eq!(
        get(&gw.api("/me"), &hal).0,
        200,
        "the other token still works"
    );

    // An admin may make a token for another user; it acts as that user.
    let (status, made) = post(
        &gw.api("/tokens"),
        &admin,
        json!({"name": "support", "user": "hal@example.com"}),
    );
    assert_eq!(status, 201, "{made}");
    let made = made["token"].as_str().unwrap();
    assert_eq!(get(&gw.api("/me"), made).1["email"], "hal@example.com");
    let (_, users) = get(&gw.api("/users"), &admin);
    let emails: Vec<_> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].clone())
        .collect();
    assert_eq!(emails, [json!("admin@localhost"), json!("hal@example.com")]);
}
