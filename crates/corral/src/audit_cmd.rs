//! `corral audit [-f]`: the decisions `corral run` recorded, newest last; `-f` follows.

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use corral_policy::AuditEvent;

use crate::egress::default_audit_log;

/// How often `--follow` looks for new lines.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);

/// Arguments of `corral audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Keep printing decisions as they are recorded.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Print the raw JSON lines instead of one readable line per decision.
    #[arg(long)]
    json: bool,
    /// The audit log (default: where `corral run` writes it).
    #[arg(long, env = "CORRAL_AUDIT_LOG", value_name = "FILE")]
    file: Option<PathBuf>,
}

/// Runs `corral audit`.
pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let path = match args.file.clone() {
        Some(path) => path,
        None => {
            let state = std::env::var("XDG_STATE_HOME").ok();
            let home = std::env::var_os("HOME").map(PathBuf::from);
            default_audit_log(state.as_deref(), home.as_deref())
                .context("no audit log: set HOME or pass --file")?
        }
    };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !args.follow => {
            eprintln!(
                "corral: no decisions recorded yet ({} does not exist)",
                path.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .context("cannot read the audit log")?;
        if read == 0 || !line.ends_with('\n') {
            if !args.follow {
                return Ok(ExitCode::SUCCESS);
            }
            // A partly written line is read again once it is complete.
            reader.seek(SeekFrom::Current(-(read as i64)))?;
            std::thread::sleep(FOLLOW_INTERVAL);
            continue;
        }
        if print_event(line.trim_end(), args.json).is_err() {
            // The reader went away (`corral audit | head`): nothing more to do.
            return Ok(ExitCode::SUCCESS);
        }
    }
}

fn print_event(line: &str, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        return writeln!(out, "{line}");
    }
    match serde_json::from_str::<AuditEvent>(line) {
        Ok(e) => writeln!(
            out,
            "{} {:<10} {:<6} {:<12} {} {}",
            e.time,
            e.sandbox,
            e.decision,
            e.action,
            e.resource,
            e.policies.join(",")
        ),
        Err(_) => writeln!(out, "(unreadable) {line}"),
    }
}
