//! Landlock: the last word on which paths the command may read, write and execute.
//!
//! Threat model: the mount namespace already limits what exists inside the sandbox; Landlock
//! adds a second, independent wall that survives a mount mistake, narrows writes to the
//! workspace, /tmp and (by profile) home, and turns a profile's exec allowlist into a kernel
//! rule. The ruleset is built for the newest ABI corral knows and degrades to what the kernel
//! offers; any degradation is reported, never silent.

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, LandlockStatus, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};
use std::path::PathBuf;

use crate::error::SandboxError;
use crate::plan::LandlockPlan;

/// The ABI corral's rules are written for (V6 adds signal and abstract-socket scoping).
const TARGET_ABI: ABI = ABI::V6;

/// Device files every command may read and write.
const WRITABLE_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/pts",
];

/// What applying the rules achieved, for a warning on stderr when it is less than full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LandlockOutcome {
    /// Every rule is enforced at the target ABI.
    Full,
    /// Rules are enforced, but the kernel's ABI lacks some rights (named in the message).
    Partial(String),
    /// The kernel has no usable Landlock; nothing is enforced by it.
    None(String),
}

/// Restricts the calling thread (and everything it later executes) to `plan`.
pub fn restrict(plan: &LandlockPlan) -> Result<LandlockOutcome, SandboxError> {
    let err = |e: landlock::RulesetError| SandboxError::Landlock(e.to_string());
    let all = AccessFs::from_all(TARGET_ABI);
    let read = AccessFs::from_read(TARGET_ABI) & !AccessFs::Execute;
    let write = all & !AccessFs::Execute;
    let exec_anything = plan.exec.is_none();
    let with_exec = |access| {
        if exec_anything {
            access | AccessFs::Execute
        } else {
            access
        }
    };
    // Truncate: shells open `>/dev/null` with O_TRUNC.
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .map_err(err)?
        .scope(Scope::from_all(TARGET_ABI))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(existing(&plan.read), with_exec(read)))
        .map_err(err)?
        .add_rules(path_beneath_rules(existing(&plan.write), with_exec(write)))
        .map_err(err)?
        .add_rules(path_beneath_rules(WRITABLE_DEVICES, device))
        .map_err(err)?
        .add_rules(path_beneath_rules(["/dev/shm"], write))
        .map_err(err)?
        // Directory listings anywhere (only what the mount namespace shows exists at all);
        // reading a file still needs a read rule.
        .add_rules(path_beneath_rules(["/"], AccessFs::ReadDir))
        .map_err(err)?;
    if let Some(exec) = &plan.exec {
        let exec_rights = AccessFs::Execute | AccessFs::ReadFile | AccessFs::ReadDir;
        ruleset = ruleset
            .add_rules(path_beneath_rules(existing(exec), exec_rights))
            .map_err(err)?;
    }
    let status = ruleset.restrict_self().map_err(err)?;
    Ok(outcome(status.ruleset, status.landlock))
}

fn existing(paths: &[PathBuf]) -> impl Iterator<Item = &PathBuf> {
    paths.iter().filter(|p| p.exists())
}

fn outcome(ruleset: RulesetStatus, landlock: LandlockStatus) -> LandlockOutcome {
    let abi = match landlock {
        LandlockStatus::Available { effective_abi, .. } => format!("{effective_abi:?}"),
        LandlockStatus::NotEnabled => "none (Landlock is built in but not enabled at boot: add `lsm=landlock,...` to the kernel command line)".into(),
        LandlockStatus::NotImplemented => "none (this kernel is built without Landlock)".into(),
    };
    match ruleset {
        RulesetStatus::FullyEnforced => LandlockOutcome::Full,
        RulesetStatus::PartiallyEnforced => LandlockOutcome::Partial(format!(
            "Landlock ABI {abi} is older than {TARGET_ABI:?}: file rules are enforced, but newer rights (truncate, device ioctl, signal and abstract-socket scoping) are not"
        )),
        RulesetStatus::NotEnforced => LandlockOutcome::None(format!(
            "Landlock is unavailable, ABI {abi}: the sandbox relies on its mount namespace, seccomp and no_new_privs alone"
        )),
    }
}
