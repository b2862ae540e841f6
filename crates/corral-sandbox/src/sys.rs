//! The few system calls that no safe wrapper covers: fork-style `clone` into new namespaces,
//! the new mount API (`open_tree`, `mount_setattr`, `move_mount`), `openat2`, `capset` and
//! `close_range`. Every `unsafe` block in corral lives in this module.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Where `clone` left the calling process.
pub enum Forked {
    /// In the parent, with the child's pid (as seen from the parent's pid namespace).
    Parent(libc::pid_t),
    /// In the new child.
    Child,
}

/// Forks the calling process into the namespaces named by `namespace_flags` (`CLONE_NEW*`).
///
/// The child gets a copy-on-write image of the parent, like `fork`, so it must only be called
/// while the process is single-threaded: the child runs Rust code after this returns.
pub fn clone_into_namespaces(namespace_flags: libc::c_int) -> io::Result<Forked> {
    let flags = (namespace_flags | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: with a null stack pointer the raw clone syscall behaves like fork: the child
    // continues on a copy of the parent's stack. No pointers are passed. The caller guarantees
    // the process is single-threaded, so no lock can be held by a thread that does not exist in
    // the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0usize,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as libc::pid_t)),
    }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | AT_RECURSIVE)`: a detached copy of the mount
/// tree at `path`, which can be given an id mapping and attached elsewhere.
pub fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    let path = cstring(path)?;
    // No symlink is followed at the last component: the path was resolved when the plan was
    // built, and a symlink swapped in since must not redirect the mount.
    let flags = libc::OPEN_TREE_CLONE
        | libc::OPEN_TREE_CLOEXEC
        | libc::AT_RECURSIVE as u32
        | libc::AT_SYMLINK_NOFOLLOW as u32;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call; the kernel
    // returns a new fd that nothing else owns, which OwnedFd takes over.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created descriptor owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `open_tree(fd, "", OPEN_TREE_CLONE | AT_EMPTY_PATH | AT_RECURSIVE)`: a detached copy of
/// the mount tree at the file or directory `fd` refers to (an `O_PATH` descriptor, say), with
/// no path resolved again.
pub fn open_tree_clone_of(fd: &impl AsRawFd) -> io::Result<OwnedFd> {
    let flags = libc::OPEN_TREE_CLONE
        | libc::OPEN_TREE_CLOEXEC
        | libc::AT_RECURSIVE as u32
        | libc::AT_EMPTY_PATH as u32;
    // SAFETY: the empty path is a valid NUL-terminated string and `fd` is an open descriptor
    // borrowed for the call; the kernel returns a new fd that nothing else owns.
    let tree = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    if tree < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: tree is a freshly created descriptor owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(tree as RawFd) })
}

/// The `struct open_how` of `openat2(2)` (libc's is not constructible outside libc).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dir, path, O_PATH | O_CLOEXEC)` resolving `path` beneath `dir` without following
/// any symlink (`ELOOP`), magic link or `..` out of `dir` (`EXDEV`): the descriptor names
/// exactly the object at that path, whatever a concurrent process does to it afterwards.
pub fn open_beneath_no_symlinks(dir: &impl AsRawFd, path: &Path) -> io::Result<OwnedFd> {
    let cpath = cstring(path)?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `cpath` and `how` are valid for the call and the size passed is the size of the
    // struct the kernel reads; the kernel returns a new fd that nothing else owns.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            cpath.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created descriptor owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_RDONLY`: make the mount read-only.
pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
/// `MOUNT_ATTR_NOSUID`: ignore set-user-ID and set-group-ID bits.
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
/// `MOUNT_ATTR_NODEV`: refuse access to device nodes.
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
/// `MOUNT_ATTR_IDMAP`: map file ownership through a user namespace.
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Sets mount attributes on the mount at `path` (relative to `dirfd`, or the fd itself when
/// `path` is empty), recursively. `userns` is required with `MOUNT_ATTR_IDMAP`.
pub fn mount_setattr(
    dirfd: RawFd,
    path: &Path,
    attr_set: u64,
    userns: Option<RawFd>,
) -> io::Result<()> {
    let cpath = cstring(path)?;
    let mut flags = libc::AT_RECURSIVE as libc::c_uint;
    if path.as_os_str().is_empty() {
        flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |fd| fd as u64),
    };
    // SAFETY: `cpath` and `attr` are valid for the duration of the call and the size passed
    // matches the struct the kernel reads; the kernel does not retain the pointers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            cpath.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches the detached mount `tree` (from [`open_tree_clone`]) at `target`.
pub fn move_mount_to(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    let empty = c"";
    let target = cstring(target)?;
    // SAFETY: both strings are valid NUL-terminated strings for the call; `tree` is an open
    // mount fd borrowed for the call only.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches the detached mount `tree` on top of the file or directory `target` refers to,
/// without resolving a path again.
pub fn move_mount_onto(tree: &OwnedFd, target: &impl AsRawFd) -> io::Result<()> {
    let empty = c"";
    // SAFETY: the empty paths are valid NUL-terminated strings; both descriptors are open and
    // borrowed for the call only.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clears every capability set (effective, permitted, inheritable) of the calling thread.
pub fn clear_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data are valid, correctly laid out (version 3 takes two data
    // elements) and live across the call; the kernel only reads them.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A signal handler that does nothing. Installing it (instead of `SIG_DFL`) matters for pid 1
/// of a pid namespace: the kernel drops signals whose disposition is the default for a
/// namespace's init, even when they are blocked and read from a signalfd.
extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs [`ignore_signal`] for `signal` so a blocked signal stays pending for a signalfd.
pub fn install_noop_handler(signal: nix::sys::signal::Signal) -> io::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler is async-signal-safe (it does nothing) and is valid for the life of
    // the process.
    unsafe { sigaction(signal, &action) }.map_err(io::Error::from)?;
    Ok(())
}

/// Restores the default disposition of `signal` (used in the child before `exec`, so the
/// command starts with ordinary signal handling).
pub fn reset_signal(signal: nix::sys::signal::Signal) -> io::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let action = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_DFL is always a valid disposition.
    unsafe { sigaction(signal, &action) }.map_err(io::Error::from)?;
    Ok(())
}

/// Makes `fd` the controlling terminal of the calling process (which must be a session leader).
pub fn set_controlling_terminal(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument and does not touch memory.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the window size of terminal `fd`.
pub fn window_size(fd: RawFd) -> io::Result<libc::winsize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the valid, exclusively borrowed `size`.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Sets the window size of terminal `fd`.
pub fn set_window_size(fd: RawFd, size: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one winsize from the valid `size`.
    let ret = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, size as *const libc::winsize) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ends the calling process at once with `code`, without running destructors or flushing
/// stdio buffers that belong to the parent's copy of the process image.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// The Landlock ABI version the running kernel offers: `Ok(n)`, or the errno explaining why
/// there is none (`ENOSYS`: not built in; `EOPNOTSUPP`: built in but not enabled at boot).
pub fn landlock_abi() -> io::Result<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag, the kernel reads no
    // memory and only returns the ABI version or an error.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret as i32)
}

/// Sets the loopback interface of the current network namespace up, so programs inside can
/// talk to themselves over 127.0.0.1.
pub fn bring_up_loopback() -> io::Result<()> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes the flags into `request`,
    // which is valid and exclusively borrowed for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags variant.
    unsafe {
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the name and flags from the valid `request`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for one of the blocked signals in `set`; returns it with its `si_code`, which tells
/// a signal sent by a process (`SI_USER`) from one raised by the kernel or a terminal.
pub fn wait_signal(set: &nix::sys::signal::SigSet) -> io::Result<(libc::c_int, libc::c_int)> {
    // SAFETY: siginfo_t is plain old data; all-zero bytes are a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `set` is a valid sigset for the call and `info` is valid, exclusively
        // borrowed storage the kernel fills in.
        let sig = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
        if sig >= 0 {
            return Ok((sig, info.si_code));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Closes every descriptor from 3 up, except `keep`.
pub fn close_fds_except(keep: RawFd) -> io::Result<()> {
    close_fds_except_all(&[keep])
}

/// Closes every descriptor from 3 up, except those in `keep`.
///
/// The caller guarantees that no live Rust object owns a descriptor it does not list (the
/// supervisor calls this first thing after the fork, the command right before exec).
pub fn close_fds_except_all(keep: &[RawFd]) -> io::Result<()> {
    let close = |first: RawFd, last: u32| {
        // SAFETY: close_range only closes descriptors, and the caller guarantees that none in
        // the range belongs to a live Rust object.
        let ret = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, last, 0) };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd >= 3).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3;
    for fd in keep {
        if fd > first {
            close(first, (fd - 1) as u32)?;
        }
        first = fd + 1;
    }
    close(first, u32::MAX)
}

/// Drops every capability from the bounding set, clears the ambient set, then clears the
/// effective, permitted and inheritable sets: nothing can be regained, not even by exec.
pub fn drop_all_capabilities() -> io::Result<()> {
    let last_cap: libc::c_ulong = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    for cap in 0..=last_cap {
        // SAFETY: PR_CAPBSET_READ takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } == 0 {
            // Already out of the bounding set (a process started by the supervisor, which has
            // dropped it): dropping again would need CAP_SETPCAP, which is gone too.
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes integer arguments only.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if ret < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    clear_capabilities()
}
