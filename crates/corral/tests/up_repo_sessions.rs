//! `corral up` repo sessions: the first start clones the repo from a local git server through
//! the sandbox's egress proxy, under its profile (an extra profile from the gateway's config
//! that allows the server), and checks out the branch, creating it if the remote lacks it.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use corral_testkit::gateway::{SandboxReaper, call, error_message, get, post};
use corral_testkit::{Gateway, GitServer};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// A gateway whose config adds profile `local`: restricted, plus the git server's port on
/// localhost. Returns the gateway, its admin token and the reaper for its sandboxes.
fn gateway_allowing(root: &Path, server: &GitServer) -> (Gateway, String, SandboxReaper) {
    gateway_allowing_port(root, server.address().port())
}

/// [`gateway_allowing`], for a git server at `port` on localhost.
fn gateway_allowing_port(root: &Path, port: u16) -> (Gateway, String, SandboxReaper) {
    let profile = root.join("local.toml");
    std::fs::write(
        &profile,
        format!(
            "extends = \"restricted\"\n[network]\nallow = [\"localhost:{port}\"]\n\
             allow_private = [\"localhost\"]\n"
        ),
    )
    .unwrap();
    let config = root.join("gateway.toml");
    std::fs::write(
        &config,
        format!("[profiles]\nlocal = \"{}\"\n", profile.display()),
    )
    .unwrap();
    let data = root.join("data");
    let gw = Gateway::start(
        Path::new(BIN),
        &data,
        &["--config", config.to_str().unwrap()],
        &[],
    );
    let admin = gw.printed_token.clone().unwrap();
    (gw, admin, SandboxReaper(data))
}

