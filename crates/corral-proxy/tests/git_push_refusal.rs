//! The real git client against a remote that answers with the guard's refusal.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use corral_proxy::git_receive_pack::{parse_commands, refusal};

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args([
            "-c",
            "protocol.ext.allow=always",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Pushes with `refspec` to the fake remote; the guard denies refs named in `deny`.
fn push_through_guard(refspecs: &[&str], deny: &[&str]) -> (std::process::Output, Vec<String>) {
    let repo = tempfile::tempdir().unwrap();
    let exchange = tempfile::tempdir().unwrap();
    assert!(
        git(repo.path(), &["init", "-q", "-b", "main"])
            .status
            .success()
    );
    std::fs::write(repo.path().join("a.txt"), "hello\n").unwrap();
    assert!(git(repo.path(), &["add", "a.txt"]).status.success());
    assert!(git(repo.path(), &["commit", "-qm", "one"]).status.success());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/git_remote.py");
    let remote = format!(
        "ext::python3 {} {}",
        script.display(),
        exchange.path().display()
    );
    let push = {
        let dir = repo.path().to_path_buf();
        let mut args: Vec<String> = vec!["push".into(), remote];
        args.extend(refspecs.iter().map(|r| r.to_string()));
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            git(&dir, &args)
        })
    };
    let request_path = exchange.path().join("request");
    let mut waited = Duration::ZERO;
    while !request_path.exists() {
        assert!(waited < Duration::from_secs(60), "the push never arrived");
        std::thread::sleep(Duration::from_millis(10));
        waited += Duration::from_millis(10);
    }
    let request = std::fs::read(&request_path).unwrap();
    let commands = parse_commands(&request).unwrap().unwrap();
    assert_eq!(commands.length, request.len());
    let denied: Vec<(usize, String)> = commands
        .updates
        .iter()
        .enumerate()
        .filter(|(_, u)| deny.contains(&u.branch()))
        .map(|(i, u)| {
            (
                i,
                format!("corral: restricted/git/push-deny:{}", u.branch()),
            )
        })
        .collect();
    let tmp = exchange.path().join("response.tmp");
    std::fs::write(&tmp, refusal(&commands, &denied)).unwrap();
    std::fs::rename(&tmp, exchange.path().join("response")).unwrap();
    let branches = commands
        .updates
        .iter()
        .map(|u| u.branch().to_string())
        .collect();
    (push.join().unwrap(), branches)
}

#[test]
fn git_prints_remote_rejected_with_the_policy_for_a_new_branch() {
    let (out, branches) = push_through_guard(&["HEAD:refs/heads/main"], &["main"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(branches, ["main"]);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("! [remote rejected] HEAD -> main (corral: restricted/git/push-deny:main)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("remote: refs/heads/main refused: corral: restricted/git/push-deny:main"),
        "{stderr}"
    );
}

#[test]
fn a_push_with_one_refused_ref_is_refused_whole() {
    let (out, branches) = push_through_guard(
        &["HEAD:refs/heads/ai/ok", "HEAD:refs/heads/main"],
        &["main"],
    );
    assert_eq!(branches, ["ai/ok", "main"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("! [remote rejected] HEAD -> main (corral: restricted/git/push-deny:main)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "! [remote rejected] HEAD -> ai/ok (corral: another ref in this push was refused)"
        ),
        "{stderr}"
    );
}

#[test]
fn deleting_a_protected_branch_is_refused_too() {
    let (out, branches) = push_through_guard(&[":refs/heads/main"], &["main"]);
    assert_eq!(branches, ["main"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("! [remote rejected] main (corral: restricted/git/push-deny:main)"),
        "{stderr}"
    );
}
