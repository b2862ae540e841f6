//! corral's gateway, the server behind `corral up`: its configuration, its store (SQLite), who
//! may call it (API tokens, passwords, a trusted auth proxy's header) and the HTTP API under
//! `/api/v1`, and the web page at `/` (sign in, session picker, terminal, activity, admin).
//!
//! Sandboxes run on the native runtime ([`runtime`]): one detached `corral run` process each,
//! which outlives the gateway and is adopted again when it restarts; a repo session's first
//! start clones its repo inside the sandbox; terminals attach over a WebSocket and files are
//! copied as tar streams confined to the workspace. Sandboxes run an agent template
//! ([`agents`]) or a custom command; their ports are reached at session hosts through
//! [`ingress`], which also starts stopped sandboxes on request and stops idle ones. Optional
//! HTTPS: [`tls`].
//!
//! ```no_run
//! use corral_gateway::{AdminBootstrap, Config, ConfigLayer};
//!
//! let config = Config::load(None, |k| std::env::var(k).ok(), ConfigLayer::default())?;
//! corral_gateway::run(config, |ready| {
//!     println!("corral gateway: {}", ready.url);
//!     if let AdminBootstrap::Created { token, .. } = &ready.admin {
//!         println!("admin token: {}", token.expose());
//!     }
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod agents;
mod api;
pub mod auth;
pub mod config;
mod connections;
pub mod git_tokens;
mod hop_by_hop;
pub mod inference;
pub mod ingress;
pub mod public_url;
pub mod runtime;
mod server;
pub mod store;
pub mod tls;
pub mod validate;
mod web;

pub use config::{Config, ConfigError, ConfigLayer, LogFormat, Secret};
pub use server::{AdminBootstrap, GatewayError, Ready, init_logging, run};
