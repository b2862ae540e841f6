//! `corral run`'s scratch directories (the egress socket's, the CA bundle's) do not pile up in
//! the temporary directory: a run killed with SIGKILL cannot remove its own, and the next run
//! removes them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_corral");

fn scratch_dirs(tmp: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("corral-"))
        .collect();
    names.sort();
    names
}

fn run(tmp: &Path, home: &Path, command: &[&str]) -> Command {
    let mut run = Command::new(BIN);
    run.args(["run", "--allow-net", "example.com", "--"])
        .args(command)
        .env("TMPDIR", tmp)
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    run
}

#[test]
fn a_killed_runs_scratch_directories_are_removed_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut killed = run(tmp.path(), home.path(), &["sleep", "60"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while scratch_dirs(tmp.path()).len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", scratch_dirs(tmp.path()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = scratch_dirs(tmp.path());
    let pid = killed.id().to_string();
    assert!(left.iter().all(|n| n.contains(&pid)), "{left:?}");
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert_eq!(scratch_dirs(tmp.path()), left, "SIGKILL leaves them");

    let status = run(tmp.path(), home.path(), &["true"]).status().unwrap();
    assert!(status.success());
    assert_eq!(scratch_dirs(tmp.path()), Vec::<String>::new());
}
