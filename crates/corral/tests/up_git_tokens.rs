//! `corral up` with `[git_tokens]`: a repo session clones from, and pushes a branch to, a git
//! server that requires a token, while the token stays out of the sandbox, the command lines,
//! the store, the API and `--print-config`.

use std::path::Path;

use base64::Engine as _;
use corral_testkit::gateway::{SandboxReaper, get, post, sandbox_processes, start_sandbox};
use corral_testkit::{Gateway, GitServer};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_corral");
const TOKEN: &str = "s3cret-gateway-git-token";

#[test]
fn a_repo_session_clones_and_pushes_with_a_token_it_never_sees() {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"))
    );
    let server = GitServer::start_requiring(&expected);
    server.create_repo("acme/app.git");
    let root = tempfile::tempdir().unwrap();
    let profile = root.path().join("local.toml");
    std::fs::write(
        &profile,
        format!(
            "extends = \"restricted\"\n[network]\nallow = [\"localhost:{}\"]\n\
             allow_private = [\"localhost\"]\n",
            server.address().port()
        ),
    )
    .unwrap();
    let config = root.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[profiles]\nlocal = \"{}\"\n[git_tokens]\nlocalhost = \"env:TEST_GIT_TOKEN\"\n",
            profile.display()
        ),
    )
    .unwrap();
    let data = root.path().join("data");
    let config_arg = ["--config", config.to_str().unwrap()];
    let envs = [("TEST_GIT_TOKEN", TOKEN)];

    // --print-config shows where the token comes from, never the token.
    let printed = std::process::Command::new(BIN)
        .args(["up", "--print-config", "--data-dir"])
        .arg(&data)
        .args(config_arg)
        .env_clear()
        .envs(envs)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.contains("localhost = \"env:TEST_GIT_TOKEN\"") && !printed.contains(TOKEN),
        "{printed}"
    );

    let gw = Gateway::start(Path::new(BIN), &data, &config_arg, &envs);
    let _reaper = SandboxReaper(data.clone());
    let admin = gw.printed_token.clone().unwrap();
    let repo = format!("http://localhost:{}/acme/app.git", server.address().port());
    let (status, created) = post(
        &gw.api("/sandboxes"),
        &admin,
        json!({ "repo": repo, "branch": "ai/token", "profile": "local" }),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    start_sandbox(&gw, &admin, &id);
    assert!(
        server.authorizations_seen().contains(&expected),
        "the clone authenticated"
    );

    let exec = gw.api(&format!("/sandboxes/{id}/exec"));
    let script = format!(
        "echo change > change.txt && git add change.txt && \
         git -c user.name=agent -c user.email=agent@example.com commit -qm change && \
         git push -q origin HEAD:ai/token && git rev-parse HEAD; \
         env; cat /proc/self/environ | tr '\\0' '\\n'; \
         grep -rl {TOKEN} /workspace /tmp \"$HOME\" /run/corral /proc/1/environ 2>/dev/null \
         | sed 's/^/found: /'; echo done"
    );
    // The git server is on loopback: reached through the proxy, not around it.
    let no_proxy = json!({ "NO_PROXY": "", "no_proxy": "" });
    let (status, ran) = post(
        &exec,
        &admin,
        json!({ "argv": ["sh", "-c", script], "env": no_proxy }),
    );
    assert_eq!(status, 200, "{ran}");
    let stdout = ran["stdout"].as_str().unwrap();
    assert!(stdout.ends_with("done\n"), "{ran}");
    assert!(
        !stdout.contains(TOKEN) && !stdout.contains("found:"),
        "{ran}"
    );
    let pushed = stdout.lines().next().unwrap();
    assert_eq!(
        server.rev("acme/app.git", "ai/token").as_deref(),
        Some(pushed),
        "{ran}"
    );

    // Nor is it on a command line, in an API response or in the store.
    for pid in sandbox_processes(&data) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            cmdline.contains("localhost=env:TEST_GIT_TOKEN") && !cmdline.contains(TOKEN),
            "{cmdline}"
        );
    }
    let (_, listed) = get(&gw.api("/sandboxes"), &admin);
    assert!(!listed.to_string().contains(TOKEN));
    gw.terminate();
    let sandbox_dir = data.join("sandboxes").join(&id);
    let files = std::fs::read_dir(&data)
        .unwrap()
        .chain(std::fs::read_dir(&sandbox_dir).unwrap());
    for entry in files {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                "{} holds the token",
                path.display()
            );
        }
    }
}
