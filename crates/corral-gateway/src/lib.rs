//! corral's gateway, the server behind `corral up`: its configuration, its store (SQLite), who
//! may call it (API tokens, passwords, a trusted auth proxy's header) and the HTTP API under
//! `/api/v1`.
//!
//! What it does not do yet: start sandboxes. A sandbox created through the API is recorded
//! (state `stopped`); running, cloning, exec and attach belong to the runtime, which is later
//! work.
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

mod api;
pub mod auth;
pub mod config;
mod server;
pub mod store;
pub mod validate;

pub use config::{Config, ConfigError, ConfigLayer, LogFormat, Secret};
pub use server::{AdminBootstrap, GatewayError, Ready, init_logging, run};
