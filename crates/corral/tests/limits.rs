//! Resource limits against a hostile command: memory and process exhaustion are stopped inside
//! the sandbox — or, where the caller's cgroups are not writable (an unprivileged user without
//! a delegated cgroup), corral says so and the process limit still holds through
//! RLIMIT_NPROC — the host and the next sandbox carry on, and no cgroup outlives its sandbox,
//! not even one whose corral was killed with SIGKILL.
//!
//! Whether a caller's limits are enforced is read from `corral doctor` run as that caller, so
//! the same tests hold on a host with delegated cgroups (v1 or v2) and on one without.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use corral_testkit::{Caller, Corral, OutputExt, TestDir};

/// A generous bound on one run, so a hung sandbox fails the test instead of hanging it.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Touches 1 GiB, 16 MiB at a time.
const ALLOCATE_1_GIB: &str = "chunks = [b'x' * (16 << 20) for _ in range(64)]\n\
                              print('allocated 1 GiB', flush=True)";

/// Forks until the kernel refuses or 500 children run: bounded, so a missing limit cannot
/// hurt the host. The children wait on a pipe only the parent writes, and leave with it.
const FORK_UP_TO_500: &str = r#"
import errno, os
r, w = os.pipe()
forked, stopped_by = 0, 'nothing'
for _ in range(500):
    try:
        pid = os.fork()
    except OSError as e:
        stopped_by = errno.errorcode[e.errno]
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    forked += 1
os.close(w)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
print(f'forked {forked}, stopped by {stopped_by}', flush=True)
"#;

fn corral(caller: Caller) -> Corral {
    Corral::new(env!("CARGO_BIN_EXE_corral"), caller)
}

/// Whether `corral doctor`, run as `caller`, says the cgroup `controller` can be used.
fn doctor_says_usable(caller: Caller, controller: &str) -> bool {
    let out = corral(caller).args(["doctor"]).output_within(RUN_LIMIT);
    let line = format!("cgroup {controller}");
    let text = out.stdout_text();
    let found = text
        .lines()
        .find(|l| l.contains(&line))
        .unwrap_or_else(|| panic!("doctor says nothing about {line}: {text}"));
    found.starts_with("ok")
}

/// Cgroup directories of the sandbox whose corral had `pid`, anywhere in the host's cgroup
/// hierarchies (found by walking every cgroup mount, independently of how corral picks them).
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("corral-{pid}-");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if !matches!(right.split(' ').next(), Some("cgroup" | "cgroup2")) {
            continue;
        }
        if let Some(mount_point) = left.split(' ').nth(4) {
            walk(Path::new(mount_point), &prefix, 6, &mut found);
        }
    }
    found.sort();
    found.dedup();
    found
}

fn walk(dir: &Path, prefix: &str, depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            found.push(entry.path());
        } else if depth > 0 {
            walk(&entry.path(), prefix, depth - 1, found);
        }
    }
}

/// A sandbox that works, after whatever the previous one did.
fn assert_next_run_works(caller: Caller) {
    let ws = TestDir::new(caller);
    let out = corral(caller)
        .args(["run", "--", "sh", "-c", "echo next"])
        .current_dir(ws.path())
        .output_within(RUN_LIMIT);
    assert_eq!(
        out.stdout_text(),
        "next\n",
        "{caller:?}: the next sandbox: {}",
        out.stderr_text()
    );
}

#[test]
fn memory_exhaustion_is_stopped_inside_and_the_host_carries_on() {
    for caller in Caller::all() {
        let enforced = doctor_says_usable(caller, "memory");
        let ws = TestDir::new(caller);
        let (pid, out) = corral(caller)
            .args([
                "run",
                "--memory",
                "64M",
                "--",
                "python3",
                "-c",
                ALLOCATE_1_GIB,
            ])
            .current_dir(ws.path())
            .pid_and_output_within(RUN_LIMIT);
        let (stdout, stderr) = (out.stdout_text(), out.stderr_text());
        if enforced {
            assert!(
                out.code() == 128 + 9 || stderr.contains("MemoryError"),
                "{caller:?}: expected an OOM kill (137) or MemoryError, got {}: {stdout}{stderr}",
                out.code()
            );
            assert!(!stdout.contains("allocated"), "{caller:?}: {stdout}");
        } else {
            assert!(
                stderr.contains("cannot set the memory limit")
                    && stderr.contains("this limit is not enforced"),
                "{caller:?}: doctor says the memory cgroup is not usable, so corral must warn: {stderr}"
            );
        }
        assert_eq!(cgroups_of(pid), Vec::<PathBuf>::new(), "{caller:?}");
        assert_next_run_works(caller);
    }
}

