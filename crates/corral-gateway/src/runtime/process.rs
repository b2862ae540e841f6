//! The `corral run` processes behind running sandboxes, as `/proc` shows them. A pid alone
//! does not name a process (pids are reused), so a process is its pid plus its start time,
//! and a process is only believed to be a sandbox's if its command line is `corral run` with
//! that sandbox's control socket. Nothing is signalled before it is identified this way.

use std::path::Path;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::store::ProcessId;

/// Index of the start time (field 22 of `/proc/PID/stat`) among the fields after the
/// command name, which start at field 3 (the state).
const START_TIME_INDEX: usize = 22 - 3;

/// The process with this pid as it is now, unless it is gone or a zombie (a zombie has
/// ended; only its parent has yet to notice).
pub(super) fn current(pid: i32) -> Option<ProcessId> {
    let (state, process) = read(pid)?;
    (state != 'Z' && state != 'X').then_some(process)
}

/// The gateway's own child with this pid, even if it has already ended: it stays a zombie,
/// with its start time readable, until the gateway waits for it.
pub(super) fn own_child(pid: u32) -> Option<ProcessId> {
    Some(read(i32::try_from(pid).ok()?)?.1)
}

fn read(pid: i32) -> Option<(char, ProcessId)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, start_time) = parse_stat(&stat)?;
    Some((state, ProcessId { pid, start_time }))
}

/// The state letter and start time of a `/proc/PID/stat` line. The command name is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted from the
/// last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let start_time = fields.nth(START_TIME_INDEX - 1)?.parse().ok()?;
    Some((state, start_time))
}

/// Whether `process` still runs (same pid, same start time).
pub(super) fn is_alive(process: ProcessId) -> bool {
    current(process.pid) == Some(process)
}

/// Whether `process` is alive and is `corral run ... --control-socket CONTROL ...`.
pub(super) fn is_sandbox_process(process: ProcessId, control: &Path) -> bool {
    if !is_alive(process) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", process.pid)) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let control = control.as_os_str().as_encoded_bytes();
    args.get(1) == Some(&&b"run"[..])
        && args
            .windows(2)
            .any(|pair| pair[0] == b"--control-socket" && pair[1] == control)
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
        assert_eq!(parse_stat(stat), Some(('S', 987654)));
        assert_eq!(parse_stat("1 (x) S 0"), None);
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
