//! `corral sandbox ...`: the gateway's sandboxes from the command line. Tables for people,
//! `--json` for scripts; a sandbox is named by its id or its name. `start` shows on stderr
//! what the start is doing (a repo session's first start: git's clone progress).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use crate::client::Client;
use crate::table;

/// Arguments of `corral sandbox`.
#[derive(Args, Debug)]
pub struct SandboxArgs {
    #[command(subcommand)]
    command: SandboxCommand,
    /// Print the gateway's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum SandboxCommand {
    /// Record a new sandbox (a repo session when --repo is given: creating it again returns it).
    Create {
        /// Its name (a DNS label).
        name: Option<String>,
        /// Profile: full, moderate or restricted.
        #[arg(long)]
        profile: Option<String>,
        /// Repository to clone into the workspace.
        #[arg(long)]
        repo: Option<String>,
        /// Branch to check out (created when absent).
        #[arg(long, requires = "repo")]
        branch: Option<String>,
        /// Agent template: shell, opencode, code-server or one the gateway's config adds.
        #[arg(long, conflicts_with = "command")]
        agent: Option<String>,
        /// A custom command to run instead of a template (run with `sh -c`); give its ports
        /// with --port, the first is the one its session host reaches.
        #[arg(long)]
        command: Option<String>,
        /// A port the sandbox serves (repeatable).
        #[arg(long = "port")]
        ports: Vec<u16>,
    },
    /// List your sandboxes and those shared with you (an admin sees everyone's).
    List,
    /// Show one sandbox.
    Get {
        /// Id or name.
        sandbox: String,
    },
    /// Start a sandbox.
    Start {
        /// Id or name.
        sandbox: String,
    },
    /// Stop a sandbox (its workspace and home stay).
    Stop {
        /// Id or name.
        sandbox: String,
    },
    /// Delete a sandbox; its workspace and home stay unless --purge.
    Delete {
        /// Id or name.
        sandbox: String,
        /// Also remove the workspace and home.
        #[arg(long)]
        purge: bool,
    },
    /// Let another user open a sandbox's session host (its agent's UI, its ports).
    Share {
        /// Id or name.
        sandbox: String,
        /// The user's email.
        email: String,
    },
    /// Stop sharing a sandbox with a user.
    Unshare {
        /// Id or name.
        sandbox: String,
        /// The user's email.
        email: String,
    },
    /// Run a command in a running sandbox; exits with its status.
    Exec {
        /// Id or name.
        sandbox: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// A terminal in a running sandbox (the login shell, or CMD); exits with its status.
    Connect {
        /// Id or name.
        sandbox: String,
        /// A command to run instead of the login shell.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Copy files to or from a sandbox's workspace: exactly one side is NAME:PATH.
    /// `cp NAME:PATH DST` makes DST (or DST/basename when DST is a directory);
    /// `cp SRC NAME:DIR` puts SRC into the workspace directory DIR.
    Cp {
        /// Source: a local path or NAME:PATH.
        src: String,
        /// Destination: a local path or NAME:DIR.
        dst: String,
    },
    /// Print a sandbox's agent output (-f follows).
    Logs {
        /// Id or name.
        sandbox: String,
        /// Keep printing new output.
        #[arg(short, long)]
        follow: bool,
    },
}

/// Runs `corral sandbox`.
pub fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let client = Client::from_environment()?;
    let json_output = args.json;
    let show = |value: &Value| print_sandboxes(value, json_output);
    match args.command {
        SandboxCommand::Create {
            name,
            profile,
            repo,
            branch,
            agent,
            command,
            ports,
        } => {
            let mut body = json!({ "ports": ports });
            if let Some(command) = command {
                body["command"] = json!(["sh", "-c", command]);
            }
            for (key, value) in [
                ("name", name),
                ("profile", profile),
                ("repo", repo),
                ("branch", branch),
                ("agent", agent),
            ] {
                if let Some(value) = value {
                    body[key] = Value::String(value);
                }
            }
            show(&client.post("/api/v1/sandboxes", &body)?)?;
        }
        SandboxCommand::List => show(&client.get("/api/v1/sandboxes")?)?,
        SandboxCommand::Get { sandbox } => show(&resolve(&client, &sandbox)?)?,
        SandboxCommand::Start { sandbox } => {
            let id = id_of(&resolve(&client, &sandbox)?)?;
            show(&start_showing_progress(&client, &id)?)?;
        }
        SandboxCommand::Stop { sandbox } => {
            let id = id_of(&resolve(&client, &sandbox)?)?;
            show(&client.post(&format!("/api/v1/sandboxes/{id}/stop"), &json!({}))?)?;
        }
        SandboxCommand::Delete { sandbox, purge } => {
            let id = id_of(&resolve(&client, &sandbox)?)?;
            let query = if purge { "?purge=true" } else { "" };
            client.delete(&format!("/api/v1/sandboxes/{id}{query}"))?;
            if !json_output {
                println!("deleted {id}{}", if purge { " and its files" } else { "" });
            }
        }
        SandboxCommand::Share { sandbox, email } => {
            let id = id_of(&resolve(&client, &sandbox)?)?;
            let path = format!(
                "/api/v1/sandboxes/{id}/shares/{}",
                utf8_percent_encode(&email, NON_ALPHANUMERIC)
            );
            show(&client.put(&path, &json!({}))?)?;
        }
        SandboxCommand::Unshare { sandbox, email } => {
            let id = id_of(&resolve(&client, &sandbox)?)?;
            let path = format!(
                "/api/v1/sandboxes/{id}/shares/{}",
                utf8_percent_encode(&email, NON_ALPHANUMERIC)
            );
            show(&client.delete_json(&path)?)?;
        }
        SandboxCommand::Exec { sandbox, command } => {
            let id = id_of(&resolve(&client, &sandbox)?)?;
            let result = client.post(
                &format!("/api/v1/sandboxes/{id}/exec"),
                &json!({ "argv": command }),
            )?;
            return exec_output(&result, json_output);
        }
        SandboxCommand::Connect { sandbox, command } => {
            let id = id_of(&resolve(&client, &sandbox)?)?;
            return crate::connect_cmd::connect(&client, &id, &command);
        }
        SandboxCommand::Cp { src, dst } => crate::cp_cmd::cp(&client, &src, &dst)?,
        SandboxCommand::Logs { sandbox, follow } => {
            let id = id_of(&resolve(&client, &sandbox)?)?;
            let query = if follow { "?follow=true" } else { "" };
            let mut logs = client.stream(&format!("/api/v1/sandboxes/{id}/logs{query}"))?;
            let mut stdout = std::io::stdout().lock();
            match std::io::copy(&mut logs, &mut stdout) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(e).context("cannot copy the logs"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How often a start's progress is asked for.
const PROGRESS_POLL: Duration = Duration::from_millis(250);

/// Starts sandbox `id`, showing on stderr what the start is doing while the gateway works on
/// it: starting, then for a repo session's first start git's clone progress.
fn start_showing_progress(client: &Client, id: &str) -> anyhow::Result<Value> {
    let (finished, done) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let watcher = scope.spawn(move || show_progress(client, id, &done));
        let started = client.post(&format!("/api/v1/sandboxes/{id}/start"), &json!({}));
        drop(finished);
        let _ = watcher.join();
        started
    })
}

/// Prints the sandbox's `progress` whenever it changes, until `done` hangs up: redrawn in
/// place on a terminal, else one line per step (a percentage counting up is one step).
fn show_progress(client: &Client, id: &str, done: &mpsc::Receiver<()>) {
    let terminal = std::io::stderr().is_terminal();
    let mut shown: Option<String> = None;
    while let Err(mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(PROGRESS_POLL) {
        let Ok(sandbox) = client.get(&format!("/api/v1/sandboxes/{id}")) else {
            continue;
        };
        let Some(step) = sandbox["progress"].as_str() else {
            continue;
        };
        let same = |shown: &str| match terminal {
            true => shown == step,
            false => progress_phase(shown) == progress_phase(step),
        };
        if shown.as_deref().is_some_and(same) {
            continue;
        }
        if terminal {
            eprint!("\r\x1b[K{step}");
        } else {
            eprintln!("{step}");
        }
        shown = Some(step.to_owned());
    }
    if terminal && shown.is_some() {
        eprintln!();
    }
}

/// A progress line without its counting part: `cloning U: Receiving objects:  45% (9/20)`
/// is phase `cloning U: Receiving objects:`.
fn progress_phase(step: &str) -> &str {
    match step.find('%') {
        Some(percent) => step[..percent].trim_end_matches(|c: char| c.is_ascii_digit() || c == ' '),
        None => step,
    }
}

/// Finds the sandbox `wanted` names: by id, else by name.
pub(crate) fn resolve(client: &Client, wanted: &str) -> anyhow::Result<Value> {
    let all = client.get("/api/v1/sandboxes")?;
    let list = all
        .as_array()
        .context("the gateway's sandbox list is not a list")?;
    if let Some(found) = list.iter().find(|s| s["id"] == wanted) {
        return Ok(found.clone());
    }
    let named: Vec<&Value> = list.iter().filter(|s| s["name"] == wanted).collect();
    match named.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no sandbox {wanted:?} (see `corral sandbox list`)"),
        several => {
            let ids: Vec<String> = several
                .iter()
                .map(|s| format!("{} ({})", table::cell(&s["id"]), table::cell(&s["owner"])))
                .collect();
            bail!(
                "{wanted:?} names several sandboxes: {}; use the id",
                ids.join(", ")
            )
        }
    }
}

pub(crate) fn id_of(sandbox: &Value) -> anyhow::Result<String> {
    sandbox["id"]
        .as_str()
        .map(str::to_string)
        .context("the gateway's answer has no sandbox id")
}

/// Prints one sandbox or a list, as a table or as JSON.
fn print_sandboxes(value: &Value, json_output: bool) -> anyhow::Result<()> {
    if json_output {
        println!("{}", serde_json::to_string_pretty(value)?);
        return Ok(());
    }
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    if rows.is_empty() {
        println!("no sandboxes yet: create one with `corral sandbox create NAME`");
        return Ok(());
    }
    table::print(
        &[
            "id", "name", "state", "profile", "agent", "repo", "branch", "owner", "url",
        ],
        &rows,
    );
    Ok(())
}

/// Prints an exec result: the command's output on stdout and stderr, its status as ours.
fn exec_output(result: &Value, json_output: bool) -> anyhow::Result<ExitCode> {
    let code = result["exit_code"]
        .as_i64()
        .context("the gateway's exec answer has no exit_code")?;
    if json_output {
        println!("{}", serde_json::to_string_pretty(result)?);
    } else {
        print!("{}", result["stdout"].as_str().unwrap_or_default());
        eprint!("{}", result["stderr"].as_str().unwrap_or_default());
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counting_percentage_is_one_phase() {
        let url = "cloning http://h:8080/r.git";
        assert_eq!(
            progress_phase(&format!("{url}: Receiving objects:  45% (9/20)")),
            progress_phase(&format!("{url}: Receiving objects: 100% (20/20), done.")),
        );
        assert_ne!(
            progress_phase(&format!("{url}: Receiving objects:  45% (9/20)")),
            progress_phase(&format!("{url}: Resolving deltas:  45% (9/20)")),
        );
        assert_eq!(
            progress_phase("starting the sandbox"),
            "starting the sandbox"
        );
    }
}
