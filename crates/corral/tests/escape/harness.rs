//! Runs the escape suite's attack tables: the host fixtures attacks aim at, the run inside
//! `corral run --profile restricted`, the control run outside, and the checks of the host
//! afterwards.

use std::fs;
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use corral_testkit::{Caller, Corral, OutputExt, TestDir, is_root, output_within};

/// What a host file the sandbox must never read contains.
pub const SECRET: &str = "HOST-SECRET-d41d8cd9";

/// A generous bound on one run, so a hung sandbox fails the test instead of hanging it.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The Python helpers every Python attack imports (`from kit import *`).
const KIT: &str = include_str!("kit.py");

/// Opens the directory `$1` as descriptor 7, then runs the rest of the arguments: every attack,
/// inside and outside, starts with a descriptor on a host directory it should not reach.
pub const WITH_HOST_FD_7: &str = r#"exec 7<"$1"; shift; exec "$@""#;

/// One attack an agent could try from inside the sandbox.
pub struct Attack {
    /// What the agent tries.
    pub name: &'static str,
    /// What the host puts in the workspace first.
    pub prepare: Prepare,
    /// The attack, run in the workspace. `{PLACEHOLDERS}` are filled from the [`HostFixture`].
    pub script: Script,
    /// Text that must all appear in the output inside the sandbox: the exact way it fails.
    pub inside: &'static [&'static str],
    /// The proof that the same script does work outside the sandbox.
    pub outside: Outside,
    /// What must hold on the host after the run inside.
    pub host_after: &'static [HostFact],
}

