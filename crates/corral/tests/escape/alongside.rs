//! Attacks that need something running alongside the sandbox: a second sandbox on another
//! workspace or on the same one, or a look at the sandbox's processes from the host.

use std::io::BufRead;
use std::process::Stdio;

use corral_testkit::{Caller, Corral, OutputExt, TestDir, is_root};

use super::harness::{self, RUN_LIMIT, SECRET};

#[test]
fn one_sandbox_cannot_see_another() {
    for caller in Caller::all() {
        let first = TestDir::new(caller);
        first.write(caller, "first-only.txt", SECRET);
        let marker = format!("1000.{}{}", std::process::id(), caller.uid());
        let mut running = corral(caller)
            .args(["run", "--profile", "restricted", "--", "sh", "-c"])
            .args([format!("echo ready; exec sleep {marker}")])
            .current_dir(first.path())
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufReader::new(running.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready, "ready\n", "{caller:?}");

        let second = TestDir::new(caller);
        let first_path = first.path().display().to_string();
        // Read from a file: a path in the command line would show up in /proc/*/cmdline.
        second.write(caller, "first-path", &first_path);
        let script = "cat \"$(cat first-path)/first-only.txt\"
             for p in /proc/[0-9]*; do echo \"$p: $(tr '\\0' ' ' < $p/cmdline)\"; done
             cat /proc/self/mountinfo
             find / -path /proc -prune -o -name first-only.txt -print
             echo searched";
        let out = corral(caller)
            .args(["run", "--profile", "restricted", "--", "sh", "-c", script])
            .current_dir(second.path())
            .output_within(RUN_LIMIT);
        stop(&running);
        running.wait().unwrap();

        let text = format!("{}{}", out.stdout_text(), out.stderr_text());
        assert!(text.contains("searched"), "{caller:?}: {text}");
        let not_found = format!("cat: {first_path}/first-only.txt: No such file or directory\n");
        assert!(text.contains(&not_found), "{caller:?}: {text}");
        let text = text.replace(&not_found, "");
        let first_name = first.path().file_name().unwrap().to_string_lossy();
        for leak in [SECRET, &marker, &first_name, "first-only.txt\n"] {
            assert!(
                !text.contains(leak),
                "{caller:?}: the second sandbox saw {leak:?} of the first: {text}"
            );
        }
    }
}

#[test]
fn no_sandbox_process_keeps_the_callers_descriptors() {
    if !is_root() {
        eprintln!("skipped: reading other users' /proc/<pid>/fd needs root");
        return;
    }
    for caller in Caller::all() {
        let host_dir = TestDir::new(caller);
        let ws = TestDir::new(caller);
        let mut running = Corral::new("/bin/sh", caller)
            .args(["-c", harness::WITH_HOST_FD_7, "sh"])
            .args([host_dir.path()])
            .args([env!("CARGO_BIN_EXE_corral"), "run", "--", "sh", "-c"])
            .args(["echo ready; exec sleep 1000"])
            .current_dir(ws.path())
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufReader::new(running.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready, "ready\n", "{caller:?}");
        // `sh` and `setpriv` exec, so the child's pid is corral's.
        let launcher = running.id();
        let target = host_dir.path().to_path_buf();
        let holds = |pid: u32| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|fds| {
                    fds.flatten()
                        .any(|fd| std::fs::read_link(fd.path()).ok().as_ref() == Some(&target))
                })
                .unwrap_or(false)
        };
        let launcher_holds = holds(launcher);
        let sandbox = descendants(launcher);
        let holders: Vec<u32> = sandbox.iter().copied().filter(|pid| holds(*pid)).collect();
        stop(&running);
        running.wait().unwrap();
        assert!(
            launcher_holds,
            "{caller:?}: the caller's descriptor did not reach corral; the test proves nothing"
        );
        assert!(!sandbox.is_empty(), "{caller:?}: no sandbox process found");
        assert!(
            holders.is_empty(),
            "{caller:?}: sandbox processes {holders:?} (of {sandbox:?}) hold the caller's descriptor on {}",
            target.display()
        );
    }
}

