//! The seccomp filter loaded into every sandboxed command.
//!
//! Threat model: the agent runs arbitrary code as an unprivileged user in its own namespaces.
//! The kernel interfaces below either widen the attack surface far beyond what a coding agent
//! needs (bpf, io_uring, userfaultfd, perf), let it look into or steer other processes
//! (ptrace, process_vm_*), rebuild its own view of the system (mount, namespaces), plant
//! files the host would trust (set-id bits), or inject input into a terminal (TIOCSTI). They
//! answer EPERM, the errno that programs already handle as "not allowed". `clone3` answers
//! ENOSYS so libc falls back to `clone`, whose flags a filter can read; `openat2` likewise,
//! because its mode lives behind a pointer.
//!
//! The table is data: one entry per syscall with the reason it is there.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use crate::error::SandboxError;

/// Syscalls denied outright, with the reason for each.
const DENIED: &[(i64, &str)] = &[
    (libc::SYS_ptrace, "inspect or steer another process"),
    (libc::SYS_process_vm_readv, "read another process's memory"),
    (
        libc::SYS_process_vm_writev,
        "write another process's memory",
    ),
    (libc::SYS_mount, "change the filesystem layout"),
    (libc::SYS_umount2, "uncover what a mount hides"),
    (libc::SYS_pivot_root, "change the root"),
    (libc::SYS_chroot, "change the root"),
    (libc::SYS_open_tree, "new mount API"),
    (libc::SYS_move_mount, "new mount API"),
    (libc::SYS_fsopen, "new mount API"),
    (libc::SYS_fsconfig, "new mount API"),
    (libc::SYS_fsmount, "new mount API"),
    (libc::SYS_fspick, "new mount API"),
    (libc::SYS_mount_setattr, "new mount API"),
    (libc::SYS_unshare, "new namespaces"),
    (libc::SYS_setns, "enter other namespaces"),
    (libc::SYS_keyctl, "kernel keyring, shared across the host"),
    (libc::SYS_add_key, "kernel keyring"),
    (libc::SYS_request_key, "kernel keyring"),
    (libc::SYS_bpf, "eBPF: large kernel attack surface"),
    (
        libc::SYS_perf_event_open,
        "performance counters: side channels and kernel surface",
    ),
    (
        libc::SYS_userfaultfd,
        "used to win kernel races in exploits",
    ),
    (libc::SYS_kexec_load, "load a new kernel"),
    (libc::SYS_kexec_file_load, "load a new kernel"),
    (libc::SYS_init_module, "load kernel code"),
    (libc::SYS_finit_module, "load kernel code"),
    (libc::SYS_delete_module, "unload kernel code"),
    (libc::SYS_reboot, "reboot the host"),
    (libc::SYS_swapon, "host swap"),
    (libc::SYS_swapoff, "host swap"),
    (libc::SYS_acct, "process accounting"),
    (
        libc::SYS_open_by_handle_at,
        "open files by handle, bypassing path checks",
    ),
    (
        libc::SYS_name_to_handle_at,
        "file handles, paired with open_by_handle_at",
    ),
    (
        libc::SYS_io_uring_setup,
        "io_uring: bypasses seccomp for the I/O it performs",
    ),
    (libc::SYS_io_uring_enter, "io_uring"),
    (libc::SYS_io_uring_register, "io_uring"),
    (libc::SYS_syslog, "kernel log"),
    (libc::SYS_quotactl, "filesystem quotas"),
    (libc::SYS_settimeofday, "host clock"),
    (libc::SYS_clock_settime, "host clock"),
    (libc::SYS_clock_adjtime, "host clock"),
    (libc::SYS_adjtimex, "host clock"),
    (libc::SYS_sethostname, "hostname"),
    (libc::SYS_setdomainname, "domain name"),
    (libc::SYS_vhangup, "terminal hang-up"),
    (libc::SYS_lookup_dcookie, "kernel profiling"),
    (libc::SYS_fanotify_init, "watch the whole filesystem"),
];

/// Syscalls that answer ENOSYS so libc falls back to an inspectable variant.
const UNAVAILABLE: &[(i64, &str)] = &[
    (
        libc::SYS_clone3,
        "flags live behind a pointer; libc falls back to clone",
    ),
    (
        libc::SYS_openat2,
        "mode lives behind a pointer; libc falls back to openat",
    ),
];

/// Namespace flags that `clone` may not carry.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWCGROUP as u64,
    0x80, // CLONE_NEWTIME
];

const S_ISUID: u64 = libc::S_ISUID as u64;
const S_ISGID: u64 = libc::S_ISGID as u64;
const O_CREAT: u64 = libc::O_CREAT as u64;
const O_TMPFILE: u64 = libc::O_TMPFILE as u64;

/// `personality(0xffffffff)` only queries the current persona.
const PERSONALITY_QUERY: u64 = 0xffff_ffff;

fn cond(arg: u8, len: Len, op: Op, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, len, op, value).expect("static condition is valid")
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("static rule has conditions")
}

/// Rules matching a mode argument that carries a set-user-ID or set-group-ID bit.
fn setid_mode(mode_arg: u8) -> Vec<SeccompRule> {
    [S_ISUID, S_ISGID]
        .iter()
        .map(|bit| rule(vec![cond(mode_arg, Len::Dword, Op::MaskedEq(*bit), *bit)]))
        .collect()
}

/// Rules matching an `open` whose flags create a file and whose mode carries a set-id bit.
fn creating_setid(flags_arg: u8, mode_arg: u8) -> Vec<SeccompRule> {
    let mut rules = Vec::new();
    for create in [O_CREAT, O_TMPFILE] {
        for bit in [S_ISUID, S_ISGID] {
            rules.push(rule(vec![
                cond(flags_arg, Len::Dword, Op::MaskedEq(create), create),
                cond(mode_arg, Len::Dword, Op::MaskedEq(bit), bit),
            ]));
        }
    }
    rules
}