/// The attack itself.
pub enum Script {
    /// `sh -c SCRIPT`.
    Sh(&'static str),
    /// `python3 -c "from kit import *; CODE"` (see `kit.py`).
    Python(&'static str),
}

/// Workspace content the host prepares before an attack (run in the workspace with `sh -c`).
pub enum Prepare {
    /// An empty workspace (plus `kit.py`).
    Nothing,
    /// Prepared by the caller itself, as a user would leave their project.
    AsCaller(&'static str),
    /// Prepared by the host's root (skipped when the tests do not run as root).
    AsRoot(&'static str),
}

/// How the same script proves itself outside the sandbox. Every control must print all its
/// strings and no `: EPERM`, so "any answer but EPERM" is what a bare `"label: "` means.
pub enum Outside {
    /// Run on the host by either caller.
    AnyCaller(&'static [&'static str]),
    /// Run on the host by root; an unprivileged user is stopped outside by ordinary
    /// permissions already, so only root's run proves anything.
    RootOnly(&'static [&'static str]),
    /// Run by either caller in a user (and mount, net, UTS) namespace of its own
    /// (`unshare -Urmnu`): what corral takes away is what any user could otherwise do.
    OwnUserNamespace(&'static [&'static str]),
    /// No control run, for the reason given.
    NotRun(&'static str),
}

/// A fact about the host checked after the attack ran inside.
pub enum HostFact {
    /// This host path (placeholders allowed) does not exist.
    Missing(&'static str),
    /// This workspace file has neither set-user-ID nor set-group-ID bit.
    NoSetIdBit(&'static str),
    /// No host process has this text (placeholders allowed) in its command line.
    NoProcess(&'static str),
    /// The host process `{SLEEP_PID}` is still alive.
    SleeperAlive,
    /// The host's hostname did not change.
    HostnameUnchanged,
}

/// What the attacks aim at on the host, made for one caller and removed on drop.
pub struct HostFixture {
    /// Unique per test process and caller.
    id: String,
    /// A host temp directory owned by the caller, holding `secret`.
    host_dir: PathBuf,
    /// A home directory under /home owned by the caller, holding `notes.txt` (root only).
    home_dir: Option<PathBuf>,
    /// A root-only file in /root (root only).
    root_secret: Option<PathBuf>,
    tcp_loopback: TcpListener,
    tcp_any: TcpListener,
    host_ip: Option<IpAddr>,
    _abstract_socket: UnixListener,
    sleeper: Child,
    /// A number, so `sleep {MARKER}` runs (for 1000 s) and names itself on the host.
    marker: String,
    hostname: String,
}

impl HostFixture {
    /// Creates the fixtures for `caller`; `tag` keeps fixtures of concurrent tests apart.
    pub fn new(caller: Caller, tag: &str) -> Self {
        let id = format!("{tag}-{}-{}", std::process::id(), caller.uid());
        let host_dir = std::env::temp_dir().join(format!("corral-escape-{id}"));
        fs::create_dir(&host_dir).unwrap();
        fs::write(host_dir.join("secret"), SECRET).unwrap();
        let home_dir = is_root().then(|| {
            let dir = PathBuf::from(format!("/home/corral-escape-{id}"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("notes.txt"), SECRET).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
            chown(&dir, caller);
            dir
        });
        chown(&host_dir, caller);
        let root_secret = is_root().then(|| {
            let file = PathBuf::from(format!("/root/corral-escape-{id}.txt"));
            fs::write(&file, SECRET).unwrap();
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
            file
        });
        let abstract_name = format!("corral-escape-{id}");
        let address = SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
        let sleeper = caller
            .host_command("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            id,
            host_dir,
            home_dir,
            root_secret,
            // A listening socket completes connections without accept(): no server thread.
            tcp_loopback: TcpListener::bind("127.0.0.1:0").unwrap(),
            tcp_any: TcpListener::bind("0.0.0.0:0").unwrap(),
            host_ip: host_ip(),
            _abstract_socket: UnixListener::bind_addr(&address).unwrap(),
            sleeper,
            marker: format!(
                "1000.{}{}{}",
                std::process::id(),
                caller.uid(),
                tag.bytes().map(u32::from).sum::<u32>()
            ),
            hostname: fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        }
    }

    /// `text` with every placeholder filled in; `None` when it names a fixture this host
    /// lacks (a home in /home when the tests are not root, say).
    pub fn render(&self, text: &str, workspace: &Path) -> Option<String> {
        let optional = |path: &Option<PathBuf>| path.as_ref().map(|p| p.display().to_string());
        let values = [
            ("{ID}", Some(self.id.clone())),
            ("{SECRET}", Some(SECRET.to_string())),
            ("{HOST_DIR}", Some(self.host_dir.display().to_string())),
            ("{HOME_DIR}", optional(&self.home_dir)),
            ("{ROOT_SECRET}", optional(&self.root_secret)),
            ("{WORKSPACE}", Some(workspace.display().to_string())),
            ("{TCP_PORT}", Some(port(&self.tcp_loopback).to_string())),
            ("{TCP_ANY_PORT}", Some(port(&self.tcp_any).to_string())),
            ("{HOST_IP}", self.host_ip.map(|ip| ip.to_string())),
            ("{ABSTRACT}", Some(format!("corral-escape-{}", self.id))),
            ("{SLEEP_PID}", Some(self.sleeper.id().to_string())),
            ("{MARKER}", Some(self.marker.clone())),
            ("{BLOCK_DEVICE}", Some(block_device())),
        ];
        let mut out = text.to_string();
        for (key, value) in values {
            if out.contains(key) {
                out = out.replace(key, &value?);
            }
        }
        Some(out)
    }

    fn check_fact(&self, fact: &HostFact, workspace: &Path) -> Result<(), String> {
        let render = |text| self.render(text, workspace).expect("rendered before");
        match fact {
            HostFact::Missing(path) => {
                let path = render(path);
                match Path::new(&path).symlink_metadata() {
                    Ok(_) => Err(format!("{path} exists on the host")),
                    Err(_) => Ok(()),
                }
            }
            HostFact::NoSetIdBit(file) => {
                let mode = fs::metadata(workspace.join(file))
                    .map_err(|e| e.to_string())?
                    .mode();
                if mode & 0o6000 == 0 {
                    Ok(())
                } else {
                    Err(format!("{file} has mode {mode:o} on the host"))
                }
            }
            HostFact::NoProcess(text) => {
                let text = render(text);
                let out = Command::new("pgrep").args(["-af", &text]).output().unwrap();
                if out.stdout.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "host processes outlived the sandbox: {}",
                        String::from_utf8_lossy(&out.stdout)
                    ))
                }
            }
            HostFact::SleeperAlive => {
                let pid = self.sleeper.id();
                match fs::read_to_string(format!("/proc/{pid}/stat")) {
                    Ok(stat) if !stat.contains(") Z ") => Ok(()),
                    _ => Err(format!("host process {pid} was killed")),
                }
            }
            HostFact::HostnameUnchanged => {
                let now = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
                if now == self.hostname {
                    Ok(())
                } else {
                    Err(format!("the host's hostname changed to {now}"))
                }
            }
        }
    }
}

impl Drop for HostFixture {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
        let _ = fs::remove_dir_all(&self.host_dir);
        if let Some(dir) = &self.home_dir {
            let _ = fs::remove_dir_all(dir);
        }
        if let Some(file) = &self.root_secret {
            let _ = fs::remove_file(file);
        }
    }
}

fn chown(path: &Path, caller: Caller) {
    if is_root() {
        std::os::unix::fs::chown(path, Some(caller.uid()), Some(caller.uid())).unwrap();
        for entry in fs::read_dir(path).unwrap().flatten() {
            std::os::unix::fs::chown(entry.path(), Some(caller.uid()), Some(caller.uid())).unwrap();
        }
    }
}

fn port(listener: &TcpListener) -> u16 {
    listener.local_addr().unwrap().port()
}

/// The host's address on its default route (no packet is sent), if it has one.
fn host_ip() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A disk of this host (`/dev/vda`, `/dev/sda`, `/dev/nvme0n1`, ...), else a loop device.
fn block_device() -> String {
    let mut names: Vec<String> = fs::read_dir("/sys/block")
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort_by_key(|n| ["loop", "ram", "zram"].iter().any(|p| n.starts_with(p)));
    names
        .into_iter()
        .map(|n| format!("/dev/{n}"))
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| "/dev/loop0".into())
}

/// A fresh workspace for `caller` with `kit.py` and the attack's preparation.
fn workspace(caller: Caller, attack: &Attack, host: &HostFixture) -> Result<TestDir, String> {
    let ws = TestDir::new(caller);
    ws.write(caller, "kit.py", KIT);
    let (script, by) = match attack.prepare {
        Prepare::Nothing => return Ok(ws),
        Prepare::AsCaller(script) => (script, caller),
        Prepare::AsRoot(script) => (script, Caller::Root),
    };
    let script = host.render(script, ws.path()).expect("rendered before");
    let out = by
        .host_command("sh")
        .args(["-c", &script])
        .current_dir(ws.path())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!("preparing failed: {}", out.stderr_text()));
    }
    Ok(ws)
}

