//! The sandbox's filesystem: a new root assembled from the plan inside a private mount
//! namespace, then `pivot_root` into it and the old root detached.
//!
//! Threat model: nothing of the host is reachable except what the plan binds, and binds are
//! read-only unless the plan says otherwise; every mount is nosuid and nodev except the few
//! device nodes bound into `/dev`. Mount propagation is private, so nothing done here leaks
//! back to the host. Runs in the sandbox's first process, which holds every capability of the
//! new user namespace (and none on the host).
//!
//! Paths inside writable trees (the workspace above all) can change while the root is being
//! built: another sandbox on the same workspace may be running. Everything mounted onto such a
//! path (protected files, hidden credentials) is therefore opened once, with no symlink
//! followed, and mounted through that descriptor, so a symlink swapped in cannot redirect the
//! mount, nor make a host path appear inside.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::error::SandboxError;
use crate::plan::{MountStep, SandboxPlan, WORKSPACE_DIR};
use crate::sys;

/// The staging tmpfs: holds the new root and the few files bound into it.
const STAGING: &str = "/tmp";
/// Where the new root is built.
const NEW_ROOT: &str = "/tmp/newroot";
/// An empty file with no permissions, bound over hidden files.
const HIDDEN_FILE: &str = "/tmp/hidden";
/// An empty, read-only, inaccessible tmpfs, bound over hidden directories.
const HIDDEN_DIR: &str = "/tmp/hidden-dir";

/// Device nodes bound from the host's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

type Result<T> = std::result::Result<T, SandboxError>;

fn mount_err(
    step: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(nix::Error) -> SandboxError {
    let path = path.into();
    move |e| SandboxError::Mount {
        step,
        path,
        source: e.into(),
    }
}

fn io_err(
    step: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.into();
    move |source| SandboxError::Mount { step, path, source }
}

/// The new root's path for an absolute inside path.
fn staged(inside: &Path) -> PathBuf {
    Path::new(NEW_ROOT).join(inside.strip_prefix("/").unwrap_or(inside))
}

/// Detached copies of every host tree the sandbox shows, taken before the process gives up
/// the caller's host uid.
pub struct Sources {
    binds: HashMap<PathBuf, (OwnedFd, bool)>,
    workspace: OwnedFd,
    devices: Vec<(&'static str, OwnedFd)>,
    egress: Option<OwnedFd>,
}

/// Makes every mount private (nothing propagates back to the host), then takes a detached,
/// restricted copy of each host path the plan binds. `mapped_trees` holds the id-mapped copies
/// the host prepared (when corral runs as root); they are used instead of plain copies.
pub fn open_sources(
    plan: &SandboxPlan,
    mut mapped_trees: HashMap<PathBuf, OwnedFd>,
) -> Result<Sources> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(mount_err("make private", "/"))?;
    let mut binds = HashMap::new();
    for step in &plan.mounts {
        let (source, writable) = match step {
            MountStep::ReadOnly { source, .. } => (source, false),
            MountStep::ReadWrite { source, .. } => (source, true),
            _ => continue,
        };
        let tree = match mapped_trees.remove(source) {
            Some(tree) => tree,
            None => match detached_copy(source, writable) {
                // Removed since the plan was made (a user's home deleted meanwhile): there is
                // nothing left to show, so the sandbox goes without it. A writable bind is
                // what the caller asked to work in, so its loss stays an error.
                Err(SandboxError::Mount { source: e, .. })
                    if !writable && e.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue;
                }
                copied => copied?,
            },
        };
        binds.insert(source.clone(), (tree, source.is_dir()));
    }
    let workspace = match mapped_trees.remove(&plan.workspace) {
        Some(tree) => tree,
        None => detached_copy(&plan.workspace, true)?,
    };
    let mut devices = Vec::new();
    for name in DEVICES {
        // Device nodes are the one place where nodev cannot apply.
        let device =
            detached_copy_with(&Path::new("/dev").join(name), true, sys::MOUNT_ATTR_NOSUID)?;
        devices.push((*name, device));
    }
    let egress = match &plan.egress_socket {
        Some(socket) => Some(detached_copy(socket, true)?),
        None => None,
    };
    Ok(Sources {
        egress,
        binds,
        workspace,
        devices,
    })
}

