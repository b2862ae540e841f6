//! Helpers shared by corral's integration tests: workspaces owned by the right user, and the
//! real `corral` binary run the two ways people run it — as root, and as an unprivileged user
//! (when the tests run as root, by dropping privileges with `setpriv`).

#![forbid(unsafe_code)]

mod git_server;

pub use git_server::GitServer;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
        let mut command = if self.caller == Caller::Unprivileged && is_root() {
            let mut c = Command::new("setpriv");
            let id = TEST_UID.to_string();
            c.args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
                .arg(&self.binary);
            c
        } else {
            Command::new(&self.binary)
        };
        command.args(&self.args);
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        if self.caller == Caller::Unprivileged && is_root() {
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