fn session(gw: &Gateway, token: &str, repo: &str, branch: &str, profile: &str) -> String {
    let (status, body) = post(
        &gw.api("/sandboxes"),
        token,
        json!({ "repo": repo, "branch": branch, "profile": profile }),
    );
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

fn act(gw: &Gateway, token: &str, id: &str, action: &str) -> (u16, Value) {
    let url = gw.api(&format!("/sandboxes/{id}/{action}"));
    call("POST", &url, Some(token), &[], None)
}

fn sh(gw: &Gateway, token: &str, id: &str, script: &str) -> Value {
    let url = gw.api(&format!("/sandboxes/{id}/exec"));
    let (status, body) = post(&url, token, json!({ "argv": ["sh", "-c", script] }));
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn the_first_start_clones_the_repo_and_checks_out_the_branch() {
    let server = GitServer::start();
    server.create_repo("acme/app.git");
    let root = tempfile::tempdir().unwrap();
    let (gw, admin, _reaper) = gateway_allowing(root.path(), &server);
    let repo = format!("http://localhost:{}/acme/app.git", server.address().port());

    // A branch the remote lacks is created from the default branch.
    let id = session(&gw, &admin, &repo, "ai/new", "local");
    let (status, started) = act(&gw, &admin, &id, "start");
    assert_eq!(
        (status, started["state"].as_str()),
        (200, Some("running")),
        "{started}"
    );
    let ran = sh(
        &gw,
        &admin,
        &id,
        "git branch --show-current; cat README.md; echo mine > notes",
    );
    assert_eq!(ran["stdout"], "ai/new\nhello\n", "{ran}");

    // Later starts keep the workspace as it is: no second clone.
    assert_eq!(act(&gw, &admin, &id, "stop").0, 200);
    assert_eq!(act(&gw, &admin, &id, "start").1["state"], "running");
    let ran = sh(&gw, &admin, &id, "cat notes; git branch --show-current");
    assert_eq!(ran["stdout"], "mine\nai/new\n", "{ran}");
    assert_eq!(act(&gw, &admin, &id, "stop").0, 200);

    // The remote's own branch is checked out as it is.
    let main = session(&gw, &admin, &repo, "main", "local");
    assert_eq!(act(&gw, &admin, &main, "start").1["state"], "running");
    let ran = sh(
        &gw,
        &admin,
        &main,
        "git branch --show-current; git log --format=%s",
    );
    assert_eq!(ran["stdout"], "main\ninitial\n", "{ran}");
    assert_eq!(act(&gw, &admin, &main, "stop").0, 200);
}

#[test]
fn a_clone_the_profile_does_not_allow_fails_the_start_with_gits_reason() {
    let server = GitServer::start();
    server.create_repo("acme/app.git");
    let root = tempfile::tempdir().unwrap();
    let (gw, admin, _reaper) = gateway_allowing(root.path(), &server);
    let repo = format!("http://localhost:{}/acme/app.git", server.address().port());

    // restricted does not allow the local server: the proxy refuses, git says so.
    let id = session(&gw, &admin, &repo, "ai/x", "restricted");
    let message = error_message(act(&gw, &admin, &id, "start"), 422);
    assert!(message.contains(&repo), "{message}");
    let (_, record) = get(&gw.api(&format!("/sandboxes/{id}")), &admin);
    assert_eq!(record["state"], "stopped", "{record}");
    assert!(
        server.authorizations_seen().is_empty(),
        "the server was never reached"
    );

    // Extra profiles are offered by name; files are not.
    let message = error_message(
        post(
            &gw.api("/sandboxes"),
            &admin,
            json!({ "profile": root.path().join("local.toml") }),
        ),
        400,
    );
    assert!(message.contains("local"), "{message}");
}

/// A TCP forwarder to the git server that holds every connection until [`Gate::open`]: a
/// clone through it stays in progress for as long as the test needs to watch it.
struct Gate {
    port: u16,
    open: mpsc::Sender<()>,
}

impl Gate {
    fn before(server: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, opened) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            listener.set_nonblocking(true).unwrap();
            // Holding: accept, keep, forward nothing.
            while let Err(mpsc::TryRecvError::Empty) = opened.try_recv() {
                if let Ok((client, _)) = listener.accept() {
                    held.push(client);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            listener.set_nonblocking(false).unwrap();
            let forward = move |client: TcpStream| {
                client.set_nonblocking(false).unwrap();
                let upstream = TcpStream::connect(server).unwrap();
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            };
            held.into_iter().for_each(forward);
            for client in listener.incoming().flatten() {
                forward(client);
            }
        });
        Gate { port, open }
    }

    fn open(&self) {
        self.open.send(()).unwrap();
    }
}

/// `corral sandbox start` shows the start's progress on stderr while the gateway works on it
/// (here: the clone, held at the git server until the CLI has shown it), and the API has it
/// in the sandbox's `progress`; once started, the progress is gone and the agent log holds
/// git's settled output (no carriage-return redraws).
#[test]
fn the_cli_and_the_api_show_a_first_clone_in_progress() {
    let server = GitServer::start();
    server.create_repo("acme/app.git");
    let gate = Gate::before(server.address());
    let root = tempfile::tempdir().unwrap();
    let (gw, admin, _reaper) = gateway_allowing_port(root.path(), gate.port);
    let repo = format!("http://localhost:{}/acme/app.git", gate.port);
    let id = session(&gw, &admin, &repo, "ai/x", "local");

    let mut start = Command::new(BIN)
        .args(["sandbox", "start", &id])
        .env("CORRAL_URL", &gw.url)
        .env("CORRAL_TOKEN", &admin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(start.stderr.take().unwrap());
    let mut shown = String::new();
    let cloning = format!("cloning {repo}");
    while !shown.contains(&cloning) {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the CLI ended without showing the clone: {shown}"
        );
        shown.push_str(&line);
    }
    let (_, record) = get(&gw.api(&format!("/sandboxes/{id}")), &admin);
    let progress = record["progress"].as_str().unwrap_or_default();
    assert!(progress.starts_with(&cloning), "{record}");
    assert_eq!(record["state"], "running", "{record}");

    gate.open();
    let finished = start.wait_with_output().unwrap();
    assert!(finished.status.success(), "{finished:?}");
    assert!(String::from_utf8_lossy(&finished.stdout).contains("running"));
    let (_, record) = get(&gw.api(&format!("/sandboxes/{id}")), &admin);
    assert_eq!(record["progress"], Value::Null, "{record}");
    let log = std::fs::read_to_string(root.path().join(format!("data/sandboxes/{id}/agent.log")))
        .unwrap();
    assert!(log.contains("Cloning into '/workspace'..."), "{log}");
    assert!(!log.contains('\r'), "{log:?}");
}
