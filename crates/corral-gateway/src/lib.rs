//! corral's gateway, the server behind `corral up`: its configuration, its store (SQLite), who
//! may call it (API tokens, passwords, a trusted auth proxy's header) and the HTTP API under
//! `/api/v1`.
//!
//! What it does not do yet: start sandboxes. A sandbox created through the API is recorded
//! (state `stopped`); running, cloning, exec and attach belong to the runtime, which is later
//! work.
#![forbid(unsafe_code)]

pub mod config;
pub mod store;
pub mod validate;

pub use config::{Config, ConfigError, ConfigLayer, LogFormat, Secret};
