//! `corral up` starting and stopping: the first-start admin token, `CORRAL_ADMIN_TOKEN`,
//! configuration precedence and `--print-config`, JSON logs, and clean exits on SIGTERM and
//! SIGINT.

use std::path::Path;
use std::process::Command;

use corral_testkit::Gateway;
use corral_testkit::gateway::get;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

fn start(root: &Path) -> Gateway {
    Gateway::fresh(Path::new(BIN), root)
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
fn sigint_also_exits_0() {
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    assert_eq!(gw.stop_with("INT").code(), Some(0));
}

/// A request that never ends (here an upload that stalls; in use, an agent's event stream a
/// browser keeps open) does not keep SIGTERM from stopping the gateway cleanly.
#[test]
fn sigterm_exits_0_while_a_request_is_stuck_in_flight() {
    use std::io::Write;
    let root = tempfile::tempdir().unwrap();
    let gw = start(root.path());
    let address = gw.api("").replace("http://", "");
    let address = address.split('/').next().unwrap().to_owned();
    let mut stalled = std::net::TcpStream::connect(&address).unwrap();
    stalled
        .write_all(
            b"POST /api/v1/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"email\":",
        )
        .unwrap();
    // The request has reached the gateway (a later one on another connection is answered).
    assert_eq!(get(&gw.api("/me"), "nobody").0, 401);
    let status = gw.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM must exit cleanly: {status:?}"
    );
}
