//! `corral doctor`: what this kernel and user allow.

use std::process::ExitCode;

use corral_sandbox::HostReport;

/// Prints one line per capability and what `corral run` does without it; exits 0 when
/// everything corral requires is present, 1 otherwise.
pub fn run() -> anyhow::Result<ExitCode> {
    let report = HostReport::probe();
    for check in &report.checks {
        let mark = match (check.available, check.required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "warn",
        };
        println!("{mark} {:<16} {}", check.name, check.detail);
        if !check.available {
            println!("     {:<16} without it: {}", "", check.without);
        }
    }
    if corral_sandbox::userns::is_host_root() {
        println!(
            "ok   {:<16} running as root: sandboxes run as an unprivileged host uid (--host-uid, default 65534) with an id-mapped workspace",
            "identity"
        );
    } else {
        println!(
            "ok   {:<16} running unprivileged: sandboxes run as this user's uid on the host",
            "identity"
        );
    }
    Ok(if report.ready() {
        println!("corral run can start sandboxes on this host");
        ExitCode::SUCCESS
    } else {
        println!("corral run cannot start sandboxes on this host: fix the FAIL lines above");
        ExitCode::FAILURE
    })
}
