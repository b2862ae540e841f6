//! corral's sandbox: a one-shot Linux sandbox built from a validated [`SandboxPlan`].
//!
//! A sandbox is a set of fresh namespaces (user, pid, mount, network, UTS, IPC and cgroup)
//! whose first process, the supervisor, assembles a new root from read-only binds of the host,
//! the workspace and fresh `/tmp`, home, `/dev` and `/proc`, then starts the command under
//! Landlock, seccomp, `no_new_privs`, no capabilities and cgroup limits. The host sees only one
//! unprivileged uid.
//!
//! This crate does not decide policy (the policy crate does) and does not talk to the network
//! (the egress proxy does); it carries out a plan. All `unsafe` code lives in `sys`.
//!
//! ```no_run
//! use corral_sandbox::{PlanInput, launch};
//! let plan = PlanInput {
//!     command: vec!["make".into(), "test".into()],
//!     workspace: "/home/me/project".into(),
//!     read_only: vec!["/usr".into(), "/etc".into()],
//!     ..PlanInput::default()
//! }
//! .build()?;
//! let exit_code = launch::run(&plan, &mut |warning| eprintln!("corral: warning: {warning}"))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bridge;
pub mod cgroup;
mod command;
pub mod control;
pub mod env;
pub mod error;
mod execs;
mod ingress;
pub mod landlock;
pub mod launch;
mod mounts;
pub mod plan;
pub mod probe;
mod relay;
pub mod seccomp;
mod supervisor;
mod sys;
pub mod userns;

pub use error::{PlanError, SandboxError};
pub use plan::{Identity, Limits, PlanInput, SandboxPlan};
pub use probe::HostReport;
pub use supervisor::SETUP_FAILED;
