//! `corral`: the command-line interface. Parses arguments and hands each subcommand to its
//! module; no logic lives here.

#![forbid(unsafe_code)]

mod account_cmd;
mod audit_cmd;
mod client;
mod connect_cmd;
mod cp_cmd;
mod doctor_cmd;
mod egress;
mod inference_cmd;
mod policy_cmd;
mod run_cmd;
mod sandbox_cmd;
mod scratch;
mod table;
mod up_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sandboxes for AI coding agents: every file, process, network and git-push action is decided
/// by policy.
#[derive(Parser)]
#[command(name = "corral", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command in a one-shot sandbox (exit status is the command's; 125 = corral failed).
    Run(Box<run_cmd::RunArgs>),
    /// Report what this kernel and user allow, and what `corral run` does without each.
    Doctor,
    /// Validate, show and query policy profiles.
    Policy(policy_cmd::PolicyArgs),
    /// Print recorded policy decisions, newest last (-f follows).
    Audit(audit_cmd::AuditArgs),
    /// Run the gateway: the HTTP API for users and sandboxes, which it starts and stops.
    Up(Box<up_cmd::UpArgs>),
    /// Save a gateway's URL and an API token for the commands below.
    Login(account_cmd::LoginArgs),
    /// A gateway's sandboxes: create, list, get, start, stop, delete, exec, logs, connect, cp.
    Sandbox(sandbox_cmd::SandboxArgs),
    /// A gateway's users (admins): add, list.
    User(account_cmd::UserArgs),
    /// Your API tokens: create, list, revoke.
    Token(account_cmd::TokenArgs),
    /// A gateway's model providers (admins): add, list, remove.
    Provider(inference_cmd::ProviderArgs),
    /// Inference usage: tokens per day, user, sandbox, provider and model.
    Usage(inference_cmd::UsageArgs),
    /// Users' inference budgets (admins set them): set, show.
    Budget(inference_cmd::BudgetArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_cmd::run(*args),
        Command::Doctor => doctor_cmd::run(),
        Command::Policy(args) => policy_cmd::run(args),
        Command::Audit(args) => audit_cmd::run(args),
        Command::Up(args) => up_cmd::run(*args),
        Command::Login(args) => account_cmd::login(args),
        Command::Sandbox(args) => sandbox_cmd::run(args),
        Command::User(args) => account_cmd::user(args),
        Command::Token(args) => account_cmd::token(args),
        Command::Provider(args) => inference_cmd::provider(args),
        Command::Usage(args) => inference_cmd::usage(args),
        Command::Budget(args) => inference_cmd::budget(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("corral: {e:#}");
        ExitCode::from(run_cmd::CORRAL_FAILED)
    })
}
