//! The test git server works with the real git client: clone, then push a branch.

use std::process::Command;

use corral_testkit::GitServer;

fn git(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn real_git_clones_and_pushes_over_smart_http() {
    let server = GitServer::start();
    server.create_repo("acme/app.git");
    let work = tempfile::tempdir().unwrap();
    let clone = git(
        work.path(),
        &["clone", "-q", &server.url("acme/app.git"), "app"],
    );
    assert!(
        clone.status.success(),
        "{}",
        String::from_utf8_lossy(&clone.stderr)
    );
    let app = work.path().join("app");
    assert_eq!(
        std::fs::read_to_string(app.join("README.md")).unwrap(),
        "hello\n"
    );
    std::fs::write(app.join("change.txt"), "x\n").unwrap();
    assert!(git(&app, &["add", "change.txt"]).status.success());
    assert!(git(&app, &["commit", "-qm", "change"]).status.success());
    let push = git(&app, &["push", "-q", "origin", "HEAD:refs/heads/ai/change"]);
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let head = String::from_utf8_lossy(&git(&app, &["rev-parse", "HEAD"]).stdout)
        .trim()
        .to_string();
    assert_eq!(
        server.rev("acme/app.git", "refs/heads/ai/change"),
        Some(head)
    );
    assert_eq!(server.rev("acme/app.git", "refs/heads/nope"), None);
}
