//! The `corral run` processes behind running sandboxes, as `/proc` shows them. A pid alone
//! does not name a process (pids are reused), so a process is its pid plus its start time,
//! and a process is only believed to be a sandbox's if its command line is `corral run` with
//! that sandbox's control socket. Nothing is signalled before it is identified this way.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::store::ProcessId;

/// Index of the process group (field 5) among the fields after the command name.
const PROCESS_GROUP_INDEX: usize = 5 - 3;

/// Index of the start time (field 22 of `/proc/PID/stat`) among the fields after the
/// command name, which start at field 3 (the state).
const START_TIME_INDEX: usize = 22 - 3;

/// The process with this pid as it is now, unless it is gone or a zombie (a zombie has
/// ended; only its parent has yet to notice).
pub(super) fn current(pid: i32) -> Option<ProcessId> {
    let (stat, process) = read(pid)?;
    (stat.state != 'Z' && stat.state != 'X').then_some(process)
}

/// The gateway's own child with this pid, even if it has already ended: it stays a zombie,
/// with its start time readable, until the gateway waits for it.
pub(super) fn own_child(pid: u32) -> Option<ProcessId> {
    Some(read(i32::try_from(pid).ok()?)?.1)
}

fn read(pid: i32) -> Option<(Stat, ProcessId)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let stat = parse_stat(&text)?;
    let process = ProcessId {
        pid,
        start_time: stat.start_time,
    };
    Some((stat, process))
}

/// What a `/proc/PID/stat` line says that the runtime uses.
struct Stat {
    state: char,
    process_group: i32,
    start_time: u64,
}

/// Parses a `/proc/PID/stat` line. The command name is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        process_group: fields.get(PROCESS_GROUP_INDEX)?.parse().ok()?,
        start_time: fields.get(START_TIME_INDEX)?.parse().ok()?,
    })
}

/// Whether `process` still runs (same pid, same start time).
pub(super) fn is_alive(process: ProcessId) -> bool {
    current(process.pid) == Some(process)
}

/// Whether `process` is alive and is `corral run ... --control-socket CONTROL ...`.
pub(super) fn is_sandbox_process(process: ProcessId, control: &Path) -> bool {
    is_alive(process) && control_socket(process.pid).is_some_and(|c| c == control)
}

/// The `--control-socket` of the `corral run` process `pid`, if it is one.
fn control_socket(pid: i32) -> Option<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    if args.get(1) != Some(&&b"run"[..]) {
        return None;
    }
    let value = args
        .windows(2)
        .find(|pair| pair[0] == b"--control-socket")?[1];
    Some(PathBuf::from(OsStr::from_bytes(value)))
}

/// Every live `corral run` launcher (a process group leader, as the runtime starts them)
/// whose control socket is `sandboxes_dir/ID/control.sock`, with that ID: sandbox processes
/// the gateway may not know about, because it died between starting one and recording it.
pub(super) fn launchers_under(sandboxes_dir: &Path) -> Vec<(String, ProcessId)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Some((stat, process)) = read(pid) else {
            continue;
        };
        if stat.state == 'Z' || stat.process_group != pid {
            continue;
        }
        let Some(control) = control_socket(pid) else {
            continue;
        };
        let Ok(relative) = control.strip_prefix(sandboxes_dir) else {
            continue;
        };
        let mut parts = relative.components();
        if let (Some(Component::Normal(id)), Some(Component::Normal(name)), None) =
            (parts.next(), parts.next(), parts.next())
            && name == "control.sock"
            && let Some(id) = id.to_str()
        {
            found.push((id.to_owned(), process));
        }
    }
    found
}

/// Sends `signal` to `process` if it is still that process.
pub(super) fn signal(process: ProcessId, signal: Signal) {
    if is_alive(process) {
        let _ = kill(Pid::from_raw(process.pid), signal);
    }
}

/// Sends `signal` to the process group `process` leads (the runtime starts each sandbox in
/// a group of its own), if `process` is still that process.
pub(super) fn signal_group(process: ProcessId, signal: Signal) {
    if is_alive(process) {
        let _ = killpg(Pid::from_raw(process.pid), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 200 18446744073709551615";
        let parsed = parse_stat(stat).unwrap();
        assert_eq!(
            (parsed.state, parsed.process_group, parsed.start_time),
            ('S', 4242, 987654)
        );
        assert!(parse_stat("1 (x) S 0").is_none());
    }

    #[test]
    fn this_process_is_alive_and_not_a_sandbox() {
        let me = current(std::process::id() as i32).unwrap();
        assert!(is_alive(me));
        assert!(!is_alive(ProcessId {
            start_time: me.start_time + 1,
            ..me
        }));
        assert!(!is_sandbox_process(me, Path::new("/nowhere/control.sock")));
    }
}
