//! Helpers shared by corral's integration tests: workspaces owned by the right user, and the
//! real `corral` binary run the two ways people run it — as root, and as an unprivileged user
//! (when the tests run as root, by dropping privileges with `setpriv`).

#![forbid(unsafe_code)]

pub mod fake_provider;
pub mod fixture;
pub mod gateway;
mod git_server;
pub mod ingress;
pub mod opencode;
pub mod tls;

pub use gateway::Gateway;
pub use git_server::GitServer;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The unprivileged uid/gid tests switch to when they run as root. It has no passwd entry on
/// purpose: corral must not depend on one.
pub const TEST_UID: u32 = 4242;

/// Who runs `corral`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Real root.
    Root,
    /// An unprivileged user: the test process itself if it is not root, else [`TEST_UID`].
    Unprivileged,
}

impl Caller {
    /// Every caller this test process can act as: both when running as root, else only
    /// unprivileged.
    pub fn all() -> Vec<Caller> {
        if is_root() {
            vec![Caller::Root, Caller::Unprivileged]
        } else {
            vec![Caller::Unprivileged]
        }
    }

    /// The host uid this caller has.
    pub fn uid(self) -> u32 {
        match self {
            Caller::Root => 0,
            Caller::Unprivileged if is_root() => TEST_UID,
            Caller::Unprivileged => current_uid(),
        }
    }

    /// Whether running as this caller means dropping root through `setpriv`.
    fn drops_root(self) -> bool {
        self == Caller::Unprivileged && is_root()
    }

    /// `program` run directly on the host (no sandbox) as this caller, with a minimal
    /// environment: `PATH=/usr/bin:/bin`, `LC_ALL=C` and, for the unprivileged caller,
    /// `HOME=/nonexistent`. Escape tests run an attack this way to prove that it works
    /// outside the sandbox.
    pub fn host_command(self, program: impl AsRef<OsStr>) -> Command {
        let mut command = self.command_for(program.as_ref());
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C");
        if self.drops_root() {
            command.env("HOME", "/nonexistent");
        }
        command
    }

    /// `program` as this caller, environment untouched.
    fn command_for(self, program: &OsStr) -> Command {
        if self.drops_root() {
            let mut c = Command::new("setpriv");
            let id = TEST_UID.to_string();
            c.args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
                .arg(program);
            c
        } else {
            Command::new(program)
        }
    }
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    current_uid() == 0
}

fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// A temporary directory usable by `caller` (owned by it, under a world-searchable parent).
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// Creates an empty directory owned by `caller`.
    pub fn new(caller: Caller) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("corral-test-")
            .tempdir()
            .expect("create temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = Self { dir };
        dir.chown_to(caller);
        dir
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates `relative` with `content`, owned by `caller`.
    pub fn write(&self, caller: Caller, relative: &str, content: &str) -> PathBuf {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        self.chown_to(caller);
        path
    }

    /// Gives every file in the directory to `caller`.
    pub fn chown_to(&self, caller: Caller) {
        if is_root() {
            let owner = format!("{0}:{0}", caller.uid());
            let status = Command::new("chown")
                .args(["-R", &owner])
                .arg(self.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
}

/// A `corral` invocation under construction.
pub struct Corral {
    binary: PathBuf,
    caller: Caller,
    args: Vec<String>,
    cwd: Option<PathBuf>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
}

impl Corral {
    /// `corral ARGS...` run by `caller`, using the binary at `binary`.
    pub fn new(binary: impl AsRef<Path>, caller: Caller) -> Self {
        Self {
            binary: binary.as_ref().to_path_buf(),
            caller,
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            stdin: None,
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(
            args.into_iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned()),
        );
        self
    }

    /// Runs in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Sets an environment variable for corral itself.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Feeds `input` on stdin.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// The command line that runs corral as the caller (through `setpriv` when dropping root).
    pub fn command(&self) -> Command {
        let mut command = self.caller.command_for(self.binary.as_os_str());
        command.args(&self.args);
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        if self.caller.drops_root() {
            command.env("HOME", "/nonexistent");
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// Runs to completion and returns the output.
    pub fn output(self) -> Output {
        let mut command = self.command();
        command.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn corral");
        if let Some(input) = &self.stdin {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input).unwrap();
        }
        child.wait_with_output().expect("wait for corral")
    }

    /// Like [`Corral::output`], but gives up after `limit`: see [`output_within`].
    pub fn output_within(self, limit: Duration) -> Output {
        self.pid_and_output_within(limit).1
    }

    /// Like [`Corral::output_within`], and also returns corral's pid (`setpriv` execs corral,
    /// so the pid is corral's either way): a sandbox's cgroups are named after it.
    pub fn pid_and_output_within(self, limit: Duration) -> (u32, Output) {
        let mut command = self.command();
        pid_and_output_within(&mut command, self.stdin.as_deref(), limit)
    }
}

/// Runs `command` to completion with `stdin` (or `/dev/null`) and returns its output, or
/// kills it and panics once `limit` has passed. The limit is a generous bound that turns a
/// hung sandbox, or a process that escaped it still holding stdout, into a test failure
/// instead of a hung test run; it is never a performance threshold.
pub fn output_within(command: &mut Command, stdin: Option<&[u8]>, limit: Duration) -> Output {
    pid_and_output_within(command, stdin, limit).1
}

/// [`output_within`], plus the pid the command ran as.
pub fn pid_and_output_within(
    command: &mut Command,
    stdin: Option<&[u8]>,
    limit: Duration,
) -> (u32, Output) {
    let deadline = Instant::now() + limit;
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        std::thread::spawn(move || pipe.write_all(&input));
    }
    let stdout = read_in_background(child.stdout.take().expect("stdout is piped"));
    let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>, name: &str| {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!("{command:?} exited, but something it started still holds its {name} open")
        })
    };
    let output = Output {
        status,
        stdout: collect(stdout, "stdout"),
        stderr: collect(stderr, "stderr"),
    };
    (child.id(), output)
}

fn read_in_background(
    mut pipe: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Convenience accessors on a finished run.
pub trait OutputExt {
    /// stdout as text.
    fn stdout_text(&self) -> String;
    /// stderr as text.
    fn stderr_text(&self) -> String;
    /// The exit code (-1 when killed by a signal).
    fn code(&self) -> i32;
}

impl OutputExt for Output {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}