/// A detached copy of the mount tree at `path`, nosuid and nodev, read-only unless `writable`.
fn detached_copy(path: &Path, writable: bool) -> Result<OwnedFd> {
    detached_copy_with(
        path,
        writable,
        sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
    )
}

/// A detached copy of the mount tree at `path` with `attrs` set, plus read-only unless
/// `writable`.
fn detached_copy_with(path: &Path, writable: bool, attrs: u64) -> Result<OwnedFd> {
    let tree = sys::open_tree_clone(path).map_err(io_err("take a copy of", path))?;
    let mut attrs = attrs;
    if !writable {
        attrs |= sys::MOUNT_ATTR_RDONLY;
    }
    sys::mount_setattr(tree.as_raw_fd(), Path::new(""), attrs, None)
        .map_err(io_err("restrict", path))?;
    Ok(tree)
}

/// Builds the sandbox root described by `plan` from `sources` and makes it the process's root.
pub fn build_root(plan: &SandboxPlan, sources: Sources) -> Result<()> {
    let Sources {
        mut binds,
        workspace,
        devices,
        egress,
    } = sources;
    mount_tmpfs(
        Path::new(STAGING),
        "mode=0700",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    mount_tmpfs(
        Path::new(NEW_ROOT),
        "mode=0755",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    write_file(Path::new(HIDDEN_FILE), "", 0o000)?;
    mount_tmpfs(
        Path::new(HIDDEN_DIR),
        "mode=0000,size=4k",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
    )?;
    mount_skeleton(plan, devices)?;
    attach(workspace, &staged(Path::new(WORKSPACE_DIR)), true)?;
    for step in &plan.mounts {
        apply_step(step, &mut binds)?;
    }
    protect(&plan.protected)?;
    if let Some(socket) = egress {
        attach(
            socket,
            &staged(Path::new(crate::bridge::EGRESS_SOCKET)),
            false,
        )?;
    }
    write_identity_files(plan)?;
    // The root directory itself is read-only: nothing can be created at the top level.
    remount_readonly_top(Path::new(NEW_ROOT))?;
    enter_new_root()
}

fn mount_tmpfs(target: &Path, options: &str, flags: MsFlags) -> Result<()> {
    fs::create_dir_all(target).map_err(io_err("create", target))?;
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(options))
        .map_err(mount_err("mount tmpfs on", target))
}

fn write_file(path: &Path, content: &str, mode: u32) -> Result<()> {
    fs::write(path, content).map_err(io_err("write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

/// `/tmp`, home, `/run`, `/dev` and `/proc`, all fresh.
fn mount_skeleton(plan: &SandboxPlan, devices: Vec<(&'static str, OwnedFd)>) -> Result<()> {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let size = tmpfs_size(plan);
    mount_tmpfs(
        &staged(Path::new("/tmp")),
        &format!("mode=1777,{size}"),
        nosuid_nodev,
    )?;
    mount_tmpfs(&staged(Path::new("/run")), "mode=0755", nosuid_nodev)?;
    let id = &plan.identity;
    let home = staged(&id.home);
    mount_tmpfs(
        &home,
        &format!(
            "mode=0755,uid={},gid={},{size}",
            id.inside_uid, id.inside_gid
        ),
        nosuid_nodev,
    )?;
    if !plan.landlock.write.contains(&id.home) {
        remount_readonly_top(&home)?;
    }
    mount_dev(devices, &size)?;
    mount_proc()
}

/// The size limit of the sandbox's writable tmpfs mounts. Their pages are charged to the
/// memory cgroup when there is one; the limit keeps a sandbox without one (an unprivileged
/// caller without a delegated cgroup) from filling the host's memory through them.
fn tmpfs_size(plan: &SandboxPlan) -> String {
    const DEFAULT_TMPFS_BYTES: u64 = 1 << 30;
    format!(
        "size={}",
        plan.limits.memory_max.unwrap_or(DEFAULT_TMPFS_BYTES)
    )
}

fn mount_dev(devices: Vec<(&'static str, OwnedFd)>, size: &str) -> Result<()> {
    let dev = staged(Path::new("/dev"));
    mount_tmpfs(&dev, "mode=0755", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)?;
    for (name, tree) in devices {
        let target = dev.join(name);
        write_file(&target, "", 0o666)?;
        sys::move_mount_to(&tree, &target).map_err(io_err("bind device", &target))?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts).map_err(io_err("create", &pts))?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(mount_err("mount devpts on", &pts))?;
    mount_tmpfs(
        &dev.join("shm"),
        &format!("mode=1777,{size}"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    for (link, points_to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(points_to, dev.join(link)).map_err(io_err("symlink", dev.join(link)))?;
    }
    Ok(())
}

fn mount_proc() -> Result<()> {
    let proc = staged(Path::new("/proc"));
    fs::create_dir_all(&proc).map_err(io_err("create", &proc))?;
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(mount_err("mount proc on", &proc))?;
    // Kernel tunables stay readable but not writable, whatever the process's capabilities.
    let sys = proc.join("sys");
    bind(&sys, &sys, false)
}

fn apply_step(step: &MountStep, binds: &mut HashMap<PathBuf, (OwnedFd, bool)>) -> Result<()> {
    match step {
        MountStep::ReadOnly { source, target } | MountStep::ReadWrite { source, target } => {
            match binds.remove(source) {
                Some((tree, is_dir)) => attach(tree, &staged(target), is_dir),
                None => Ok(()),
            }
        }
        MountStep::Symlink { link, points_to } => {
            let link = staged(link);
            if link.symlink_metadata().is_ok() {
                return Ok(());
            }
            create_parent(&link)?;
            symlink(points_to, &link).map_err(io_err("symlink", &link))
        }
        MountStep::HideDir { target } => {
            let Some(object) = open_staged(target)? else {
                return Ok(());
            };
            if !is_dir(&object) {
                return Ok(());
            }
            cover(Path::new(HIDDEN_DIR), &object, target)
        }
        MountStep::HideFile { target } => match open_staged(target)? {
            Some(object) => cover(Path::new(HIDDEN_FILE), &object, target),
            None => Ok(()),
        },
    }
}

/// Keeps each protected workspace path read-only, and pins the directories leading to it (by
/// making each a mount point of itself): a mount point cannot be renamed or removed, so the
/// command cannot move `.git` aside and put a `.git` of its own making in its place.
fn protect(protected: &[PathBuf]) -> Result<()> {
    let workspace = Path::new(WORKSPACE_DIR);
    let mut pinned: Vec<PathBuf> = Vec::new();
    for path in protected {
        let ancestors: Vec<&Path> = path
            .ancestors()
            .skip(1)
            .take_while(|a| *a != workspace && a.starts_with(workspace))
            .collect();
        for ancestor in ancestors.into_iter().rev() {
            if !pinned.iter().any(|p| p == ancestor) {
                bind_onto_itself(ancestor, true)?;
                pinned.push(ancestor.to_path_buf());
            }
        }
        bind_onto_itself(path, false)?;
    }
    Ok(())
}

/// Opens `inside` (an absolute path inside the sandbox) in the new root, following no
/// symlink anywhere on the way. `None` when it does not exist or cannot be reached (a 0700
/// home of another user, say): the command, with the same uid and no capabilities, cannot
/// reach it either. A symlink is an error: the plan saw none there, so something is racing
/// the build.
fn open_staged(inside: &Path) -> Result<Option<OwnedFd>> {
    let root = fs::File::open(NEW_ROOT).map_err(io_err("open", NEW_ROOT))?;
    let relative = inside.strip_prefix("/").unwrap_or(inside);
    match sys::open_beneath_no_symlinks(&root, relative) {
        Ok(fd) => Ok(Some(fd)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::EACCES)
            ) =>
        {
            Ok(None)
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(SandboxError::SwappedForSymlink {
            path: inside.to_path_buf(),
        }),
        Err(e) => Err(io_err("open", inside)(e)),
    }
}

fn is_dir(object: &OwnedFd) -> bool {
    nix::sys::stat::fstat(object.as_raw_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .unwrap_or(false)
}

/// Bind-mounts the file or directory at `inside` onto itself (nosuid, nodev, read-only unless
/// `writable`): it becomes a mount point, which cannot be renamed or removed.
fn bind_onto_itself(inside: &Path, writable: bool) -> Result<()> {
    let object = open_staged(inside)?.ok_or_else(|| SandboxError::Mount {
        step: "protect",
        path: inside.to_path_buf(),
        source: std::io::Error::from_raw_os_error(libc::ENOENT),
    })?;
    let tree = sys::open_tree_clone_of(&object).map_err(io_err("take a copy of", inside))?;
    let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    if !writable {
        attrs |= sys::MOUNT_ATTR_RDONLY;
    }
    sys::mount_setattr(tree.as_raw_fd(), Path::new(""), attrs, None)
        .map_err(io_err("restrict", inside))?;
    sys::move_mount_onto(&tree, &object).map_err(io_err("protect", inside))
}

/// Mounts a read-only copy of `cover` (the empty hidden file or directory) over `object`.
fn cover(cover: &Path, object: &OwnedFd, inside: &Path) -> Result<()> {
    let tree = sys::open_tree_clone(cover).map_err(io_err("take a copy of", cover))?;
    let attrs = sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    sys::mount_setattr(tree.as_raw_fd(), Path::new(""), attrs, None)
        .map_err(io_err("restrict", cover))?;
    sys::move_mount_onto(&tree, object).map_err(io_err("hide", inside))
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(io_err("create", parent)),
        None => Ok(()),
    }
}

/// Attaches a detached tree at `target`, creating the mount point (a directory when
/// `is_dir`, else a file).
fn attach(tree: OwnedFd, target: &Path, is_dir: bool) -> Result<()> {
    create_mount_point(target, is_dir)?;
    sys::move_mount_to(&tree, target).map_err(io_err("attach", target))
}

fn create_mount_point(target: &Path, is_dir: bool) -> Result<()> {
    if target.symlink_metadata().is_ok() {
        return Ok(());
    }
    create_parent(target)?;
    if is_dir {
        fs::create_dir(target).map_err(io_err("create", target))
    } else {
        fs::write(target, "").map_err(io_err("create", target))
    }
}

/// Bind-mounts `source` at `target` (creating the mount point), nosuid and nodev, and
/// read-only unless `writable`, recursively for everything beneath.
fn bind(source: &Path, target: &Path, writable: bool) -> Result<()> {
    create_mount_point(target, source.is_dir())?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(mount_err("bind", target))?;
    let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    if !writable {
        attrs |= sys::MOUNT_ATTR_RDONLY;
    }
    sys::mount_setattr(libc::AT_FDCWD, target, attrs, None).map_err(io_err("restrict", target))
}

/// Remounts the mount at `target` read-only (that mount alone).
fn remount_readonly_top(target: &Path) -> Result<()> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(mount_err("make read-only", target))
}

/// A minimal `/etc/passwd` and `/etc/group` naming the sandbox user, bound over the host's so
/// tools that look the user up find it and the host's user list stays private.
fn write_identity_files(plan: &SandboxPlan) -> Result<()> {
    let id = &plan.identity;
    let passwd = format!(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n{name}:x:{uid}:{gid}:corral sandbox user:{home}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        name = id.user_name,
        uid = id.inside_uid,
        gid = id.inside_gid,
        home = id.home.display()
    );
    let group = format!(
        "root:x:0:\n{name}:x:{gid}:\nnogroup:x:65534:\n",
        name = id.user_name,
        gid = id.inside_gid
    );
    for (name, content) in [("passwd", passwd), ("group", group)] {
        let staging_file = Path::new(STAGING).join(name);
        write_file(&staging_file, &content, 0o644)?;
        let target = staged(&Path::new("/etc").join(name));
        bind(&staging_file, &target, false)?;
    }
    Ok(())
}

/// `pivot_root` into the new root with the old root stacked on top, then detach the old root.
fn enter_new_root() -> Result<()> {
    let new_root = Path::new(NEW_ROOT);
    nix::unistd::chdir(new_root).map_err(mount_err("chdir to", new_root))?;
    nix::unistd::pivot_root(".", ".").map_err(mount_err("pivot_root into", new_root))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(mount_err("detach the old root", "/"))?;
    nix::unistd::chdir("/").map_err(mount_err("chdir to", "/"))?;
    Ok(())
}