fn argv(script: &Script, rendered: &str) -> Vec<String> {
    match script {
        Script::Sh(_) => vec!["sh".into(), "-c".into(), rendered.into()],
        Script::Python(_) => vec![
            "python3".into(),
            "-c".into(),
            format!("from kit import *\n{rendered}"),
        ],
    }
}

fn text_of(script: &Script) -> &'static str {
    match script {
        Script::Sh(text) | Script::Python(text) => text,
    }
}

fn inside(caller: Caller, host: &HostFixture, ws: &TestDir, command: &[String]) -> Output {
    Corral::new("/bin/sh", caller)
        .args(["-c", WITH_HOST_FD_7, "sh"])
        .args([&host.host_dir])
        .args([
            env!("CARGO_BIN_EXE_corral"),
            "run",
            "--profile",
            "restricted",
        ])
        .args(["--env", "LC_ALL=C", "--"])
        .args(command)
        .current_dir(ws.path())
        .output_within(RUN_LIMIT)
}

fn outside(
    caller: Caller,
    host: &HostFixture,
    ws: &TestDir,
    command: &[String],
    userns: bool,
) -> Output {
    let mut run = caller.host_command("/bin/sh");
    run.args(["-c", WITH_HOST_FD_7, "sh"]).arg(&host.host_dir);
    if userns {
        run.args(["unshare", "-Urmnu", "--"]);
    }
    run.args(command).current_dir(ws.path());
    output_within(&mut run, None, RUN_LIMIT)
}

