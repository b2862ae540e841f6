//! What this kernel and user allow, for `corral doctor` and for clear errors.

use std::fs;

use crate::cgroup::{CgroupLayout, Hierarchy};
use crate::sys::{self, Forked};

/// One capability of the host, checked.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Whether it is usable.
    pub available: bool,
    /// What was found (version, path, error).
    pub detail: String,
    /// What `corral run` does without it.
    pub without: &'static str,
    /// Whether corral refuses to run without it.
    pub required: bool,
}

/// Everything `corral doctor` reports.
#[derive(Debug, Clone)]
pub struct HostReport {
    /// One entry per capability.
    pub checks: Vec<Check>,
}

impl HostReport {
    /// Probes the running host. Forks briefly (to try a user namespace), so call it while
    /// single-threaded.
    pub fn probe() -> Self {
        let mut checks = vec![user_namespaces(), landlock(), seccomp()];
        checks.extend(cgroups());
        if crate::userns::is_host_root() {
            checks.push(idmapped_mounts());
        }
        Self { checks }
    }

    /// Whether everything corral requires is present.
    pub fn ready(&self) -> bool {
        self.checks.iter().all(|c| c.available || !c.required)
    }
}

fn user_namespaces() -> Check {
    let result = match sys::clone_into_namespaces(libc::CLONE_NEWUSER) {
        Ok(Forked::Child) => sys::exit_now(0),
        Ok(Forked::Parent(pid)) => {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            Ok(())
        }
        Err(e) => Err(e),
    };
    Check {
        name: "user namespaces",
        available: result.is_ok(),
        detail: match &result {
            Ok(()) => "can be created by this user".into(),
            Err(e) => format!(
                "cannot be created: {e}; enable them with `sysctl -w user.max_user_namespaces=15000` (and `kernel.unprivileged_userns_clone=1` where that exists)"
            ),
        },
        without: "corral run refuses to start (exit 125): every other layer builds on them",
        required: true,
    }
}

fn landlock() -> Check {
    let abi = sys::landlock_abi();
    Check {
        name: "Landlock",
        available: abi.is_ok(),
        detail: match &abi {
            Ok(v) if *v >= 6 => format!("ABI {v}: every rule corral writes is enforced"),
            Ok(v) => format!(
                "ABI {v}: file rules are enforced; rights of newer ABIs (6 adds signal and abstract-socket scoping) are not"
            ),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                "built in but not enabled: add landlock to the `lsm=` kernel parameter".into()
            }
            Err(e) => format!("not available: {e}"),
        },
        without: "corral run warns and relies on the mount namespace, seccomp and no_new_privs; exec allowlists are not enforced",
        required: false,
    }
}

fn seccomp() -> Check {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let available = status.lines().any(|l| l.starts_with("Seccomp:"));
    Check {
        name: "seccomp",
        available,
        detail: if available {
            "filter mode available".into()
        } else {
            "not built into this kernel".into()
        },
        without: "corral run refuses to start: the syscall filter is part of the sandbox",
        required: true,
    }
}

fn cgroups() -> Vec<Check> {
    let layout = CgroupLayout::detect();
    let writable = layout.writability();
    ["memory", "pids", "cpu"]
        .into_iter()
        .map(|controller| {
            let location = layout.controllers.iter().find(|c| c.controller == controller);
            let status = writable.iter().find(|(c, _)| *c == controller).map(|(_, r)| r.clone());
            let (available, detail) = match (location, status) {
                (None, _) => (false, "controller not mounted".to_string()),
                (Some(location), Some(Ok(()))) => (true, format!("{} at {}, writable", version(&location.hierarchy), location.parent.display())),
                (Some(location), Some(Err(e))) => (false, format!("{} but not writable by this user ({e}): run as root or delegate a cgroup to this user", version(&location.hierarchy))),
                (Some(location), None) => (false, version(&location.hierarchy).to_string()),
            };
            Check {
                name: match controller {
                    "memory" => "cgroup memory",
                    "pids" => "cgroup pids",
                    _ => "cgroup cpu",
                },
                available,
                detail,
                without: match controller {
                    "pids" => "corral run warns; the process limit is still enforced per sandbox with RLIMIT_NPROC",
                    "memory" => "corral run warns and runs without a memory limit",
                    _ => "corral run warns and runs without a CPU quota",
                },
                required: false,
            }
        })
        .collect()
}

fn idmapped_mounts() -> Check {
    let dir = std::env::temp_dir().join(format!("corral-idmap-probe-{}", std::process::id()));
    let result = fs::create_dir(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| crate::userns::probe_idmapped_mount(&dir).map_err(|e| e.to_string()));
    let _ = fs::remove_dir(&dir);
    Check {
        name: "id-mapped mounts",
        available: result.is_ok(),
        detail: match &result {
            Ok(()) => format!("supported on {}", std::env::temp_dir().display()),
            Err(e) => e.clone(),
        },
        without: "as root, corral run cannot give the sandbox a workspace owned by another uid: run it as the workspace's owner",
        required: false,
    }
}

fn version(hierarchy: &Hierarchy) -> &'static str {
    match hierarchy {
        Hierarchy::V1(_) => "cgroup v1",
        Hierarchy::V2(_) => "cgroup v2",
    }
}
