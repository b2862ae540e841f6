//! corral's policy: profiles in TOML, compiled to Cedar, and the one `decide` every part of
//! corral calls.
//!
//! A [`Profile`] is what a person writes and reviews. It gives the sandbox its static kernel
//! settings (filesystem, exec, resources) and compiles to Cedar policies (see
//! `corral policy show restricted --cedar`) validated against `profiles/corral.cedarschema`.
//! A [`PolicyEngine`] decides [`Request`]s; a [`PolicyHandle`] swaps in an edited profile
//! while sandboxes run; an [`AuditEvent`] records every decision.
//!
//! This crate does not enforce anything itself: the sandbox, the egress proxy and the gateway
//! ask it and act on the answer.
//!
//! ```
//! use corral_policy::{Action, PolicyEngine, Request, SandboxIdentity};
//!
//! let engine = PolicyEngine::builtin("restricted").unwrap();
//! let push = |branch: &str| Request {
//!     sandbox: SandboxIdentity::default(),
//!     action: Action::GitPush { remote: "github.com".into(), repo: "acme/app".into(), branch: branch.into() },
//! };
//! assert!(engine.decide(&push("ai/fix-tests")).allowed);
//! let denied = engine.decide(&push("main"));
//! assert!(!denied.allowed);
//! assert_eq!(denied.reasons, ["restricted/git/push-deny:main"]);
//! ```
#![forbid(unsafe_code)]

mod audit;
mod compile;
mod decide;
mod error;
mod profile;
mod reload;
mod rules;
mod size;
mod traffic;

pub use audit::{AuditEvent, AuditLog, AuditLogError};
pub use compile::{CompiledPolicy, SANDBOX_HOME, WORKSPACE, compile};
pub use decide::{
    ACTION_NAMES, Action, DEFAULT_DENY, Decision, EVALUATION_ERROR, PolicyEngine, Request,
    SCHEMA_TEXT, SandboxIdentity,
};
pub use error::PolicyError;
pub use profile::{
    CedarFile, ExecRules, FilesystemRules, GitRules, HttpRules, Mode, NetworkRules, PairRules,
    Profile, Resources, builtin_names,
};
pub use reload::{PolicyHandle, ProfileWatcher, Reloaded};
pub use rules::{
    HostPattern, HostRule, HttpRule, NON_PUBLIC_NETWORKS, PairPattern, PortRange, PrivateGrant,
    PushRule, glob_matches, is_non_public, normalize_host,
};
pub use size::{format_size, parse_size};
pub use traffic::{TrafficLog, TrafficLogError, TrafficRecord};