#[test]
fn a_fork_bomb_is_stopped_inside_and_the_next_run_works() {
    for caller in Caller::all() {
        let enforced = doctor_says_usable(caller, "pids");
        let ws = TestDir::new(caller);
        let (pid, out) = corral(caller)
            .args(["run", "--pids", "64", "--", "python3", "-c", FORK_UP_TO_500])
            .current_dir(ws.path())
            .pid_and_output_within(RUN_LIMIT);
        let (stdout, stderr) = (out.stdout_text(), out.stderr_text());
        let forked: u32 = stdout
            .strip_prefix("forked ")
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{caller:?}: {stdout}{stderr}"));
        assert!(forked < 64, "{caller:?}: {stdout}");
        assert!(
            stdout.ends_with("stopped by EAGAIN\n"),
            "{caller:?}: {stdout}"
        );
        if !enforced {
            assert!(
                stderr.contains("cannot set the pids limit") && stderr.contains("RLIMIT_NPROC"),
                "{caller:?}: doctor says the pids cgroup is not usable, so corral must say what it does instead: {stderr}"
            );
        }
        assert_eq!(cgroups_of(pid), Vec::<PathBuf>::new(), "{caller:?}");
        assert_next_run_works(caller);
    }
}

/// Starts `corral run` with limits around a command that prints `ready` and sleeps; returns
/// once it is ready.
fn start_sleeping_sandbox(caller: Caller, ws: &TestDir) -> std::process::Child {
    let mut child = corral(caller)
        .args([
            "run", "--memory", "64M", "--pids", "64", "--cpus", "0.5", "--",
        ])
        .args(["sh", "-c", "echo ready; exec sleep 1000"])
        .current_dir(ws.path())
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n", "{caller:?}");
    child
}

fn signal(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn read(dir: &Path, files: &[&str]) -> Option<String> {
    files
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .map(|s| s.trim().to_string())
}

#[test]
fn sandbox_cgroups_hold_the_limits_and_go_away_with_the_sandbox() {
    for caller in Caller::all() {
        let enforced = doctor_says_usable(caller, "memory") && doctor_says_usable(caller, "pids");
        let ws = TestDir::new(caller);
        let mut running = start_sleeping_sandbox(caller, &ws);
        let pid = running.id();
        let dirs = cgroups_of(pid);
        let limits: Vec<(Option<String>, Option<String>, bool)> = dirs
            .iter()
            .map(|d| {
                let procs = read(d, &["cgroup.procs"]).unwrap_or_default();
                (
                    read(d, &["memory.limit_in_bytes", "memory.max"]),
                    read(d, &["pids.max"]),
                    !procs.is_empty(),
                )
            })
            .collect();
        signal(&running, "-TERM");
        running.wait().unwrap();
        assert_eq!(cgroups_of(pid), Vec::<PathBuf>::new(), "{caller:?}");
        if !enforced {
            assert!(dirs.is_empty(), "{caller:?}: {dirs:?}");
            continue;
        }
        assert!(
            limits
                .iter()
                .any(|(memory, _, _)| memory.as_deref() == Some("67108864")),
            "{caller:?}: {dirs:?} {limits:?}"
        );
        assert!(
            limits
                .iter()
                .any(|(_, pids, _)| pids.as_deref() == Some("64")),
            "{caller:?}: {dirs:?} {limits:?}"
        );
        assert!(
            limits.iter().all(|(_, _, populated)| *populated),
            "the sandbox runs inside every one: {caller:?}: {dirs:?} {limits:?}"
        );

        // A corral killed with SIGKILL cannot clean up; the next corral run does.
        let mut killed = start_sleeping_sandbox(caller, &ws);
        let killed_pid = killed.id();
        assert!(!cgroups_of(killed_pid).is_empty(), "{caller:?}");
        signal(&killed, "-KILL");
        killed.wait().unwrap();
        for _ in 0..200 {
            if cgroups_of(killed_pid).is_empty() {
                break;
            }
            // The sandbox's processes may take a moment to leave: try again, boundedly.
            assert_next_run_works(caller);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            cgroups_of(killed_pid),
            Vec::<PathBuf>::new(),
            "{caller:?}: the cgroups of a killed corral stayed"
        );
    }
}
