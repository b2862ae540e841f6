//! `corral login`, `corral user ...` and `corral token ...`: who talks to the gateway, and
//! with which token.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{self, Client, Credentials};
use crate::table;

/// Arguments of `corral login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The gateway's URL, e.g. http://127.0.0.1:7070.
    #[arg(long, env = "CORRAL_URL")]
    url: String,
    /// An API token (`corral up` prints the first one; `corral token create` makes more).
    #[arg(long, env = "CORRAL_TOKEN", hide_env_values = true)]
    token: String,
}

/// Checks the token against the gateway, then saves URL and token (0600).
pub fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.url, &args.token)?;
    let me = client.get("/api/v1/me")?;
    let path = client::save(&Credentials {
        url: args.url.trim_end_matches('/').to_string(),
        token: args.token,
    })?;
    println!(
        "logged in to {} as {} ({}); saved in {}",
        args.url,
        me["email"].as_str().unwrap_or("?"),
        me["role"].as_str().unwrap_or("?"),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `corral user`.
#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
    /// Print the gateway's JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Add a user (admins); prints the new user's first token, once.
    Add {
        /// Their email.
        email: String,
        /// Make them an admin.
        #[arg(long)]
        admin: bool,
    },
    /// List users (admins).
    List,
}

/// Runs `corral user`.
pub fn user(args: UserArgs) -> anyhow::Result<ExitCode> {
    let client = Client::from_environment()?;
    match args.command {
        UserCommand::Add { email, admin } => {
            let role = if admin { "admin" } else { "user" };
            let created = client.post("/api/v1/users", &json!({ "email": email, "role": role }))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!(
                    "added {} ({role}); their token (shown once):\n{}",
                    table::cell(&created["user"]["email"]),
                    table::cell(&created["token"]["token"])
                );
            }
        }
        UserCommand::List => {
            let users = client.get("/api/v1/users")?;
            table::print_list(&users, &["email", "role", "created"], args.json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `corral token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    /// Print the gateway's JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token for yourself (or, as an admin, for --user); prints it once.
    Create {
        /// What it is for, e.g. "laptop".
        #[arg(long, default_value = "cli")]
        name: String,
        /// Whose token (admins only).
        #[arg(long)]
        user: Option<String>,
    },
    /// List your tokens (never their values).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token's id (see `corral token list`).
        id: i64,
    },
}

/// Runs `corral token`.
pub fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let client = Client::from_environment()?;
    match args.command {
        TokenCommand::Create { name, user } => {
            let mut body = json!({ "name": name });
            if let Some(user) = user {
                body["user"] = Value::String(user);
            }
            let created = client.post("/api/v1/tokens", &body)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!(
                    "token {} ({}), shown once:\n{}",
                    table::cell(&created["id"]),
                    table::cell(&created["name"]),
                    table::cell(&created["token"])
                );
            }
        }
        TokenCommand::List => {
            let tokens = client.get("/api/v1/tokens")?;
            table::print_list(&tokens, &["id", "name", "created"], args.json)?;
        }
        TokenCommand::Revoke { id } => {
            client.delete(&format!("/api/v1/tokens/{id}"))?;
            println!("revoked token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
