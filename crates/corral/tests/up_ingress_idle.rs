//! Idle stop and resume end to end: a sandbox nobody uses for `idle_timeout` is stopped with
//! its workspace kept, the next request starts it again and is answered; a sandbox in use is
//! not stopped; "starting", "failed to start" and "not allowed" are different answers.

use std::path::Path;
use std::time::{Duration, Instant};

use corral_testkit::Gateway;
use corral_testkit::gateway::{SandboxReaper, get, post};
use corral_testkit::ingress::{ECHO_PORT, WS_ECHO, address, echo_sandbox, get_at};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
/// Hang guard for waiting on the reaper.
const LIMIT: Duration = Duration::from_secs(60);

fn start(root: &Path) -> Gateway {
    Gateway::start(
        Path::new(BIN),
        &root.join("data"),
        &["--idle-timeout", "2s"],
        &[],
    )
}

fn state(gw: &Gateway, token: &str, id: &str) -> String {
    let (_, body) = get(&gw.api(&format!("/sandboxes/{id}")), token);
    body["state"].as_str().unwrap().to_owned()
}

fn host(gw: &Gateway, id: &str) -> String {
    let port = address(gw).rsplit(':').next().unwrap().to_owned();
    format!("{id}.localhost:{port}")
}

#[test]
fn an_idle_sandbox_stops_keeps_its_workspace_and_resumes_on_the_next_request() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let _reaper = SandboxReaper(root.path().join("data"));
    let admin = gw.printed_token.clone().unwrap();
    let id = echo_sandbox(&gw, &admin)["id"].as_str().unwrap().to_owned();
    assert_eq!(
        get_at(&gw, &host(&gw, &id), "/", Some(&admin), &[]).status,
        200
    );
    let (status, exec) = post(
        &gw.api(&format!("/sandboxes/{id}/exec")),
        &admin,
        json!({"argv": ["sh", "-c", "echo kept > /workspace/note"]}),
    );
    assert_eq!((status, &exec["exit_code"]), (200, &json!(0)), "{exec}");

    // While requests keep coming, it stays up well past the idle timeout.
    let busy_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < busy_until {
        assert_eq!(
            get_at(&gw, &host(&gw, &id), "/", Some(&admin), &[]).status,
            200
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(state(&gw, &admin, &id), "running", "stopped while in use");
    }

    // Left alone, it is stopped.
    let deadline = Instant::now() + LIMIT;
    while state(&gw, &admin, &id) != "stopped" {
        assert!(
            Instant::now() < deadline,
            "not stopped within {LIMIT:?} of idling"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The next request starts it again and is answered; the workspace is still there.
    let answer = get_at(&gw, &host(&gw, &id), "/again", Some(&admin), &[]);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("path=/again"), "{}", answer.body);
    let (_, exec) = post(
        &gw.api(&format!("/sandboxes/{id}/exec")),
        &admin,
        json!({"argv": ["cat", "/workspace/note"]}),
    );
    assert_eq!(exec["stdout"], "kept\n", "{exec}");
    let metrics = get_at(&gw, &address(&gw), "/metrics", Some(&admin), &[]).body;
    for line in [
        "corral_sandbox_stops_total{cause=\"idle\"} 1",
        "corral_sandbox_starts_total{cause=\"resume\"} 2",
        "corral_resume_seconds_count 2",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[test]
fn starting_and_failed_to_start_are_told_apart() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let _reaper = SandboxReaper(root.path().join("data"));
    let admin = gw.printed_token.clone().unwrap();
    let create = |command: serde_json::Value| {
        let (status, body) = post(
            &gw.api("/sandboxes"),
            &admin,
            json!({"profile": "full", "command": command, "ports": [ECHO_PORT]}),
        );
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    };

    // A command that exits at once: "failed to start", pointing at the logs.
    let broken = create(json!(["sh", "-c", "echo no server here >&2; exit 3"]));
    let answer = get_at(&gw, &host(&gw, &broken), "/", Some(&admin), &[]);
    assert_eq!(answer.status, 502, "{answer:?}");
    let error: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(error["error"]["code"], "start_failed", "{error}");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("logs"),
        "{error}"
    );

    // A server that takes longer than a browser is held: the browser gets the page that
    // reloads itself; a client that waits gets the answer once the server is up.
    let slow = create(json!([
        "sh",
        "-c",
        format!("sleep 8; exec python3 -c \"$0\" {ECHO_PORT}"),
        WS_ECHO,
    ]));
    let page = get_at(
        &gw,
        &host(&gw, &slow),
        "/",
        Some(&admin),
        &["Accept: text/html"],
    );
    assert_eq!(page.status, 503, "{page:?}");
    assert!(
        page.body.contains("http-equiv=\"refresh\"") && page.body.contains("Starting"),
        "{}",
        page.body
    );
    assert!(page.header("retry-after").is_some(), "{page:?}");
    let answer = get_at(&gw, &host(&gw, &slow), "/", Some(&admin), &[]);
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[test]
fn an_attached_terminal_keeps_its_sandbox_running_past_the_idle_timeout() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let _reaper = SandboxReaper(root.path().join("data"));
    let admin = gw.printed_token.clone().unwrap();
    let id = echo_sandbox(&gw, &admin)["id"].as_str().unwrap().to_owned();
    let (status, started) = post(
        &gw.api(&format!("/sandboxes/{id}/start")),
        &admin,
        json!({}),
    );
    assert_eq!(status, 200, "{started}");
    let url = format!(
        "{}?command=sleep+600",
        gw.api(&format!("/sandboxes/{id}/attach"))
            .replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {admin}").parse().unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (socket, _) = runtime
        .block_on(tokio_tungstenite::connect_async(request))
        .expect("attach");

    // A silent terminal, no requests: the terminal alone keeps it up.
    let quiet_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < quiet_until {
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            state(&gw, &admin, &id),
            "running",
            "stopped with a terminal attached"
        );
    }

    // Detached, it idles out.
    drop(socket);
    drop(runtime);
    let deadline = Instant::now() + LIMIT;
    while state(&gw, &admin, &id) != "stopped" {
        assert!(
            Instant::now() < deadline,
            "not stopped within {LIMIT:?} of detaching"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
