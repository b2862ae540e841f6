//! `corral policy`: validate a profile, show what it compiles to, and ask it a question
//! offline.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use corral_policy::{ACTION_NAMES, Action, PolicyEngine, Profile, Request, SandboxIdentity};

/// Exit status of `policy check` for an allowed action.
const ALLOWED: u8 = 0;
/// Exit status of `policy check` for a denied action (and of `validate` for an invalid file).
const DENIED: u8 = 1;
/// Exit status of `policy` commands that could not answer.
const FAILED: u8 = 2;

/// Arguments of `corral policy`.
#[derive(Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Check a profile file: exit 0 when valid, else 1 with the file, line and mistake.
    Validate {
        /// The profile (TOML).
        file: PathBuf,
    },
    /// Print the effective profile (after `extends`), or the Cedar it compiles to.
    Show {
        /// A built-in profile (full, moderate, restricted) or a profile file.
        profile: String,
        /// Print the compiled Cedar policies instead.
        #[arg(long)]
        cedar: bool,
    },
    /// Decide one action: prints `allow` or `deny` and the deciding policies; exit 0 allow,
    /// 1 deny, 2 error.
    Check(Box<CheckArgs>),
}

/// Arguments of `corral policy check`.
#[derive(Args, Debug)]
struct CheckArgs {
    /// A built-in profile or a profile file.
    #[arg(long)]
    profile: String,
    /// connect, http_request, git_push, inference, mcp_tool_call, exec, read or write.
    #[arg(long)]
    action: String,
    /// Host (connect), or the host of --url.
    #[arg(long)]
    host: Option<String>,
    /// Port (connect; default 443).
    #[arg(long)]
    port: Option<u16>,
    /// Address the host resolved to (connect).
    #[arg(long)]
    ip: Option<IpAddr>,
    /// URL (http_request), e.g. https://api.github.com/repos/acme/app.
    #[arg(long)]
    url: Option<String>,
    /// HTTP method (http_request; default GET).
    #[arg(long)]
    method: Option<String>,
    /// Branch (git_push).
    #[arg(long)]
    branch: Option<String>,
    /// Remote host (git_push).
    #[arg(long)]
    remote: Option<String>,
    /// Repository path on the remote (git_push), e.g. acme/app.git.
    #[arg(long)]
    repo: Option<String>,
    /// Path inside the sandbox (exec, read, write).
    #[arg(long)]
    path: Option<String>,
    /// provider/model (inference).
    #[arg(long)]
    model: Option<String>,
    /// server/tool (mcp_tool_call).
    #[arg(long)]
    tool: Option<String>,
    /// Email of the sandbox's owner, for policies about owners.
    #[arg(long, default_value = "")]
    owner: String,
    /// Sandbox id.
    #[arg(long, default_value = "check")]
    sandbox: String,
}

/// Runs `corral policy`; prints errors itself so each subcommand keeps its exit codes.
pub fn run(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    let outcome = match args.command {
        PolicyCommand::Validate { file } => validate(&file),
        PolicyCommand::Show { profile, cedar } => show(&profile, cedar),
        PolicyCommand::Check(check_args) => check(&check_args),
    };
    Ok(outcome.unwrap_or_else(|e| {
        eprintln!("corral: {e:#}");
        ExitCode::from(FAILED)
    }))
}

fn validate(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    match Profile::load(file).and_then(PolicyEngine::new) {
        Ok(engine) => {
            println!(
                "ok: {} (profile {:?})",
                file.display(),
                engine.profile().name
            );
            Ok(ExitCode::from(ALLOWED))
        }
        Err(e) => {
            eprintln!("corral: invalid profile: {e}");
            Ok(ExitCode::from(DENIED))
        }
    }
}

fn show(profile: &str, cedar: bool) -> anyhow::Result<ExitCode> {
    let engine = PolicyEngine::new(Profile::resolve(profile)?)?;
    let text = if cedar {
        engine.cedar_text()
    } else {
        engine.profile().to_toml()
    };
    // A reader that stops early (`| head`) is not an error worth a message.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(ExitCode::SUCCESS)
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let engine = PolicyEngine::new(Profile::resolve(&args.profile)?)?;
    let request = Request {
        sandbox: SandboxIdentity {
            id: args.sandbox.clone(),
            owner: args.owner.clone(),
            ..SandboxIdentity::default()
        },
        action: action(args)?,
    };
    let decision = engine.decide(&request);
    for error in &decision.errors {
        eprintln!("corral: {error}");
    }
    match decision.verdict() {
        "audit-deny" => println!("allow (audit mode: the policies below would deny)"),
        verdict => println!("{verdict}"),
    }
    for reason in &decision.reasons {
        println!("  {reason}");
    }
    Ok(ExitCode::from(if decision.allowed {
        ALLOWED
    } else if decision.errors.is_empty() {
        DENIED
    } else {
        FAILED
    }))
}

/// Builds the action from the flags `--action` needs, naming any that are missing.
fn action(args: &CheckArgs) -> anyhow::Result<Action> {
    let need = |value: &Option<String>, flag: &str| -> anyhow::Result<String> {
        value
            .clone()
            .with_context(|| format!("--action {} needs {flag}", args.action))
    };
    let pair = |value: &Option<String>, flag: &str| -> anyhow::Result<(String, String)> {
        let text = need(value, flag)?;
        text.split_once('/')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .with_context(|| format!("{flag} {text:?} must look like left/right"))
    };
    Ok(match args.action.as_str() {
        "connect" => Action::Connect {
            host: need(&args.host, "--host")?,
            port: args.port.unwrap_or(443),
            ip: args.ip,
        },
        "http_request" => {
            let url = need(&args.url, "--url")?;
            let (host, path) = split_url(&url)?;
            Action::HttpRequest {
                host,
                path,
                method: args.method.clone().unwrap_or_else(|| "GET".into()),
            }
        }
        "git_push" => Action::GitPush {
            remote: need(&args.remote, "--remote")?,
            repo: args.repo.clone().unwrap_or_default(),
            branch: need(&args.branch, "--branch")?,
        },
        "inference" => {
            let (provider, model) = pair(&args.model, "--model")?;
            Action::Inference { provider, model }
        }
        "mcp_tool_call" => {
            let (server, tool) = pair(&args.tool, "--tool")?;
            Action::McpToolCall { server, tool }
        }
        "exec" => Action::Exec {
            path: need(&args.path, "--path")?,
        },
        "read" => Action::Read {
            path: need(&args.path, "--path")?,
        },
        "write" => Action::Write {
            path: need(&args.path, "--path")?,
        },
        other => bail!(
            "unknown action {other:?}: use one of {}",
            ACTION_NAMES.join(", ")
        ),
    })
}

/// Splits `scheme://host[:port]/path?query` into host and path (query dropped).
fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .with_context(|| format!("--url {url:?} must be absolute, like https://host/path"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    if host.is_empty() {
        bail!("--url {url:?} has no host");
    }
    Ok((host.to_string(), path.to_string()))
}
