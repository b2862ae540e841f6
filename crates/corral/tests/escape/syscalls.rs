//! The escape suite's system-call attacks: namespaces, mounts, ptrace, and the kernel
//! interfaces the seccomp filter denies.

use super::harness::{Attack, Outside::*, Prepare::*, Script::*};

/// Namespaces, mounts and ptrace.
pub const NAMESPACES_AND_PTRACE: &[Attack] = &[
    Attack {
        name: "mount a tmpfs",
        prepare: AsCaller("mkdir mnt"),
        script: Python("syscall('mount(tmpfs)', 165, 'none', 'mnt', 'tmpfs', 0, 0)"),
        inside: &["mount(tmpfs): EPERM"],
        outside: OwnUserNamespace(&["mount(tmpfs): ok"]),
        host_after: &[],
    },
    Attack {
        name: "bind-mount the root directory",
        prepare: AsCaller("mkdir mnt"),
        // MS_BIND | MS_REC
        script: Python("syscall('mount(/, MS_BIND)', 165, '/', 'mnt', 0, 0x1000 | 0x4000, 0)"),
        inside: &["mount(/, MS_BIND): EPERM"],
        outside: OwnUserNamespace(&["mount(/, MS_BIND): ok"]),
        host_after: &[],
    },
    Attack {
        name: "mount with the new mount API",
        prepare: Nothing,
        // open_tree(AT_FDCWD, "/", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)
        script: Python(
            "syscall('fsopen(tmpfs)', 430, 'tmpfs', 0)\n\
             syscall('open_tree(/)', 428, -100, '/', 1 | 0o2000000 | 0x8000)",
        ),
        inside: &["fsopen(tmpfs): EPERM", "open_tree(/): EPERM"],
        outside: OwnUserNamespace(&["fsopen(tmpfs): ok", "open_tree(/): ok"]),
        host_after: &[],
    },
    Attack {
        name: "unshare a new user namespace",
        prepare: Nothing,
        script: Python("syscall('unshare(CLONE_NEWUSER)', 272, 0x10000000)"),
        inside: &["unshare(CLONE_NEWUSER): EPERM"],
        outside: AnyCaller(&["unshare(CLONE_NEWUSER): ok"]),
        host_after: &[],
    },
    Attack {
        name: "clone into new user and mount namespaces",
        prepare: Nothing,
        // CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD
        script: Python(
            "fork_with('clone(CLONE_NEWUSER|CLONE_NEWNS)', 56, 0x10000000 | 0x20000 | 17, 0, 0, 0, 0)",
        ),
        inside: &["clone(CLONE_NEWUSER|CLONE_NEWNS): EPERM"],
        outside: AnyCaller(&["clone(CLONE_NEWUSER|CLONE_NEWNS): ok"]),
        host_after: &[],
    },
    Attack {
        name: "clone3 into a new user namespace",
        prepare: Nothing,
        script: Python("fork_with('clone3(CLONE_NEWUSER)', 435, clone3_args(0x10000000), 64)"),
        inside: &["clone3(CLONE_NEWUSER): ENOSYS"],
        outside: AnyCaller(&["clone3(CLONE_NEWUSER): ok"]),
        host_after: &[],
    },
    Attack {
        name: "enter a namespace with setns",
        prepare: Nothing,
        script: Python(
            "syscall('setns(mnt)', 308, os.open('/proc/self/ns/mnt', os.O_RDONLY), 0x20000)",
        ),
        inside: &["setns(mnt): EPERM"],
        outside: OwnUserNamespace(&["setns(mnt): ok"]),
        host_after: &[],
    },
    Attack {
        name: "chroot",
        prepare: Nothing,
        script: Python("syscall('chroot(.)', 161, '.')"),
        inside: &["chroot(.): EPERM"],
        outside: OwnUserNamespace(&["chroot(.): ok"]),
        host_after: &[],
    },
    Attack {
        name: "change the host's hostname",
        prepare: Nothing,
        script: Sh("hostname pwned-{ID}; hostname"),
        inside: &[
            "hostname: you must be root to change the host name",
            "corral",
        ],
        outside: OwnUserNamespace(&["pwned-{ID}"]),
        host_after: &[super::harness::HostFact::HostnameUnchanged],
    },
    Attack {
        name: "ptrace-attach to a child",
        prepare: Nothing,
        script: Python("ptrace_attach()"),
        inside: &["ptrace(PTRACE_ATTACH, child): EPERM"],
        outside: AnyCaller(&["ptrace(PTRACE_ATTACH, child): ok"]),
        host_after: &[],
    },
    Attack {
        name: "ask to be traced (PTRACE_TRACEME)",
        prepare: Nothing,
        script: Python("ptrace_traceme()"),
        inside: &["ptrace(PTRACE_TRACEME): EPERM"],
        outside: AnyCaller(&["ptrace(PTRACE_TRACEME): ok"]),
        host_after: &[],
    },
    Attack {
        name: "read a child's memory with process_vm_readv",
        prepare: Nothing,
        script: Python("process_vm_readv()"),
        inside: &["process_vm_readv(child): EPERM"],
        outside: AnyCaller(&["process_vm_readv(child): ok"]),
        host_after: &[],
    },
];

