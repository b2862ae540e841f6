//! The first start of a repo session: `git clone` of the repo into `/workspace` and a checkout
//! of the branch, created if the remote does not have it. git runs inside the sandbox through
//! the control socket, so it reaches the repo only through the sandbox's egress proxy and
//! under its policy; `NO_PROXY` is emptied for it so that even a loopback host goes through
//! the proxy (where the policy decides), never around it.
//!
//! The gateway marks a clone pending (a file beside the workspace) before the sandbox starts
//! and clears the mark once the clone succeeded. A gateway killed in between leaves the mark;
//! the next start (or the first start request after the sandbox is adopted) empties the
//! workspace of the partial checkout and clones again. A workspace without the mark is never
//! emptied, whatever is (or is not) in it.

use std::fs::OpenOptions;
use std::sync::Arc;
use std::time::Duration;

use corral_sandbox::control::ExecRequest;

use super::progress::settled;
use super::{Runtime, RuntimeError, files};
use crate::store::Sandbox;

/// How long a repo session's first clone may take.
const CLONE_LIMIT: Duration = Duration::from_secs(60 * 60);

/// With `$3` = `wipe`, empties the workspace first (what an unfinished clone left; `find
/// -delete` never follows a symlink out of it). Clones `$1` into the (empty) workspace and
/// switches to branch `$2`: the remote's branch if it has one (git creates the tracking
/// branch), else a new one from the default branch.
const SCRIPT: &str = "{ [ \"$3\" != wipe ] || find /workspace -mindepth 1 -delete; } && \
                      git clone --progress -- \"$1\" /workspace && cd /workspace && \
                      { git checkout --quiet \"$2\" 2>/dev/null || git checkout --quiet -b \"$2\"; }";

/// Lines of git's error output kept for the caller.
const ERROR_LINES: usize = 5;

/// The exec request that clones `repo` and checks out `branch` (both validated at create:
/// neither starts with `-`; they are passed as arguments, never spliced into the script),
/// after emptying the workspace if `wipe`.
fn request(repo: &str, branch: &str, wipe: bool) -> ExecRequest {
    let wipe = if wipe { "wipe" } else { "keep" };
    ExecRequest {
        argv: ["sh", "-c", SCRIPT, "corral-clone", repo, branch, wipe]
            .map(String::from)
            .to_vec(),
        env: vec![
            ("NO_PROXY".into(), String::new()),
            ("no_proxy".into(), String::new()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ],
        cwd: Some("/workspace".into()),
        tty: false,
    }
}

impl Runtime {
    /// A repo session's first clone, into its running sandbox (`wipe`: after emptying the
    /// workspace of an unfinished one). If it fails, the sandbox is stopped again: a repo
    /// session without its repo is not what was asked for.
    pub(super) async fn first_clone(
        &self,
        id: &str,
        sandbox: &Sandbox,
        wipe: bool,
    ) -> Result<(), RuntimeError> {
        let Some(repo) = &sandbox.repo else {
            return Ok(());
        };
        let branch = sandbox.branch.as_deref().unwrap_or("main");
        match self.clone_repo(id, repo, branch, wipe).await {
            // The sandbox ended by itself before it could clone: its record says so.
            Ok(()) | Err(RuntimeError::NotRunning(_)) => Ok(()),
            Err(e) => {
                self.stop_locked(id).await?;
                Err(e)
            }
        }
    }

    /// Clones `repo` into the running sandbox's workspace and checks out `branch` (created
    /// if the remote has no such branch). git runs inside the sandbox, so the clone goes
    /// through its egress proxy under its policy. git's output is added to the agent log,
    /// and its progress is shown in the sandbox's `progress` as it clones.
    async fn clone_repo(
        &self,
        id: &str,
        repo: &str,
        branch: &str,
        wipe: bool,
    ) -> Result<(), RuntimeError> {
        let paths = self.paths(id);
        let step = Arc::new(self.progress.show(id, format!("cloning {repo}")));
        let shown = Arc::clone(&step);
        let heading = format!("cloning {repo}");
        let on_line = Box::new(move |line: String| shown.update(format!("{heading}: {line}")));
        // A clone is not a caller's exec: it gets as long as the longest exec may have.
        let output = self
            .exec_observed(id, request(repo, branch, wipe), CLONE_LIMIT, Some(on_line))
            .await?;
        drop(step);
        let stderr = settled(&output.stderr);
        let mut text = output.stdout.clone();
        text.extend_from_slice(&stderr);
        let appended = OpenOptions::new()
            .append(true)
            .open(paths.log())
            .and_then(|mut f| std::io::Write::write_all(&mut f, &text));
        if let Err(source) = appended {
            tracing::warn!(sandbox = %id, error = %source, "cannot add the clone's output to the log");
        }
        if output.exit_code != 0 {
            return Err(RuntimeError::Clone {
                repo: repo.to_owned(),
                output: last_lines(&stderr),
            });
        }
        let pending = paths.clone_pending();
        std::fs::remove_file(&pending).map_err(|source| files("remove", &pending, source))?;
        tracing::info!(sandbox = %id, "repo cloned");
        Ok(())
    }
}

/// The last few lines of git's error output, as one line.
fn last_lines(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(ERROR_LINES);
    match lines[start..].join(" / ") {
        empty if empty.is_empty() => "git failed without saying why".into(),
        joined => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_errors_are_summed_up_in_their_last_lines() {
        assert_eq!(
            last_lines(b"Cloning...\n\nfatal: a\nfatal: b\n"),
            "Cloning... / fatal: a / fatal: b"
        );
        assert_eq!(last_lines(b""), "git failed without saying why");
        let many: String = (0..9).map(|i| format!("l{i}\n")).collect();
        assert_eq!(last_lines(many.as_bytes()), "l4 / l5 / l6 / l7 / l8");
    }
}