/// Sandbox starts raced by [`a_running_sandbox_cannot_redirect_the_protected_paths_of_the_next`]
/// (before the fix, about one start in thirty showed the host directory).
const RACE_ROUNDS: usize = 100;

/// Swaps `.vscode` (a protected path) with a symlink to `$TARGET` as fast as it can, with
/// `renameat2(RENAME_EXCHANGE)`, until a file named `stop` appears.
const FLIP_PROTECTED_PATH: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
os.mkdir('.vscode')
os.symlink(sys.argv[1], '.vscode-link')
print('flipping', flush=True)
deadline = time.monotonic() + 300
while not os.path.exists('stop') and time.monotonic() < deadline:
    for _ in range(1000):
        libc.syscall(316, -100, b'.vscode', -100, b'.vscode-link', 2)
"#;

/// A sandbox may create a protected path (`.vscode`) and swap it with a symlink to a host
/// directory while another sandbox on the same workspace starts: the second must never
/// mount that host directory at `/workspace/.vscode`. It may refuse to start instead.
#[test]
fn a_running_sandbox_cannot_redirect_the_protected_paths_of_the_next() {
    if !is_root() {
        eprintln!("skipped: needs root for a host directory under /home");
        return;
    }
    for caller in Caller::all() {
        let target = std::path::PathBuf::from(format!(
            "/home/corral-race-{}-{}",
            std::process::id(),
            caller.uid()
        ));
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("secret"), SECRET).unwrap();
        let ws = TestDir::new(caller);
        let mut flipper = corral(caller)
            .args(["run", "--profile", "restricted", "--", "python3", "-c"])
            .args([FLIP_PROTECTED_PATH])
            .args([&target])
            .current_dir(ws.path())
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(flipper.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();

        let mut leaks = Vec::new();
        let mut odd_failures = Vec::new();
        let mut refused = 0;
        for _ in 0..RACE_ROUNDS {
            let out = corral(caller)
                .args(["run", "--profile", "restricted", "--"])
                .args(["cat", "/workspace/.vscode/secret"])
                .current_dir(ws.path())
                .output_within(RUN_LIMIT);
            let text = format!("{}{}", out.stdout_text(), out.stderr_text());
            if text.contains(SECRET) {
                leaks.push(text);
            } else if out.code() == 125 {
                refused += 1;
                if !text.contains("became a symlink while the sandbox was being built") {
                    odd_failures.push(text);
                }
            }
        }
        std::fs::write(ws.path().join("stop"), "").unwrap();
        let flipped = flipper.wait().unwrap();
        std::fs::remove_dir_all(&target).unwrap();

        assert_eq!(
            line, "flipping\n",
            "{caller:?}: the flipping sandbox did not start"
        );
        assert!(flipped.success(), "{caller:?}: {flipped:?}");
        assert!(
            leaks.is_empty(),
            "{caller:?}: {} of {RACE_ROUNDS} sandboxes showed the host directory: {leaks:?}",
            leaks.len()
        );
        assert!(odd_failures.is_empty(), "{caller:?}: {odd_failures:?}");
        eprintln!("{caller:?}: {refused} of {RACE_ROUNDS} starts refused, none leaked");
    }
}

fn corral(caller: Caller) -> Corral {
    Corral::new(env!("CARGO_BIN_EXE_corral"), caller)
}

/// SIGTERM to corral, which relays it to the sandbox and then cleans up.
fn stop(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Every process descending from `pid`, from the host's /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The parent pid is the second field after the command name, which ends at the last ')'.
        let after_name = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        if let Some(parent) = after_name.split_whitespace().nth(1)
            && let Ok(parent) = parent.parse::<u32>()
        {
            parents.push((child, parent));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let current = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == current)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}
