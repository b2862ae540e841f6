//! The two halves of a profile agree: what `corral policy check` says about reading, writing
//! and executing a path is what the kernel (mounts, Landlock) lets a sandbox with that profile
//! actually do.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use corral_testkit::{Caller, Corral, OutputExt, TestDir, is_root};

/// Tries one action on one path inside the sandbox and prints `allow` or `deny <errno>`.
const PROBE: &str = r#"
import os, subprocess, sys
action, path = sys.argv[1], sys.argv[2]
try:
    if action == "read":
        open(path, "rb").read(1)
    elif action == "write":
        open(path, "a").write("x")
    else:
        subprocess.run([path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False)
    print("allow")
except OSError as e:
    print("deny", e.errno)
"#;

/// A home directory under /home (where Cedar's `~/` patterns look) with a toolchain,
/// a credential and a plain file; removed on drop.
struct FakeHome(PathBuf);

impl FakeHome {
    fn new() -> Self {
        let home = PathBuf::from(format!("/home/corral-agree-{}", std::process::id()));
        let script = "#!/bin/sh\nexit 0\n";
        for (relative, content, mode) in [
            ("notes.txt", "notes\n", 0o644),
            (".cargo/bin/tool", script, 0o755),
            (".ssh/id_ed25519", "secret\n", 0o600),
        ] {
            let path = home.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Self(home)
    }

    fn path(&self, relative: &str) -> String {
        self.0.join(relative).to_string_lossy().into_owned()
    }
}

impl Drop for FakeHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cedar_allows(profile: &str, action: &str, path: &str) -> bool {
    let out = Corral::new(env!("CARGO_BIN_EXE_corral"), Caller::Root)
        .args([
            "policy",
            "check",
            "--profile",
            profile,
            "--action",
            action,
            "--path",
            path,
        ])
        .output();
    assert!(matches!(out.code(), 0 | 1), "{}", out.stderr_text());
    out.code() == 0
}

fn sandbox_allows(profile: &str, action: &str, path: &str, ws: &Path, home: &FakeHome) -> bool {
    let out = Corral::new(env!("CARGO_BIN_EXE_corral"), Caller::Root)
        .args([
            "run",
            "--profile",
            profile,
            "--",
            "python3",
            "-c",
            PROBE,
            action,
            path,
        ])
        .env("HOME", home.0.to_str().unwrap())
        .current_dir(ws)
        .output();
    let verdict = out.stdout_text();
    assert!(
        verdict.starts_with("allow") || verdict.starts_with("deny"),
        "{profile} {action} {path}: {verdict}{}",
        out.stderr_text()
    );
    verdict.starts_with("allow")
}

#[test]
fn cedar_and_the_kernel_agree_on_files_for_every_builtin_profile() {
    if !is_root() {
        eprintln!("skipped: needs root to create a home under /home");
        return;
    }
    let home = FakeHome::new();
    let ws = TestDir::new(Caller::Root);
    std::fs::create_dir_all(ws.path().join(".git/hooks")).unwrap();
    ws.write(Caller::Root, "run.sh", "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(
        ws.path().join("run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("read", "/etc/hostname".into()),
        ("read", "/etc/shadow".into()),
        ("read", "/workspace/run.sh".into()),
        ("read", home.path("notes.txt")),
        ("read", home.path(".cargo/bin/tool")),
        ("read", home.path(".ssh/id_ed25519")),
        ("exec", "/usr/bin/git".into()),
        ("exec", "/usr/bin/perl".into()),
        ("exec", "/workspace/run.sh".into()),
        ("exec", home.path(".cargo/bin/tool")),
        ("write", "/workspace/new.txt".into()),
        ("write", "/workspace/.git/hooks/pre-commit".into()),
        ("write", "/tmp/scratch".into()),
        ("write", "/etc/corral-agree".into()),
        ("write", "/usr/local/corral-agree".into()),
        ("write", "/home/corral/.profile".into()),
    ];
    let mut disagreements = Vec::new();
    for profile in ["restricted", "moderate", "full"] {
        for (action, path) in &cases {
            let cedar = cedar_allows(profile, action, path);
            let kernel = sandbox_allows(profile, action, path, ws.path(), &home);
            if cedar != kernel {
                disagreements.push(format!(
                    "{profile} {action} {path}: policy says {}, sandbox {}",
                    if cedar { "allow" } else { "deny" },
                    if kernel { "allowed it" } else { "refused it" }
                ));
            }
        }
    }
    assert!(disagreements.is_empty(), "\n{}", disagreements.join("\n"));
}
