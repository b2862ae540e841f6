//! The first start of a repo session: `git clone` of the repo into `/workspace` and a checkout
//! of the branch, created if the remote does not have it. git runs inside the sandbox through
//! the control socket, so it reaches the repo only through the sandbox's egress proxy and
//! under its policy; `NO_PROXY` is emptied for it so that even a loopback host goes through
//! the proxy (where the policy decides), never around it.

use corral_sandbox::control::ExecRequest;

/// Clones `$1` into the (empty) workspace and switches to branch `$2`: the remote's branch
/// if it has one (git creates the tracking branch), else a new one from the default branch.
const SCRIPT: &str = "git clone --quiet -- \"$1\" /workspace && cd /workspace && \
                      { git checkout --quiet \"$2\" 2>/dev/null || git checkout --quiet -b \"$2\"; }";

/// Lines of git's error output kept for the caller.
const ERROR_LINES: usize = 5;

/// The exec request that clones `repo` and checks out `branch` (both validated at create:
/// neither starts with `-`; they are passed as arguments, never spliced into the script).
pub(super) fn request(repo: &str, branch: &str) -> ExecRequest {
    ExecRequest {
        argv: ["sh", "-c", SCRIPT, "corral-clone", repo, branch]
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

/// The last few lines of git's error output, as one line.
pub(super) fn last_lines(stderr: &[u8]) -> String {
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
