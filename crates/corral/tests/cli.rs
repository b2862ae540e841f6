//! The CLI against a real gateway: `corral login` saves the credentials (0600), then
//! `corral sandbox`, `corral user` and `corral token` work as a person types them, with
//! tables, `--json`, and refusals that say what the gateway said.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use corral_testkit::Gateway;

const BIN: &str = env!("CARGO_BIN_EXE_corral");

/// `corral ARGS` with its own config directory, and no gateway settings from outside.
fn corral(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("CORRAL_URL")
        .env_remove("CORRAL_TOKEN")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn login_then_sandboxes_users_and_tokens_from_the_command_line() {
    let root = tempfile::tempdir().unwrap();
    let gw = Gateway::fresh(Path::new(BIN), root.path());
    let admin = gw.printed_token.clone().unwrap();
    let config = tempfile::tempdir().unwrap();

    let refused = corral(config.path(), &["sandbox", "list"]);
    assert_eq!(refused.status.code(), Some(125));
    assert!(
        stderr(&refused).contains("corral login"),
        "{}",
        stderr(&refused)
    );

    let bad = corral(
        config.path(),
        &["login", "--url", &gw.url, "--token", "corral_wrong"],
    );
    assert_eq!(bad.status.code(), Some(125));
    assert!(stderr(&bad).contains("(401)"), "{}", stderr(&bad));
    assert!(!stderr(&bad).contains("corral_wrong"), "{}", stderr(&bad));

    let login = corral(
        config.path(),
        &["login", "--url", &gw.url, "--token", &admin],
    );
    assert!(login.status.success(), "{}", stderr(&login));
    let saved = config.path().join("corral/credentials.toml");
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let empty = corral(config.path(), &["sandbox", "list"]);
    assert!(
        stdout(&empty).contains("no sandboxes yet"),
        "{}",
        stdout(&empty)
    );
    let created = corral(
        config.path(),
        &["sandbox", "create", "work", "--profile", "moderate"],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let table = stdout(&corral(config.path(), &["sandbox", "list"]));
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("STATE"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.contains(" work "))
        .expect("the row");
    assert!(
        row.contains("stopped") && row.contains("moderate"),
        "{table}"
    );

    let json = corral(config.path(), &["sandbox", "get", "work", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["name"], "work");
    let id = value["id"].as_str().unwrap().to_string();
    let by_id = corral(config.path(), &["sandbox", "get", &id, "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&by_id.stdout).unwrap()["id"],
        id
    );

    let bad_profile = corral(
        config.path(),
        &["sandbox", "create", "x", "--profile", "paranoid"],
    );
    assert_eq!(bad_profile.status.code(), Some(125));
    assert!(
        stderr(&bad_profile).contains("valid profiles are"),
        "{}",
        stderr(&bad_profile)
    );

    // A new user gets a token once; with it, they see none of the admin's sandboxes.
    let added = corral(config.path(), &["user", "add", "bob@example.com"]);
    assert!(added.status.success(), "{}", stderr(&added));
    let bob_token = stdout(&added).lines().last().unwrap().trim().to_string();
    assert!(bob_token.starts_with("corral_"), "{}", stdout(&added));
    let bob_config = tempfile::tempdir().unwrap();
    assert!(
        corral(
            bob_config.path(),
            &["login", "--url", &gw.url, "--token", &bob_token]
        )
        .status
        .success()
    );
    let bobs = corral(bob_config.path(), &["sandbox", "get", "work"]);
    assert_eq!(bobs.status.code(), Some(125));
    assert!(
        stderr(&bobs).contains("no sandbox \"work\""),
        "{}",
        stderr(&bobs)
    );
    let users = stdout(&corral(config.path(), &["user", "list"]));
    assert!(
        users.contains("bob@example.com") && users.contains("admin"),
        "{users}"
    );
    let not_admin = corral(bob_config.path(), &["user", "list"]);
    assert!(
        stderr(&not_admin).contains("(403)"),
        "{}",
        stderr(&not_admin)
    );

    // Tokens: create, list (never the value), revoke; a revoked token stops working.
    let made = corral(
        bob_config.path(),
        &["token", "create", "--name", "laptop", "--json"],
    );
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let laptop = made["token"].as_str().unwrap().to_string();
    let listed = stdout(&corral(bob_config.path(), &["token", "list"]));
    assert!(
        listed.contains("laptop") && !listed.contains(&laptop),
        "{listed}"
    );
    let revoke = corral(
        bob_config.path(),
        &["token", "revoke", &made["id"].to_string()],
    );
    assert!(revoke.status.success(), "{}", stderr(&revoke));
    let laptop_config = tempfile::tempdir().unwrap();
    let gone = corral(
        laptop_config.path(),
        &["login", "--url", &gw.url, "--token", &laptop],
    );
    assert_eq!(gone.status.code(), Some(125));

    let deleted = corral(config.path(), &["sandbox", "delete", "work"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert!(stdout(&corral(config.path(), &["sandbox", "list"])).contains("no sandboxes yet"));
}

#[test]
fn an_unreachable_gateway_says_where_corral_tried() {
    let config = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["sandbox", "list"])
        .env("XDG_CONFIG_HOME", config.path())
        .env("CORRAL_URL", "http://127.0.0.1:9")
        .env("CORRAL_TOKEN", "corral_x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let message = stderr(&out);
    assert!(
        message.contains("cannot reach the gateway at http://127.0.0.1:9"),
        "{message}"
    );
    assert!(!message.contains("corral_x"), "{message}");
}

#[test]
fn a_sandbox_started_from_the_command_line_runs_commands_and_stops() {
    let root = tempfile::tempdir().unwrap();
    let _reaper = corral_testkit::gateway::SandboxReaper(root.path().join("data"));
    let gw = Gateway::fresh(Path::new(BIN), root.path());
    let admin = gw.printed_token.clone().unwrap();
    let config = tempfile::tempdir().unwrap();
    assert!(
        corral(
            config.path(),
            &["login", "--url", &gw.url, "--token", &admin]
        )
        .status
        .success()
    );
    assert!(
        corral(config.path(), &["sandbox", "create", "dev"])
            .status
            .success()
    );

    let started = corral(config.path(), &["sandbox", "start", "dev"]);
    assert!(started.status.success(), "{}", stderr(&started));
    assert!(stdout(&started).contains("running"), "{}", stdout(&started));

    // exec passes the command's output through and exits with its status.
    let exec = corral(
        config.path(),
        &[
            "sandbox",
            "exec",
            "dev",
            "--",
            "sh",
            "-c",
            "echo made > /workspace/f; id -u; echo oops >&2; exit 4",
        ],
    );
    assert_eq!(exec.status.code(), Some(4), "{}", stderr(&exec));
    assert_eq!(stdout(&exec), "1000\n");
    assert_eq!(stderr(&exec), "oops\n");
    let cat = corral(
        config.path(),
        &["sandbox", "exec", "dev", "--", "cat", "/workspace/f"],
    );
    assert_eq!(stdout(&cat), "made\n");

    let logs = corral(config.path(), &["sandbox", "logs", "dev"]);
    assert!(logs.status.success(), "{}", stderr(&logs));

    let stopped = corral(config.path(), &["sandbox", "stop", "dev"]);
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    assert!(
        !stdout(&stopped).contains("running"),
        "{}",
        stdout(&stopped)
    );
    let refused = corral(config.path(), &["sandbox", "exec", "dev", "--", "true"]);
    assert_eq!(refused.status.code(), Some(125));
    assert!(stderr(&refused).contains("(409)"), "{}", stderr(&refused));
}

/// README's first command is `cargo run --release -- up` at the workspace's root, which works
/// only while `corral` is the one binary there (a second makes cargo ask which to run).
#[test]
fn cargo_run_at_the_root_has_one_binary_to_run() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let binaries: Vec<String> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(binaries, ["corral"]);
}
