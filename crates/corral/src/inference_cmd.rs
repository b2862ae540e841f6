//! `corral provider ...`, `corral usage` and `corral budget ...`: the model providers a
//! gateway routes sandboxes' inference to, what they used, and how much they may.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::client::Client;
use crate::table;

/// Arguments of `corral provider`.
#[derive(Args, Debug)]
pub struct ProviderArgs {
    #[command(subcommand)]
    command: ProviderCommand,
    /// Print the gateway's JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum ProviderCommand {
    /// Add a provider (admins). The key is read here and sealed by the gateway; it is never
    /// shown again and never reaches a sandbox.
    Add {
        /// Its name: what policies (`NAME/model`) and the sandbox's URLs use.
        name: String,
        /// anthropic, openai or openai-compatible (vLLM, LM Studio, Ollama, llama.cpp).
        #[arg(long)]
        kind: String,
        /// The API's root, e.g. https://api.anthropic.com or http://10.0.0.5:8000.
        #[arg(long)]
        base_url: String,
        /// Read the key from this environment variable.
        #[arg(
            long,
            value_name = "VAR",
            conflicts_with = "key_file",
            required_unless_present = "key_file"
        )]
        key_env: Option<String>,
        /// Read the key from this file.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// The base URL is a loopback, private or link-local address (a local server).
        #[arg(long)]
        allow_private: bool,
        /// A model alias: ALIAS=MODEL (the name asked for → the name sent); repeatable.
        #[arg(long = "alias", value_name = "ALIAS=MODEL")]
        aliases: Vec<String>,
    },
    /// List providers (admins); keys are never shown.
    List,
    /// Remove a provider (admins).
    Remove {
        /// Its name.
        name: String,
    },
}

/// Runs `corral provider`.
pub fn provider(args: ProviderArgs) -> anyhow::Result<ExitCode> {
    let client = Client::from_environment()?;
    match args.command {
        ProviderCommand::Add {
            name,
            kind,
            base_url,
            key_env,
            key_file,
            allow_private,
            aliases,
        } => {
            let key = read_key(key_env.as_deref(), key_file.as_ref())?;
            let mut alias_map = BTreeMap::new();
            for alias in &aliases {
                let (from, to) = alias
                    .split_once('=')
                    .with_context(|| format!("--alias {alias}: use ALIAS=MODEL"))?;
                alias_map.insert(from.to_string(), to.to_string());
            }
            let body = json!({
                "name": name, "kind": kind, "base_url": base_url, "key": key,
                "allow_private": allow_private, "aliases": alias_map,
            });
            let added = client.post("/api/v1/providers", &body)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&added)?);
            } else {
                println!(
                    "added provider {} ({}, {}); new sandboxes get its settings",
                    table::cell(&added["name"]),
                    table::cell(&added["kind"]),
                    table::cell(&added["base_url"])
                );
            }
        }
        ProviderCommand::List => {
            let providers = client.get("/api/v1/providers")?;
            table::print_list(
                &providers,
                &["name", "kind", "base_url", "allow_private", "aliases"],
                args.json,
            )?;
        }
        ProviderCommand::Remove { name } => {
            client.delete(&format!("/api/v1/providers/{name}"))?;
            println!("removed provider {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The key from `--key-env` or `--key-file`; errors name the source, never the key.
fn read_key(env: Option<&str>, file: Option<&PathBuf>) -> anyhow::Result<String> {
    let key = match (env, file) {
        (Some(name), _) => std::env::var(name)
            .with_context(|| format!("--key-env {name}: the variable {name} is not set"))?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("--key-file {}: cannot read it", path.display()))?,
        (None, None) => bail!("give the key with --key-env VAR or --key-file FILE"),
    };
    Ok(key.trim().to_string())
}

/// Arguments of `corral usage`.
#[derive(Args, Debug)]
pub struct UsageArgs {
    /// Print the gateway's JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `corral usage`: tokens per day, user, sandbox, provider and model (yours; an
/// admin's: everyone's).
pub fn usage(args: UsageArgs) -> anyhow::Result<ExitCode> {
    let client = Client::from_environment()?;
    let rows = client.get("/api/v1/usage")?;
    table::print_list(
        &rows,
        &[
            "day",
            "user",
            "sandbox",
            "provider",
            "model",
            "requests",
            "input_tokens",
            "output_tokens",
        ],
        args.json,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `corral budget`.
#[derive(Args, Debug)]
pub struct BudgetArgs {
    #[command(subcommand)]
    command: BudgetCommand,
}

#[derive(Subcommand, Debug)]
enum BudgetCommand {
    /// Set (replace) a user's inference budget (admins); limits not given are removed.
    Set {
        /// The user's email.
        email: String,
        /// Input plus output tokens per UTC day.
        #[arg(long)]
        tokens_per_day: Option<i64>,
        /// Input plus output tokens per UTC month.
        #[arg(long)]
        tokens_per_month: Option<i64>,
        /// Requests per UTC day.
        #[arg(long)]
        requests_per_day: Option<i64>,
        /// Requests per UTC month.
        #[arg(long)]
        requests_per_month: Option<i64>,
        /// Requests per minute from any one of the user's sandboxes.
        #[arg(long)]
        sandbox_requests_per_minute: Option<i64>,
    },
    /// Show a user's budget.
    Show {
        /// The user's email.
        email: String,
    },
}

/// Runs `corral budget`.
pub fn budget(args: BudgetArgs) -> anyhow::Result<ExitCode> {
    let client = Client::from_environment()?;
    let budget = match args.command {
        BudgetCommand::Set {
            email,
            tokens_per_day,
            tokens_per_month,
            requests_per_day,
            requests_per_month,
            sandbox_requests_per_minute,
        } => client.put(
            &format!("/api/v1/budgets/{email}"),
            &json!({
                "tokens_per_day": tokens_per_day, "tokens_per_month": tokens_per_month,
                "requests_per_day": requests_per_day, "requests_per_month": requests_per_month,
                "sandbox_requests_per_minute": sandbox_requests_per_minute,
            }),
        )?,
        BudgetCommand::Show { email } => client.get(&format!("/api/v1/budgets/{email}"))?,
    };
    println!("{}", serde_json::to_string_pretty(&budget)?);
    Ok(ExitCode::SUCCESS)
}