/// Rules matching `mknod` of a device or of a file with set-id bits.
fn device_or_setid_node(mode_arg: u8) -> Vec<SeccompRule> {
    let mut rules = setid_mode(mode_arg);
    for kind in [libc::S_IFCHR as u64, libc::S_IFBLK as u64] {
        rules.push(rule(vec![cond(
            mode_arg,
            Len::Dword,
            Op::MaskedEq(libc::S_IFMT as u64),
            kind,
        )]));
    }
    rules
}

/// The EPERM part of the filter: denied syscalls plus argument-dependent rules.
fn eperm_rules() -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(nr, _)| (*nr, Vec::new())).collect();
    // Namespaces: clone with any CLONE_NEW* flag.
    rules.insert(
        libc::SYS_clone,
        NAMESPACE_FLAGS
            .iter()
            .map(|flag| rule(vec![cond(0, Len::Qword, Op::MaskedEq(*flag), *flag)]))
            .collect(),
    );
    // Raw and packet sockets, and netlink other than NETLINK_ROUTE (which `ip addr` needs).
    rules.insert(
        libc::SYS_socket,
        vec![
            rule(vec![cond(0, Len::Dword, Op::Eq, libc::AF_PACKET as u64)]),
            rule(vec![cond(
                1,
                Len::Dword,
                Op::MaskedEq(0xf),
                libc::SOCK_RAW as u64,
            )]),
            rule(vec![
                cond(0, Len::Dword, Op::Eq, libc::AF_NETLINK as u64),
                cond(2, Len::Dword, Op::Ne, libc::NETLINK_ROUTE as u64),
            ]),
        ],
    );
    // Execution domains other than the default (and the query form).
    rules.insert(
        libc::SYS_personality,
        vec![rule(vec![
            cond(0, Len::Dword, Op::Ne, 0),
            cond(0, Len::Dword, Op::Ne, PERSONALITY_QUERY),
        ])],
    );
    // Terminal input injection.
    rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![cond(1, Len::Dword, Op::Eq, libc::TIOCSTI)]),
            rule(vec![cond(1, Len::Dword, Op::Eq, libc::TIOCLINUX)]),
        ],
    );
    // Set-id bits: never left in the workspace for the host to honour.
    rules.insert(libc::SYS_fchmod, setid_mode(1));
    rules.insert(libc::SYS_fchmodat, setid_mode(2));
    rules.insert(452, setid_mode(2)); // fchmodat2
    rules.insert(libc::SYS_openat, creating_setid(2, 3));
    rules.insert(libc::SYS_mknodat, device_or_setid_node(2));
    legacy_rules(&mut rules);
    rules
}

#[cfg(target_arch = "x86_64")]
fn legacy_rules(rules: &mut BTreeMap<i64, Vec<SeccompRule>>) {
    rules.insert(libc::SYS_chmod, setid_mode(1));
    rules.insert(libc::SYS_open, creating_setid(1, 2));
    rules.insert(libc::SYS_creat, setid_mode(1));
    rules.insert(libc::SYS_mknod, device_or_setid_node(1));
    for nr in [libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_uselib] {
        rules.insert(nr, Vec::new());
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn legacy_rules(_: &mut BTreeMap<i64, Vec<SeccompRule>>) {}

fn target_arch() -> Result<TargetArch, SandboxError> {
    std::env::consts::ARCH.try_into().map_err(|_| {
        SandboxError::Seccomp(format!(
            "unsupported architecture {}",
            std::env::consts::ARCH
        ))
    })
}

/// Compiles corral's filters: the EPERM filter and the ENOSYS filter.
pub fn compile() -> Result<Vec<BpfProgram>, SandboxError> {
    let arch = target_arch()?;
    let seccomp = |e: seccompiler::BackendError| SandboxError::Seccomp(e.to_string());
    let eperm = SeccompFilter::new(
        eperm_rules(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(seccomp)?;
    let enosys = SeccompFilter::new(
        UNAVAILABLE
            .iter()
            .map(|(nr, _)| (*nr, Vec::new()))
            .collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(seccomp)?;
    let mut programs = Vec::new();
    for filter in [eperm, enosys] {
        programs.push(BpfProgram::try_from(filter).map_err(seccomp)?);
    }
    programs.push(x32_guard());
    Ok(programs)
}

/// A filter refusing the x32 syscall ABI on x86_64: x32 numbers carry bit 30 and would
/// otherwise slip past rules keyed by the 64-bit numbers.
fn x32_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JGE_K: u16 = 0x35;
    const BPF_RET_K: u16 = 0x06;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let errno = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    if !cfg!(target_arch = "x86_64") {
        return vec![sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        }];
    }
    vec![
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        }, // seccomp_data.nr
        sock_filter {
            code: BPF_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: errno,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ]
}

/// Loads `programs` into the calling thread. `no_new_privs` must already be set.
pub fn load(programs: &[BpfProgram]) -> Result<(), SandboxError> {
    for program in programs {
        seccompiler::apply_filter(program).map_err(|e| SandboxError::Seccomp(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_this_architecture() {
        let programs = compile().unwrap();
        assert_eq!(programs.len(), 3);
        assert!(programs.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn every_denied_syscall_has_a_reason_and_appears_once() {
        let mut seen = std::collections::HashSet::new();
        for (nr, reason) in DENIED {
            assert!(!reason.is_empty());
            assert!(seen.insert(nr), "syscall {nr} listed twice");
        }
    }
}
