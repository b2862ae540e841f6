//! A real `opencode serve` (npm package opencode-ai, installed under target/npm by
//! scripts/test) in a sandbox, from an agent template in the gateway's config, opened the way
//! the web page opens it: a one-time ticket, the session host's own cookie, then its HTTP API
//! and its event stream through the gateway.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use corral_testkit::Gateway;
use corral_testkit::gateway::{SandboxReaper, post};
use corral_testkit::ingress::{address, get_at, raw, read_until};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

#[test]
fn opencode_serve_answers_and_streams_events_through_its_session_host() {
    let root = tempfile::tempdir().unwrap();
    // Like the built-in template, with opencode's own binary and its update checks off.
    let config = root.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[agents.opencode-local]\ncommand = [{:?}, \"serve\", \"--hostname\", \"127.0.0.1\", \
             \"--port\", \"4096\"]\nports = [4096]\n\
             env = {{ OPENCODE_DISABLE_AUTOUPDATE = \"1\", OPENCODE_DISABLE_MODELS_FETCH = \"1\" }}\n",
            corral_testkit::opencode::IN_SANDBOX
        ),
    )
    .unwrap();
    let gw = Gateway::start(
        Path::new(BIN),
        &root.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[],
    );
    let _reaper = SandboxReaper(root.path().join("data"));
    let admin = gw.printed_token.clone().unwrap();
    let (status, sandbox) = post(
        &gw.api("/sandboxes"),
        &admin,
        json!({"profile": "full", "agent": "opencode-local"}),
    );
    assert_eq!(status, 201, "{sandbox}");
    let id = sandbox["id"].as_str().unwrap();
    corral_testkit::opencode::place_in_workspace(
        &root
            .path()
            .join("data/sandboxes")
            .join(id)
            .join("workspace"),
    );
    let url = sandbox["url"].as_str().unwrap().to_owned();
    let host = url.trim_start_matches("http://").to_owned();

    // As a browser: the page's ticket, spent at the session host, becomes its cookie.
    let (status, ticket) = post(
        &gw.api(&format!("/sandboxes/{id}/ticket")),
        &admin,
        json!({}),
    );
    assert_eq!(status, 200, "{ticket}");
    let path = ticket["url"]
        .as_str()
        .unwrap()
        .strip_prefix(&url)
        .unwrap()
        .to_owned();
    let spent = raw(&gw, &format!("GET {path} HTTP/1.1\r\nHost: {host}"));
    assert_eq!(spent.status, 303, "{spent:?}");
    let cookie = spent
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let cookie = format!("Cookie: {cookie}");

    // The first request starts the sandbox and is held until opencode listens. (opencode
    // itself leaves requests that arrive in its first seconds unanswered, so this waits for
    // it to answer at all before testing what it answers.)
    wait_until_answering(&gw, &host, &cookie);
    let config = get_at(
        &gw,
        &host,
        "/config",
        None,
        &[&cookie, "Accept: application/json"],
    );
    assert_eq!(config.status, 200, "{config:?}");
    let config: serde_json::Value = serde_json::from_str(&config.body).unwrap();
    assert!(config.get("$schema").is_some(), "{config}");

    // Its event stream streams: the first event arrives while the response stays open.
    let events = read_until(
        &gw,
        &format!("GET /event HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n{cookie}"),
        "server.connected",
    );
    assert!(events.starts_with("HTTP/1.1 200"), "{events}");
    assert!(
        events
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{events}"
    );

    // The path fallback reaches the same API with a token.
    let doc = get_at(
        &gw,
        &address(&gw),
        &format!("/s/{id}/config"),
        Some(&admin),
        &[],
    );
    assert_eq!(doc.status, 200, "{doc:?}");
}

/// Asks for `/path` until opencode answers (each try guarded against opencode's early hang;
/// 120 s in all).
fn wait_until_answering(gw: &Gateway, host: &str, cookie: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut stream = TcpStream::connect(address(gw)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "GET /path HTTP/1.1\r\nHost: {host}\r\n{cookie}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        if answer.starts_with("HTTP/1.1 200") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "opencode never answered: {answer}"
        );
    }
}
