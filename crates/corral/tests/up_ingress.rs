//! `corral up` ingress: agent templates, session hosts and the `/s/` path reaching a server in
//! a sandbox (resumed on the first request), what the sandbox is sent, WebSocket echo through
//! the gateway, one-time tickets becoming host-only cookies, and every cross-user and Host
//! header trick refused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use corral_testkit::Gateway;
use corral_testkit::gateway::{SandboxReaper, add_user, error_message, get, post};
use corral_testkit::ingress::{ECHO_PORT, address, echo_sandbox, get_at, raw};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// A gateway with a config file adding one agent template.
fn start(root: &Path) -> Gateway {
    let config = root.join("gateway.toml");
    std::fs::write(
        &config,
        "[agents.devserver]\ncommand = [\"python3\", \"-m\", \"http.server\", \"3000\"]\n\
         ports = [3000, 3001]\nprimary_port = 3001\ndescription = \"a dev server\"\n\
         env = { MODE = \"dev\" }\n",
    )
    .unwrap();
    Gateway::start(
        Path::new(BIN),
        &root.join("data"),
        &["--config", config.to_str().unwrap()],
        &[],
    )
}

fn host(gw: &Gateway, label: &str) -> String {
    let port = address(gw).rsplit(':').next().unwrap().to_owned();
    format!("{label}.localhost:{port}")
}

#[test]
fn agent_templates_are_listed_and_chosen() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let admin = gw.printed_token.clone().unwrap();
    let (status, agents) = get(&gw.api("/agents"), &admin);
    assert_eq!(status, 200, "{agents}");
    let names: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["code-server", "devserver", "opencode", "shell"]);
    let by_name = |n: &str| {
        agents
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("opencode")["primary_port"], 4096);
    assert_eq!(by_name("code-server")["ports"], json!([8080]));
    assert_eq!(by_name("shell")["primary_port"], json!(null));
    assert_eq!(by_name("devserver")["primary_port"], 3001);

    let (status, made) = post(
        &gw.api("/sandboxes"),
        &admin,
        json!({"agent": "devserver", "ports": [5000]}),
    );
    assert_eq!(status, 201, "{made}");
    assert_eq!(
        made["ports"],
        json!([3001, 3000, 5000]),
        "primary first, then the rest"
    );
    let id = made["id"].as_str().unwrap();
    let port = address(&gw).rsplit(':').next().unwrap().to_owned();
    assert_eq!(made["url"], format!("http://{id}.localhost:{port}"));

    let (_, shell) = post(&gw.api("/sandboxes"), &admin, json!({}));
    assert_eq!(
        (&shell["agent"], &shell["url"]),
        (&json!("shell"), &json!(null))
    );

    for (body, words) in [
        (json!({"agent": "emacs"}), "devserver"),
        (json!({"agent": "shell", "command": ["sh"]}), "either"),
        (json!({"command": []}), "command"),
        (json!({"command": ["sh"], "ports": [0]}), "port 0"),
    ] {
        let message = error_message(post(&gw.api("/sandboxes"), &admin, body.clone()), 400);
        assert!(message.contains(words), "{body}: {message}");
    }
}

