//! User namespaces: who the sandbox's processes are on the host.
//!
//! Threat model: a process in the sandbox may believe anything about its own ids, but the host
//! only ever sees the single unprivileged uid/gid the maps below name. As an unprivileged
//! caller that is the caller itself (the kernel allows nothing else); as root it is a
//! configurable unprivileged uid, never 0, and the workspace is given an id-mapped mount so
//! files the sandbox writes still belong to the workspace's owner.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::SandboxError;
use crate::plan::{Identity, MountStep, SandboxPlan};
use crate::sys::{self, Forked};

/// Writes the uid/gid maps of the sandbox process `pid`: the inside ids map to the host ids
/// of `identity`, and nothing else is mapped.
pub fn write_id_maps(pid: i32, identity: &Identity) -> Result<(), SandboxError> {
    let proc_dir = format!("/proc/{pid}");
    if !identity.host_root {
        // An unprivileged caller may only map its own gid after giving up setgroups.
        write_proc(&proc_dir, "setgroups", "deny")?;
    }
    write_proc(
        &proc_dir,
        "uid_map",
        &format!("{} {} 1\n", identity.inside_uid, identity.host_uid),
    )?;
    write_proc(
        &proc_dir,
        "gid_map",
        &format!("{} {} 1\n", identity.inside_gid, identity.host_gid),
    )
}

fn write_proc(proc_dir: &str, file: &'static str, content: &str) -> Result<(), SandboxError> {
    fs::write(format!("{proc_dir}/{file}"), content)
        .map_err(|source| SandboxError::IdMap { file, source })
}

/// Whether the calling process is root in the initial user namespace (and so may create
/// id-mapped mounts and run sandboxes as another uid).
pub fn is_host_root() -> bool {
    nix::unistd::geteuid().is_root()
        && fs::read_to_string("/proc/self/uid_map")
            .map(|map| map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
            .unwrap_or(false)
}

/// Id-mapped copies of every writable tree of `plan` (the workspace and `--write` paths) whose
/// owner is not the sandbox's host uid, when corral runs as root: the sandbox's uid then acts
/// as the owner, and files it creates belong to the owner on the host. Empty when corral is
/// not root (the sandbox then is the caller, who owns or may write these paths already).
pub fn idmapped_trees(plan: &SandboxPlan) -> Result<HashMap<PathBuf, OwnedFd>, SandboxError> {
    let mut trees = HashMap::new();
    if !plan.identity.host_root {
        return Ok(trees);
    }
    let writable = plan.mounts.iter().filter_map(|step| match step {
        MountStep::ReadWrite { source, .. } => Some(source),
        _ => None,
    });
    for path in std::iter::once(&plan.workspace).chain(writable) {
        if let Some(tree) = idmapped_tree(path, &plan.identity)? {
            trees.insert(path.clone(), tree);
        }
    }
    Ok(trees)
}

/// Whether an id-mapped mount of `dir` (owned by root) can be made for host uid 65534: what
/// `corral run` needs as root to let the sandbox write a root-owned workspace.
pub fn probe_idmapped_mount(dir: &Path) -> Result<(), SandboxError> {
    idmapped_tree(dir, &Identity::from_root(65534, 65534)).map(drop)
}

/// An id-mapped copy of `path`, or `None` when its owner already is the sandbox's uid.
fn idmapped_tree(path: &Path, identity: &Identity) -> Result<Option<OwnedFd>, SandboxError> {
    let workspace = path;
    let meta = fs::metadata(workspace).map_err(|source| SandboxError::IdmappedWorkspace {
        path: workspace.to_path_buf(),
        source,
    })?;
    if !identity.host_root || (meta.uid() == identity.host_uid && meta.gid() == identity.host_gid) {
        return Ok(None);
    }
    let fail = |source| SandboxError::IdmappedWorkspace {
        path: workspace.to_path_buf(),
        source,
    };
    let userns = mapping_namespace(meta.uid(), identity.host_uid, meta.gid(), identity.host_gid)
        .map_err(fail)?;
    let tree = sys::open_tree_clone(workspace).map_err(fail)?;
    let attrs = sys::MOUNT_ATTR_IDMAP | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    sys::mount_setattr(
        std::os::fd::AsRawFd::as_raw_fd(&tree),
        Path::new(""),
        attrs,
        Some(std::os::fd::AsRawFd::as_raw_fd(&userns)),
    )
    .map_err(fail)?;
    Ok(Some(tree))
}

/// A user namespace whose maps send `owner_uid`/`owner_gid` (on disk) to
/// `sandbox_uid`/`sandbox_gid` (the sandbox's host ids), for an id-mapped mount.
fn mapping_namespace(
    owner_uid: u32,
    sandbox_uid: u32,
    owner_gid: u32,
    sandbox_gid: u32,
) -> std::io::Result<OwnedFd> {
    let (hold_read, hold_write) = nix::unistd::pipe()?;
    match sys::clone_into_namespaces(libc::CLONE_NEWUSER)? {
        Forked::Child => {
            // Hold the namespace open until the parent has taken a reference, then leave.
            drop(hold_write);
            let mut byte = [0u8; 1];
            let _ = fs::File::from(hold_read).read(&mut byte);
            sys::exit_now(0);
        }
        Forked::Parent(pid) => {
            drop(hold_read);
            let result = (|| {
                let dir = format!("/proc/{pid}");
                fs::write(
                    format!("{dir}/uid_map"),
                    format!("{owner_uid} {sandbox_uid} 1\n"),
                )?;
                fs::write(format!("{dir}/setgroups"), "deny")?;
                fs::write(
                    format!("{dir}/gid_map"),
                    format!("{owner_gid} {sandbox_gid} 1\n"),
                )?;
                Ok(OwnedFd::from(fs::File::open(format!("{dir}/ns/user"))?))
            })();
            drop(hold_write);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            result
        }
    }
}
