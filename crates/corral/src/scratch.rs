//! `corral run`'s scratch directories in the temporary directory (the egress socket's private
//! directory, the sandbox's CA bundle). They are removed when the run ends, but a run killed
//! with SIGKILL (the OOM killer, a supervisor's escalation, a test's reaper) cannot remove
//! them, so each carries the pid of the run that made it (`corral-egress-<pid>-XXXXXX`) and
//! every run first removes those of runs that are gone. Only directories of the same user are
//! touched; one whose pid is alive (even reused by another program) is left alone.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Makes a scratch directory `corral-<purpose>-<pid>-XXXXXX` in the temporary directory,
/// removed when the returned handle is dropped.
pub fn directory(purpose: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("corral-{purpose}-{}-", std::process::id()))
        .tempdir()
}

/// Removes the scratch directories (of any purpose) that runs now gone left in `dir`.
/// Failures are ignored: this is tidying, and the next run tries again.
pub fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let uid = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else {
            continue;
        };
        let path = entry.path();
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if ours && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The pid in a scratch directory's name `corral-<purpose>-<pid>-<random>`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("corral-")?;
    let mut parts = rest.rsplitn(3, '-');
    let (_random, pid, purpose) = (parts.next()?, parts.next()?, parts.next()?);
    let purpose_ok = !purpose.is_empty() && purpose.bytes().all(|b| b.is_ascii_lowercase());
    purpose_ok.then(|| pid.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid_of_their_run() {
        assert_eq!(owner_pid("corral-egress-4242-a1B2c3"), Some(4242));
        assert_eq!(owner_pid("corral-ca-7-xyz"), Some(7));
        assert_eq!(owner_pid("corral-egress-a1B2c3"), None, "the old form");
        assert_eq!(owner_pid("corral-cp-12-x-y"), None);
        assert_eq!(owner_pid("other-egress-1-x"), None);
    }

    #[test]
    fn only_directories_of_runs_that_are_gone_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22, so this pid is never alive.
        let gone = tmp.path().join("corral-egress-999999999-abc");
        let alive = tmp
            .path()
            .join(format!("corral-ca-{}-abc", std::process::id()));
        let unrelated = tmp.path().join("corral-egress-abc");
        for dir in [&gone, &alive, &unrelated] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("file"), "x").unwrap();
        }
        remove_stale(tmp.path());
        assert!(!gone.exists());
        assert!(alive.exists() && unrelated.exists());
    }
}