/// System calls the seccomp filter denies. Arguments are chosen so the call is harmless when
/// it goes through: outside it fails with EINVAL/EFAULT/ENOENT or succeeds without effect.
pub const SECCOMP: &[Attack] = &[
    Attack {
        name: "keyctl: the kernel keyring",
        prepare: Nothing,
        // KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING
        script: Python("syscall('keyctl', 250, 0, -3, 0)"),
        inside: &["keyctl: EPERM"],
        outside: AnyCaller(&["keyctl: ok"]),
        host_after: &[],
    },
    Attack {
        name: "bpf",
        prepare: Nothing,
        script: Python("syscall('bpf', 321, 0, 0, 0)"),
        inside: &["bpf: EPERM"],
        outside: RootOnly(&["bpf: EINVAL"]),
        host_after: &[],
    },
    Attack {
        name: "perf_event_open",
        prepare: Nothing,
        script: Python("syscall('perf_event_open', 298, 0, 0, -1, -1, 0)"),
        inside: &["perf_event_open: EPERM"],
        outside: AnyCaller(&["perf_event_open: EFAULT"]),
        host_after: &[],
    },
    Attack {
        name: "userfaultfd",
        prepare: Nothing,
        // UFFD_USER_MODE_ONLY, which any user may ask for
        script: Python("syscall('userfaultfd', 323, 1)"),
        inside: &["userfaultfd: EPERM"],
        outside: AnyCaller(&["userfaultfd: ok"]),
        host_after: &[],
    },
    Attack {
        name: "io_uring_setup",
        prepare: Nothing,
        script: Python("syscall('io_uring_setup', 425, 1, 0)"),
        inside: &["io_uring_setup: EPERM"],
        outside: AnyCaller(&["io_uring_setup: "]),
        host_after: &[],
    },
    Attack {
        name: "personality(ADDR_NO_RANDOMIZE): switch off ASLR",
        prepare: Nothing,
        script: Python("syscall('personality', 135, 0x0040000)"),
        inside: &["personality: EPERM"],
        outside: AnyCaller(&["personality: ok"]),
        host_after: &[],
    },
    Attack {
        name: "open_by_handle_at",
        prepare: Nothing,
        script: Python("syscall('open_by_handle_at', 304, -1, 0, 0)"),
        inside: &["open_by_handle_at: EPERM"],
        outside: RootOnly(&["open_by_handle_at: "]),
        host_after: &[],
    },
    Attack {
        name: "kexec_load",
        prepare: Nothing,
        script: Python("syscall('kexec_load', 246, 0, 0, 0, 0)"),
        inside: &["kexec_load: EPERM"],
        outside: RootOnly(&["kexec_load: "]),
        host_after: &[],
    },
    Attack {
        name: "init_module",
        prepare: Nothing,
        script: Python("syscall('init_module', 175, 0, 0, '')"),
        inside: &["init_module: EPERM"],
        outside: RootOnly(&["init_module: "]),
        host_after: &[],
    },
    Attack {
        name: "reboot",
        prepare: Nothing,
        // Wrong magic numbers: the kernel refuses with EINVAL once permitted.
        script: Python("syscall('reboot', 169, 0, 0, 0, 0)"),
        inside: &["reboot: EPERM"],
        outside: RootOnly(&["reboot: EINVAL"]),
        host_after: &[],
    },
    Attack {
        name: "swapon",
        prepare: Nothing,
        script: Python("syscall('swapon', 167, '/nonexistent/swap', 0)"),
        inside: &["swapon: EPERM"],
        outside: RootOnly(&["swapon: ENOENT"]),
        host_after: &[],
    },
    Attack {
        name: "acct",
        prepare: Nothing,
        script: Python("syscall('acct', 163, '/nonexistent/acct')"),
        inside: &["acct: EPERM"],
        outside: RootOnly(&["acct: ENOENT"]),
        host_after: &[],
    },
    Attack {
        name: "inject terminal input with TIOCSTI",
        prepare: Nothing,
        script: Python("syscall('ioctl(TIOCSTI)', 16, 0, 0x5412, 'x')"),
        inside: &["ioctl(TIOCSTI): EPERM"],
        outside: AnyCaller(&["ioctl(TIOCSTI): ENOTTY"]),
        host_after: &[],
    },
];