fn combined(out: &Output) -> String {
    format!("{}{}", out.stdout_text(), out.stderr_text())
}

fn missing(text: &str, expected: &[&str], host: &HostFixture, ws: &Path) -> Vec<String> {
    expected
        .iter()
        .map(|e| host.render(e, ws).expect("rendered before"))
        .filter(|e| !text.contains(e.as_str()))
        .collect()
}

/// Runs one attack for `caller`: inside (it must fail exactly as the table says and reveal
/// no secret), the host facts, then the control outside. `Ok(None)` when it ran, `Ok(Some)`
/// with a reason when this host cannot run it, `Err` with what went wrong.
pub fn run_attack(
    attack: &Attack,
    caller: Caller,
    host: &HostFixture,
) -> Result<Option<String>, String> {
    if matches!(attack.prepare, Prepare::AsRoot(_)) && !is_root() {
        return Ok(Some("needs root to prepare".into()));
    }
    let probe = Path::new("/");
    let texts = [text_of(&attack.script)]
        .into_iter()
        .chain(attack.inside.iter().copied());
    for text in texts {
        if host.render(text, probe).is_none() {
            return Ok(Some("this host lacks a fixture it names".into()));
        }
    }
    let ws = workspace(caller, attack, host)?;
    let script = host.render(text_of(&attack.script), ws.path()).unwrap();
    let command = argv(&attack.script, &script);
    let out = inside(caller, host, &ws, &command);
    let text = combined(&out);
    let absent = missing(&text, attack.inside, host, ws.path());
    if !absent.is_empty() {
        return Err(format!("inside, expected {absent:?} in:\n{text}"));
    }
    if text.contains(SECRET) {
        return Err(format!("a host secret leaked inside:\n{text}"));
    }
    for fact in attack.host_after {
        host.check_fact(fact, ws.path())?;
    }
    let (expected, userns) = match attack.outside {
        Outside::AnyCaller(expected) => (expected, false),
        Outside::RootOnly(expected) if caller == Caller::Root => (expected, false),
        Outside::OwnUserNamespace(expected) => (expected, true),
        Outside::RootOnly(_) => return Ok(None),
        Outside::NotRun(reason) => {
            eprintln!("{}: no control run outside: {reason}", attack.name);
            return Ok(None);
        }
    };
    let ws = workspace(caller, attack, host)?;
    let script = host.render(text_of(&attack.script), ws.path()).unwrap();
    let out = outside(caller, host, &ws, &argv(&attack.script, &script), userns);
    let text = combined(&out);
    let absent = missing(&text, expected, host, ws.path());
    if !absent.is_empty() || text.contains(": EPERM") {
        return Err(format!(
            "the control outside did not work, so the test proves nothing: expected {absent:?} and no EPERM in:\n{text}"
        ));
    }
    Ok(None)
}

/// Runs every attack of `table` for every caller and fails with one report listing each
/// attack that misbehaved.
pub fn run_table(tag: &str, table: &[Attack]) {
    let mut failures = Vec::new();
    for caller in Caller::all() {
        let host = HostFixture::new(caller, tag);
        for attack in table {
            match run_attack(attack, caller, &host) {
                Ok(None) => {}
                Ok(Some(reason)) => eprintln!("skipped {} as {caller:?}: {reason}", attack.name),
                Err(why) => failures.push(format!("{} (as {caller:?}): {why}", attack.name)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} attack run(s) misbehaved:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
