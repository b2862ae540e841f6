//! `/metrics` of a real gateway: a sandbox's allowed and denied connections (curl through its
//! egress proxy, forwarded and tunnelled) show up as policy decisions by action and outcome
//! and as its egress bytes; API starts, stops and deletes, a command that ends by itself and
//! a gateway restart as starts and stops by cause; and the page is for admins only.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_testkit::Gateway;
use corral_testkit::gateway::{
    SandboxReaper, add_user, call, delete, post, sandbox_processes, start_sandbox,
};
use corral_testkit::ingress::{address, get_at};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
/// Size of the body the local server sends.
const BODY: usize = 300_000;
/// Hang guard for counts that arrive after the connection ends.
const LIMIT: Duration = Duration::from_secs(30);

/// A server on loopback answering every request with [`BODY`] bytes; its port.
fn serve_body() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes());
                let _ = stream.write_all(&vec![b'x'; BODY]);
            });
        }
    });
    port
}

/// The value of the series `name` (name and labels exactly as exposed), 0 when absent.
fn value(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn scrape(gw: &Gateway, token: &str) -> String {
    let page = get_at(gw, &address(gw), "/metrics", Some(token), &[]);
    assert_eq!(page.status, 200, "{page:?}");
    page.body
}

/// Scrapes until `series` has grown by at least `by` over `before` (they are counted when
/// connections end, after curl is done) and returns that scrape.
fn scrape_until(gw: &Gateway, token: &str, before: &str, series: &str, by: u64) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let metrics = scrape(gw, token);
        if value(&metrics, series) >= value(before, series) + by {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{series} not +{by} in\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `root/gateway.toml`, naming profile `local`: moderate, plus the server at `port`.
fn config_allowing(root: &Path, port: u16) -> PathBuf {
    let profile = root.join("local.toml");
    std::fs::write(
        &profile,
        format!(
            "extends = \"moderate\"\n[network]\nallow = [\"127.0.0.1:{port}\"]\n\
             allow_private = [\"127.0.0.1\"]\n"
        ),
    )
    .unwrap();
    let config = root.join("gateway.toml");
    std::fs::write(
        &config,
        format!("[profiles]\nlocal = \"{}\"\n", profile.display()),
    )
    .unwrap();
    config
}

fn start_gateway(data: &Path, config: &Path) -> Gateway {
    Gateway::start(
        Path::new(BIN),
        data,
        &["--config", config.to_str().unwrap()],
        &[],
    )
}

/// A new sandbox with profile `local`, started; its id.
fn started_sandbox(gw: &Gateway, admin: &str, name: &str) -> String {
    let (status, created) = post(
        &gw.api("/sandboxes"),
        admin,
        json!({ "name": name, "profile": "local" }),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    start_sandbox(gw, admin, &id);
    id
}

/// Runs `script` in the sandbox with curl's proxy exceptions cleared (the server is on
/// loopback: reached through the proxy); its stdout.
fn run(gw: &Gateway, admin: &str, id: &str, script: &str) -> String {
    let no_proxy = json!({ "NO_PROXY": "", "no_proxy": "" });
    let (status, ran) = post(
        &gw.api(&format!("/sandboxes/{id}/exec")),
        admin,
        json!({ "argv": ["sh", "-c", script], "env": no_proxy }),
    );
    assert_eq!(status, 200, "{ran}");
    ran["stdout"].as_str().unwrap().to_owned()
}

/// A curl through the sandbox's egress proxy printing the status and the bytes downloaded.
const CURL: &str = "curl -sS --noproxy '' -x http://127.0.0.1:3128 -o /dev/null -w '%{http_code} %{size_download}\\n'";

fn decisions(action: &str, outcome: &str) -> String {
    format!("corral_policy_decisions_total{{action=\"{action}\",outcome=\"{outcome}\"}}")
}

#[test]
fn decisions_egress_bytes_starts_and_stops_are_counted() {
    let port = serve_body();
    let root = tempfile::tempdir().unwrap();
    let config = config_allowing(root.path(), port);
    let data = root.path().join("data");
    let gw = start_gateway(&data, &config);
    let _reaper = SandboxReaper(data.clone());
    let admin = gw.printed_token.clone().unwrap();

    // For admins only: it names sandboxes.
    let anonymous = get_at(&gw, &address(&gw), "/metrics", None, &[]);
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert!(anonymous.body.contains("admin"), "{}", anonymous.body);
    let alice = add_user(&gw, &admin, "metrics-alice@example.com");
    let user = get_at(&gw, &address(&gw), "/metrics", Some(&alice), &[]);
    assert_eq!(user.status, 403, "{user:?}");

    let before = scrape(&gw, &admin);
    let id = started_sandbox(&gw, &admin, "metrics-egress");
    // A second start finds it running: not a start.
    start_sandbox(&gw, &admin, &id);

    // Forwarded (absolute URI), tunnelled (CONNECT, spliced), and a denied CONNECT.
    let url = format!("http://127.0.0.1:{port}/big");
    let script = format!("{CURL} {url}; {CURL} -p {url}; {CURL} -p http://denied.example/ 2>&1");
    let stdout = run(&gw, &admin, &id, &script);
    let downloaded = format!("200 {BODY}\n");
    assert!(
        stdout.starts_with(&format!("{downloaded}{downloaded}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("403"),
        "the denied host was refused: {stdout}"
    );

    let down = format!("corral_egress_bytes_total{{sandbox=\"{id}\",direction=\"down\"}}");
    let up = format!("corral_egress_bytes_total{{sandbox=\"{id}\",direction=\"up\"}}");
    let after = scrape_until(&gw, &admin, &before, &down, 2 * BODY as u64);
    assert!(value(&after, &up) > 0, "{after}");
    let grew = |series: &str| value(&after, series) - value(&before, series);
    let decisions = [
        ("connect", "allow", 2),
        ("connect", "deny", 1),
        ("http_request", "allow", 1),
    ];
    for (action, outcome, count) in decisions {
        let series = self::decisions(action, outcome);
        assert_eq!(grew(&series), count, "{series} in\n{after}");
    }
    assert_eq!(
        grew("corral_sandbox_starts_total{cause=\"api\"}"),
        1,
        "{after}"
    );

    // Stop, start again, then delete while it runs.
    let stop = gw.api(&format!("/sandboxes/{id}/stop"));
    let (status, stopped) = call("POST", &stop, Some(&admin), &[], None);
    assert_eq!((status, &stopped["state"]), (200, &json!("stopped")));
    let (status, _) = call("POST", &stop, Some(&admin), &[], None);
    assert_eq!(status, 200, "a second stop finds nothing to stop");
    let start = gw.api(&format!("/sandboxes/{id}/start"));
    let (status, _) = call("POST", &start, Some(&admin), &[], None);
    assert_eq!(status, 200);
    let (status, deleted) = delete(&gw.api(&format!("/sandboxes/{id}?purge=true")), &admin);
    assert!(status == 200 || status == 204, "{status} {deleted}");
    let last = scrape(&gw, &admin);
    let grew = |series: &str| value(&last, series) - value(&before, series);
    assert_eq!(
        grew("corral_sandbox_starts_total{cause=\"api\"}"),
        2,
        "{last}"
    );
    assert_eq!(
        grew("corral_sandbox_stops_total{cause=\"api\"}"),
        1,
        "{last}"
    );
    assert_eq!(
        grew("corral_sandbox_stops_total{cause=\"delete\"}"),
        1,
        "{last}"
    );
    assert!(!last.contains(&format!("sandbox=\"{id}\"")), "{last}");

    // A sandbox whose command ends by itself.
    let (status, created) = post(
        &gw.api("/sandboxes"),
        &admin,
        json!({ "name": "metrics-exits", "command": ["sh", "-c", "exit 3"] }),
    );
    assert_eq!(status, 201, "{created}");
    let exits = created["id"].as_str().unwrap();
    let (status, _) = call(
        "POST",
        &gw.api(&format!("/sandboxes/{exits}/start")),
        Some(&admin),
        &[],
        None,
    );
    assert_eq!(status, 200);
    let exited = "corral_sandbox_stops_total{cause=\"exited\"}";
    let ended = scrape_until(&gw, &admin, &last, exited, 1);
    assert_eq!(value(&ended, exited) - value(&last, exited), 1, "{ended}");
    let starts = "corral_sandbox_starts_total{cause=\"api\"}";
    assert_eq!(value(&ended, starts) - value(&last, starts), 1, "{ended}");
}

#[test]
fn a_restarted_gateway_counts_no_old_decision_again_and_each_end_once() {
    let port = serve_body();
    let root = tempfile::tempdir().unwrap();
    let config = config_allowing(root.path(), port);
    let data = root.path().join("data");
    let gw = start_gateway(&data, &config);
    let _reaper = SandboxReaper(data.clone());
    let admin = gw.printed_token.clone().unwrap();
    let id = started_sandbox(&gw, &admin, "metrics-restart");
    let url = format!("http://127.0.0.1:{port}/");
    let down = format!("corral_egress_bytes_total{{sandbox=\"{id}\",direction=\"down\"}}");
    let stdout = run(&gw, &admin, &id, &format!("{CURL} -p {url}"));
    assert_eq!(stdout, format!("200 {BODY}\n"));
    scrape_until(&gw, &admin, "", &down, BODY as u64);

    // The gateway dies; so does the sandbox while no gateway runs.
    gw.stop_with("KILL");
    for pid in sandbox_processes(&data) {
        let killed = std::process::Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pid}")])
            .status()
            .unwrap();
        assert!(killed.success());
    }
    let deadline = Instant::now() + LIMIT;
    while !sandbox_processes(&data).is_empty() {
        assert!(Instant::now() < deadline, "the sandbox outlived SIGKILL");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The new gateway counts the end it found once, and what was recorded before it started
    // not at all; then what happens from now on.
    let gw = start_gateway(&data, &config);
    let restarted = scrape(&gw, &admin);
    assert_eq!(
        value(
            &restarted,
            "corral_sandbox_stops_total{cause=\"reconcile\"}"
        ),
        1,
        "{restarted}"
    );
    assert_eq!(
        value(&restarted, &decisions("connect", "allow")),
        0,
        "{restarted}"
    );
    assert_eq!(value(&restarted, &down), 0, "{restarted}");
    let start = gw.api(&format!("/sandboxes/{id}/start"));
    let (status, _) = call("POST", &start, Some(&admin), &[], None);
    assert_eq!(status, 200);
    let stdout = run(&gw, &admin, &id, &format!("{CURL} -p {url}"));
    assert_eq!(stdout, format!("200 {BODY}\n"));
    let after = scrape_until(&gw, &admin, &restarted, &down, BODY as u64);
    assert_eq!(value(&after, &decisions("connect", "allow")), 1, "{after}");
    assert_eq!(
        value(&after, "corral_sandbox_starts_total{cause=\"api\"}"),
        1,
        "{after}"
    );
    let again = scrape(&gw, &admin);
    assert_eq!(value(&again, &down), value(&after, &down), "counted once");
}