#[test]
fn a_custom_command_is_reached_at_its_session_host_and_path_and_sees_no_corral_credentials() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let _reaper = SandboxReaper(root.path().join("data"));
    let admin = gw.printed_token.clone().unwrap();
    let alice = add_user(&gw, &admin, "alice@example.com");
    let sandbox = echo_sandbox(&gw, &alice);
    let id = sandbox["id"].as_str().unwrap();
    assert_eq!(sandbox["state"], "stopped");

    // The first request finds it stopped, starts it and is held until the port accepts.
    let at_host = host(&gw, id);
    let answer = get_at(
        &gw,
        &at_host,
        "/x?y=1",
        Some(&alice),
        &["Cookie: theme=dark"],
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    for seen in [
        format!("host={at_host}"),
        "x-forwarded-for=127.0.0.1".into(),
        format!("x-forwarded-host={at_host}"),
        "x-forwarded-proto=http".into(),
        "cookie=theme=dark".into(),
        "authorization=-".into(),
        "path=/x?y=1".into(),
    ] {
        assert!(answer.body.contains(&seen), "{seen} not in {}", answer.body);
    }
    assert_eq!(
        get(&gw.api(&format!("/sandboxes/{id}")), &alice).1["state"],
        "running"
    );

    // The path fallback strips its prefix; a bare prefix is redirected under it.
    let addr = address(&gw);
    let answer = get_at(&gw, &addr, &format!("/s/{id}/deep/path"), Some(&alice), &[]);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("path=/deep/path"), "{}", answer.body);
    let answer = get_at(&gw, &addr, &format!("/s/{id}?q"), Some(&alice), &[]);
    assert_eq!(
        (answer.status, answer.header("location")),
        (308, Some(&*format!("/s/{id}/?q")))
    );

    // A 3 MB upload passes through whole.
    let upload = "a".repeat(3_000_000);
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {at_host}\r\nAuthorization: Bearer {alice}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{upload}",
        upload.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("body=3000000"),
        "{text}"
    );

    let metrics = get_at(&gw, &addr, "/metrics", Some(&admin), &[]).body;
    for line in [
        "corral_proxied_requests_total{route=\"host\"}",
        "corral_proxied_requests_total{route=\"path\"}",
        "corral_sandboxes{state=\"running\"} 1",
        "corral_sandbox_starts_total{cause=\"resume\"} 1",
        "corral_resume_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[test]
fn other_users_and_host_header_tricks_never_reach_a_session() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let _reaper = SandboxReaper(root.path().join("data"));
    let admin = gw.printed_token.clone().unwrap();
    let alice = add_user(&gw, &admin, "alice@example.com");
    let bob = add_user(&gw, &admin, "bob@example.com");
    let a = echo_sandbox(&gw, &alice)["id"].as_str().unwrap().to_owned();
    let b = echo_sandbox(&gw, &bob)["id"].as_str().unwrap().to_owned();
    let (ha, hb) = (host(&gw, &a), host(&gw, &b));
    assert_eq!(get_at(&gw, &ha, "/", Some(&alice), &[]).status, 200);
    assert_eq!(get_at(&gw, &hb, "/", Some(&bob), &[]).status, 200);

    // Bob at alice's session looks exactly like bob at a session that does not exist.
    let hidden = get_at(&gw, &ha, "/", Some(&bob), &[]);
    let absent = get_at(&gw, &host(&gw, "0123456789ab"), "/", Some(&bob), &[]);
    assert_eq!((hidden.status, &hidden.body), (404, &absent.body));
    // No credentials at all: 401, whether the sandbox exists or not.
    let anonymous = get_at(&gw, &ha, "/", None, &[]);
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(
        anonymous.body,
        get_at(&gw, &host(&gw, "0123456789ab"), "/", None, &[]).body
    );
    // An unknown token is refused.
    assert_eq!(
        get_at(&gw, &ha, "/", Some("corral_forged"), &[]).status,
        401
    );

    let port = address(&gw).rsplit(':').next().unwrap().to_owned();
    let bob_auth = format!("Authorization: Bearer {bob}");
    let reached_alice = |r: &corral_testkit::ingress::RawResponse| {
        r.status == 200 && r.body.contains(&format!("host={a}"))
    };
    // Each trick, sent by bob, aimed at alice's session.
    let tricks: Vec<(&str, String)> = vec![
        (
            "mixed case",
            format!(
                "GET / HTTP/1.1\r\nHost: {}.LocalHost:{port}\r\n{bob_auth}",
                a.to_uppercase()
            ),
        ),
        (
            "trailing dot",
            format!("GET / HTTP/1.1\r\nHost: {a}.localhost.:{port}\r\n{bob_auth}"),
        ),
        (
            "no port",
            format!("GET / HTTP/1.1\r\nHost: {a}.localhost\r\n{bob_auth}"),
        ),
        (
            "port userinfo",
            format!("GET / HTTP/1.1\r\nHost: {hb}@{ha}\r\n{bob_auth}"),
        ),
        (
            "double port",
            format!("GET / HTTP/1.1\r\nHost: {hb}:{port}\r\n{bob_auth}"),
        ),
        (
            "duplicate host",
            format!("GET / HTTP/1.1\r\nHost: {hb}\r\nHost: {ha}\r\n{bob_auth}"),
        ),
        (
            "duplicate host reversed",
            format!("GET / HTTP/1.1\r\nHost: {ha}\r\nHost: {hb}\r\n{bob_auth}"),
        ),
        (
            "absolute target",
            format!("GET http://{ha}/ HTTP/1.1\r\nHost: {hb}\r\n{bob_auth}"),
        ),
        (
            "absolute target, own host",
            format!("GET http://{hb}/ HTTP/1.1\r\nHost: {ha}\r\n{bob_auth}"),
        ),
        (
            "nested label",
            format!("GET / HTTP/1.1\r\nHost: {a}.{b}.localhost:{port}\r\n{bob_auth}"),
        ),
        (
            "other port host",
            format!("GET / HTTP/1.1\r\nHost: {a}-{ECHO_PORT}.localhost:{port}\r\n{bob_auth}"),
        ),
        (
            "path fallback",
            format!("GET /s/{a}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{bob_auth}"),
        ),
        (
            "path fallback from own host",
            format!("GET /s/{a}/ HTTP/1.1\r\nHost: {hb}\r\n{bob_auth}"),
        ),
        (
            "encoded path",
            format!("GET /s/{a}%2F HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{bob_auth}"),
        ),
        (
            "forwarded host",
            format!("GET / HTTP/1.1\r\nHost: {hb}\r\nX-Forwarded-Host: {ha}\r\n{bob_auth}"),
        ),
        (
            "identity header from an untrusted peer",
            format!("GET / HTTP/1.1\r\nHost: {ha}\r\nX-Forwarded-Email: alice@example.com"),
        ),
    ];
    for (name, head) in tricks {
        let answer = raw(&gw, &head);
        assert!(
            !reached_alice(&answer),
            "{name}: reached alice's session: {answer:?}"
        );
        assert!(
            [400, 401, 404].contains(&answer.status) || answer.body.contains(&format!("host={hb}")),
            "{name}: {answer:?}"
        );
    }
    // Bob's own session, reached however he spells it, is still his.
    let own = raw(
        &gw,
        &format!(
            "GET / HTTP/1.1\r\nHost: {}.LOCALHOST.:{port}\r\n{bob_auth}",
            b.to_uppercase()
        ),
    );
    assert_eq!(own.status, 200, "{own:?}");

    // Tickets: only for one's own sandbox; single use; valid only at their own host; the
    // cookie they become opens only that sandbox.
    error_message(
        post(&gw.api(&format!("/sandboxes/{a}/ticket")), &bob, json!({})),
        404,
    );
    let ticket = |user: &str, id: &str| {
        let (status, body) = post(&gw.api(&format!("/sandboxes/{id}/ticket")), user, json!({}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["expires_in"], 60);
        let url = body["url"].as_str().unwrap().to_owned();
        let expected = format!("http://{}/_corral/auth?ticket=", host(&gw, id));
        assert!(url.starts_with(&expected), "{url}");
        url.rsplit_once("/_corral").unwrap().1.to_owned()
    };
    let path = ticket(&alice, &a);
    let misused = raw(&gw, &format!("GET /_corral{path} HTTP/1.1\r\nHost: {hb}"));
    assert_eq!(
        misused.status, 401,
        "alice's ticket at bob's host: {misused:?}"
    );
    let path = ticket(&alice, &a);
    let spent = raw(&gw, &format!("GET /_corral{path} HTTP/1.1\r\nHost: {ha}"));
    assert_eq!(
        (spent.status, spent.header("location")),
        (303, Some("/")),
        "{spent:?}"
    );
    let cookie = spent.header("set-cookie").unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.to_ascii_lowercase().contains("domain="),
        "host-only: {cookie}"
    );
    let again = raw(&gw, &format!("GET /_corral{path} HTTP/1.1\r\nHost: {ha}"));
    assert_eq!(again.status, 401, "single use: {again:?}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = get_at(&gw, &ha, "/", None, &[&format!("Cookie: {pair}; x=1")]);
    assert_eq!(with_cookie.status, 200, "{with_cookie:?}");
    assert!(
        with_cookie.body.contains("cookie=x=1"),
        "the cookie is not passed on: {}",
        with_cookie.body
    );
    let elsewhere = get_at(&gw, &hb, "/", None, &[&format!("Cookie: {pair}")]);
    assert_eq!(
        elsewhere.status, 404,
        "alice's cookie at bob's host: {elsewhere:?}"
    );
    let on_gateway = get_at(
        &gw,
        &address(&gw),
        &format!("/s/{a}/"),
        None,
        &[&format!("Cookie: {pair}")],
    );
    assert_eq!(
        on_gateway.status, 401,
        "a session-host cookie is no credential on the gateway: {on_gateway:?}"
    );
}

#[test]
fn a_websocket_echoes_through_the_session_host() {
    use tungstenite::Message;
    use tungstenite::client::IntoClientRequest;

    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let _reaper = SandboxReaper(root.path().join("data"));
    let admin = gw.printed_token.clone().unwrap();
    let id = echo_sandbox(&gw, &admin)["id"].as_str().unwrap().to_owned();

    let mut request = format!("ws://{}/socket", host(&gw, &id))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {admin}").parse().unwrap());
    let stream = TcpStream::connect(address(&gw)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    let (mut socket, response) = tungstenite::client(request, stream).expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    socket.send(Message::text("hello through corral")).unwrap();
    assert_eq!(
        socket.read().unwrap(),
        Message::text("hello through corral")
    );
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    socket.send(Message::binary(big.clone())).unwrap();
    assert_eq!(socket.read().unwrap(), Message::binary(big));
    let metrics = get_at(&gw, &address(&gw), "/metrics", Some(&admin), &[]).body;
    assert!(
        metrics.contains("corral_websocket_connections_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("corral_websocket_connections_open 1"),
        "{metrics}"
    );
    socket.close(None).unwrap();
}

#[test]
fn the_cli_creates_a_sandbox_with_a_custom_command_reached_at_its_url() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let _reaper = SandboxReaper(root.path().join("data"));
    let admin = gw.printed_token.clone().unwrap();
    let config = tempfile::tempdir().unwrap();
    let corral = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .env("XDG_CONFIG_HOME", config.path())
            .env_remove("CORRAL_URL")
            .env_remove("CORRAL_TOKEN")
            .output()
            .unwrap()
    };
    assert!(
        corral(&["login", "--url", &gw.url, "--token", &admin])
            .status
            .success()
    );
    let conflicting = corral(&[
        "sandbox",
        "create",
        "x",
        "--agent",
        "shell",
        "--command",
        "true",
    ]);
    assert!(!conflicting.status.success());
    let made = corral(&[
        "sandbox",
        "create",
        "web",
        "--profile",
        "full",
        "--command",
        "exec python3 -m http.server --bind 127.0.0.1 8765",
        "--port",
        "8765",
        "--json",
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    assert_eq!(made["agent"], "custom");
    assert_eq!(made["ports"], json!([ECHO_PORT]));
    let id = made["id"].as_str().unwrap();
    assert_eq!(made["url"], format!("http://{}", host(&gw, id)));
    let listing = get_at(&gw, &host(&gw, id), "/", Some(&admin), &[]);
    assert_eq!(listing.status, 200, "{listing:?}");
    assert!(
        listing.body.contains("Directory listing"),
        "{}",
        listing.body
    );
}

/// A client that opens connections and never finishes a request head (one trickles half a
/// header, one sends nothing) is cut off after the gateway's header timeout instead of holding
/// its connections for ever; the gateway serves everyone else meanwhile.
#[test]
fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let half_a_head = || {
        let mut stream = TcpStream::connect(address(&gw)).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x").unwrap();
        stream
    };
    let silent = TcpStream::connect(address(&gw)).unwrap();
    let trickling = half_a_head();
    let (status, _) = get(&gw.api("/agents"), gw.printed_token.as_ref().unwrap());
    assert_eq!(status, 200, "others are served while those wait");
    for (what, mut stream) in [("silent", silent), ("half a head", trickling)] {
        // Bounded only so that a regression fails instead of hanging: the gateway's limit is
        // 30 s.
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut answer = Vec::new();
        let ended = stream.read_to_end(&mut answer);
        assert!(
            ended.is_ok()
                || ended
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{what}: the gateway closes the connection, not the read timeout: {ended:?}"
        );
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{what}: nothing, or a 408, before the close: {answer}"
        );
    }
}
