//! The escape suite: what an agent could try from inside `corral run --profile restricted` to
//! reach the host, and how each attempt fails.
//!
//! Every attack runs for every caller (root, and an unprivileged user), inside the sandbox,
//! where it must fail in the one way its table entry names (an errno, a message, or the
//! absence of data), and then, where the host allows it, outside the sandbox as the same
//! caller, where it must work: an attack that fails outside too proves nothing. Every run,
//! inside and outside, starts with descriptor 7 open on a host directory, and no host secret
//! may ever show up inside.
//!
//! The tables are the specification: files, symlinks, `/proc` and devices, privileges and
//! the network below; namespaces, ptrace and seccomp in `escape/syscalls.rs`. Attacks that
//! need a second sandbox running alongside are in `escape/alongside.rs`. `escape/harness.rs`
//! runs the tables and `escape/kit.py` holds the Python helpers (raw system calls through
//! ctypes, x86_64 numbers).
//!
//! Known limits, deliberately not asserted here: the exec allowlist is a policy, not a
//! wall — the dynamic loader (which must be executable for every allowed program to start)
//! and Python can run any readable program, and `/workspace` is executable by design. A
//! process may read the memory of another process of the same sandbox through
//! `/proc/<pid>/mem`; only the supervisor is out of its reach.

#![cfg(target_arch = "x86_64")]

#[path = "escape/alongside.rs"]
mod alongside;
#[path = "escape/harness.rs"]
mod harness;
#[path = "escape/syscalls.rs"]
mod syscalls;

use harness::{Attack, HostFact, Outside, Prepare, Script};

use HostFact::*;
use Outside::*;
use Prepare::*;
use Script::*;

/// Host files: secrets, homes, system directories, host temp directories.
const HOST_FILES: &[Attack] = &[
    Attack {
        name: "read /etc/shadow",
        prepare: Nothing,
        script: Sh("cat /etc/shadow"),
        inside: &["cat: /etc/shadow: Permission denied"],
        outside: RootOnly(&["root:"]),
        host_after: &[],
    },
    Attack {
        name: "read a file in a home directory under /home",
        prepare: Nothing,
        script: Sh("ls /home; cat {HOME_DIR}/notes.txt"),
        inside: &["cat: {HOME_DIR}/notes.txt: No such file or directory"],
        outside: AnyCaller(&["{SECRET}"]),
        host_after: &[],
    },
    Attack {
        name: "list /root and read a file in it",
        prepare: Nothing,
        script: Sh("ls -a /root; cat {ROOT_SECRET}"),
        inside: &[
            "ls: cannot access '/root': No such file or directory",
            "cat: {ROOT_SECRET}: No such file or directory",
        ],
        outside: RootOnly(&["{SECRET}"]),
        host_after: &[],
    },
    Attack {
        name: "read a file in a host temp directory",
        prepare: Nothing,
        script: Sh("cat {HOST_DIR}/secret"),
        inside: &["cat: {HOST_DIR}/secret: No such file or directory"],
        outside: AnyCaller(&["{SECRET}"]),
        host_after: &[],
    },
    Attack {
        name: "write into /usr",
        prepare: Nothing,
        script: Sh("touch /usr/corral-escape-{ID} && rm /usr/corral-escape-{ID} && echo wrote"),
        inside: &["touch: cannot touch '/usr/corral-escape-{ID}': Read-only file system"],
        outside: RootOnly(&["wrote"]),
        host_after: &[Missing("/usr/corral-escape-{ID}")],
    },
    Attack {
        name: "write into /etc",
        prepare: Nothing,
        script: Sh("echo x > /etc/corral-escape-{ID} && rm /etc/corral-escape-{ID} && echo wrote"),
        inside: &["cannot create /etc/corral-escape-{ID}: Read-only file system"],
        outside: RootOnly(&["wrote"]),
        host_after: &[Missing("/etc/corral-escape-{ID}")],
    },
    Attack {
        name: "write into /var/tmp",
        prepare: Nothing,
        script: Sh(
            "echo x > /var/tmp/corral-escape-{ID} && rm /var/tmp/corral-escape-{ID} && echo wrote",
        ),
        inside: &["cannot create /var/tmp/corral-escape-{ID}: Directory nonexistent"],
        outside: AnyCaller(&["wrote"]),
        host_after: &[Missing("/var/tmp/corral-escape-{ID}")],
    },
    Attack {
        name: "write into a host temp directory",
        prepare: Nothing,
        script: Sh("echo x > {HOST_DIR}/planted && echo wrote"),
        inside: &["cannot create {HOST_DIR}/planted: Directory nonexistent"],
        outside: AnyCaller(&["wrote"]),
        host_after: &[Missing("{HOST_DIR}/planted")],
    },
    Attack {
        name: "write next to the workspace",
        prepare: Nothing,
        script: Sh("echo x > ../next-{ID} && rm ../next-{ID} && echo wrote"),
        inside: &["cannot create ../next-{ID}: Read-only file system"],
        outside: AnyCaller(&["wrote"]),
        host_after: &[Missing("{WORKSPACE}/../next-{ID}")],
    },
    Attack {
        name: "hard-link a host file into the workspace",
        prepare: Nothing,
        script: Sh("ln /etc/hostname hostname-link && echo linked"),
        inside: &["Invalid cross-device link"],
        outside: NotRun(
            "whether /etc and the workspace share a filesystem on the host depends on the machine",
        ),
        host_after: &[Missing("{WORKSPACE}/hostname-link")],
    },
];

/// Symlinks in the workspace pointing at host paths, planted by the host or from inside.
const SYMLINKS: &[Attack] = &[
    Attack {
        name: "follow a workspace symlink to /etc/shadow",
        prepare: AsCaller("ln -s /etc/shadow leak"),
        script: Sh("cat leak"),
        inside: &["cat: leak: Permission denied"],
        outside: RootOnly(&["root:"]),
        host_after: &[],
    },
    Attack {
        name: "follow a workspace symlink to a host temp file",
        prepare: AsCaller("ln -s {HOST_DIR}/secret leak"),
        script: Sh("cat leak"),
        inside: &["cat: leak: No such file or directory"],
        outside: AnyCaller(&["{SECRET}"]),
        host_after: &[],
    },
    Attack {
        name: "follow a workspace symlink into /root",
        prepare: AsCaller("ln -s {ROOT_SECRET} leak"),
        script: Sh("cat leak"),
        inside: &["cat: leak: No such file or directory"],
        outside: RootOnly(&["{SECRET}"]),
        host_after: &[],
    },
    Attack {
        name: "follow a workspace symlink to a home under /home",
        prepare: AsCaller("ln -s {HOME_DIR} home"),
        script: Sh("cat home/notes.txt"),
        inside: &["cat: home/notes.txt: No such file or directory"],
        outside: AnyCaller(&["{SECRET}"]),
        host_after: &[],
    },
    Attack {
        name: "write through a symlink made inside to a host temp directory",
        prepare: Nothing,
        script: Sh("ln -s {HOST_DIR}/via-link out && echo x > out && echo wrote"),
        inside: &["cannot create out: Directory nonexistent"],
        outside: AnyCaller(&["wrote"]),
        host_after: &[Missing("{HOST_DIR}/via-link")],
    },
];

/// `/proc`, `/sys`, `/dev` and inherited descriptors as ways back to the host.
const PROC_SYS_DEV: &[Attack] = &[
    Attack {
        name: "reach the host root through /proc/self/root",
        prepare: Nothing,
        script: Sh("cat /proc/self/root{HOST_DIR}/secret"),
        inside: &["cat: /proc/self/root{HOST_DIR}/secret: No such file or directory"],
        outside: AnyCaller(&["{SECRET}"]),
        host_after: &[],
    },
    Attack {
        name: "reach the host root through /proc/1/root (the supervisor)",
        prepare: Nothing,
        script: Sh("ls /proc/1/root/; cat /proc/1/root{HOST_DIR}/secret"),
        inside: &[
            "ls: cannot access '/proc/1/root/': Permission denied",
            "cat: /proc/1/root{HOST_DIR}/secret: Permission denied",
        ],
        outside: NotRun("outside, pid 1 is the host's init, which not every root may inspect"),
        host_after: &[],
    },
    Attack {
        name: "read the supervisor's descriptors, environment and memory",
        prepare: Nothing,
        script: Sh(
            "ls /proc/1/fd/; cat /proc/1/fd/7/secret; cat /proc/1/environ; head -c 1 /proc/1/mem",
        ),
        inside: &[
            "ls: cannot open directory '/proc/1/fd/': Permission denied",
            "cat: /proc/1/fd/7/secret: Permission denied",
            "cat: /proc/1/environ: Permission denied",
            "head: cannot open '/proc/1/mem' for reading: Permission denied",
        ],
        outside: NotRun("outside, pid 1 is the host's init, which not every root may inspect"),
        host_after: &[],
    },
    Attack {
        name: "use descriptor 7, inherited from the caller, on a host directory",
        prepare: Nothing,
        script: Python(
            "attempt('fstat(7)', lambda: os.fstat(7))\n\
             attempt('listdir(7)', lambda: os.listdir(7))\n\
             attempt('openat(7, secret)', lambda: os.open('secret', os.O_RDONLY, dir_fd=7))\n\
             attempt('/proc/self/fd/7/secret', lambda: open('/proc/self/fd/7/secret').read())\n\
             attempt('/dev/fd/7/secret', lambda: open('/dev/fd/7/secret').read())",
        ),
        inside: &[
            "fstat(7): EBADF",
            "listdir(7): EBADF",
            "openat(7, secret): EBADF",
            "/proc/self/fd/7/secret: ENOENT",
            "/dev/fd/7/secret: ENOENT",
        ],
        outside: AnyCaller(&[
            "fstat(7): ok",
            "listdir(7): ok",
            "openat(7, secret): ok",
            "/proc/self/fd/7/secret: ok",
            "/dev/fd/7/secret: ok",
        ]),
        host_after: &[],
    },
    Attack {
        name: "write a kernel setting in /proc/sys",
        prepare: Nothing,
        script: Sh("echo '0 0' > /proc/sys/net/ipv4/ping_group_range && echo wrote"),
        inside: &["cannot create /proc/sys/net/ipv4/ping_group_range: Read-only file system"],
        outside: OwnUserNamespace(&["wrote"]),
        host_after: &[],
    },
    Attack {
        name: "read kernel addresses from /proc/kallsyms",
        prepare: Nothing,
        script: Sh("grep -m1 ' T _text$' /proc/kallsyms"),
        inside: &["0000000000000000 T _text"],
        outside: RootOnly(&["ffffffff"]),
        host_after: &[],
    },
    Attack {
        name: "reach kernel and cgroup files in /sys",
        prepare: Nothing,
        script: Sh(
            "ls /sys/kernel/ >/dev/null && echo kernel-listed; ls /sys/fs/cgroup/ >/dev/null && echo cgroups-listed",
        ),
        inside: &[
            "ls: cannot access '/sys/kernel/': No such file or directory",
            "ls: cannot access '/sys/fs/cgroup/': No such file or directory",
        ],
        outside: AnyCaller(&["kernel-listed", "cgroups-listed"]),
        host_after: &[],
    },
    Attack {
        name: "find a host disk and the kernel log device",
        prepare: Nothing,
        script: Sh("ls {BLOCK_DEVICE} /dev/kmsg"),
        inside: &[
            "ls: cannot access '{BLOCK_DEVICE}': No such file or directory",
            "ls: cannot access '/dev/kmsg': No such file or directory",
        ],
        outside: AnyCaller(&["{BLOCK_DEVICE}", "/dev/kmsg"]),
        host_after: &[],
    },
    Attack {
        name: "create a device node",
        prepare: Nothing,
        script: Python(
            "attempt('mknod(char 1:1)', lambda: os.mknod('mem', 0o20600, os.makedev(1, 1)))\n\
             os.path.lexists('mem') and os.unlink('mem')",
        ),
        inside: &["mknod(char 1:1): EPERM"],
        outside: RootOnly(&["mknod(char 1:1): ok"]),
        host_after: &[Missing("{WORKSPACE}/mem")],
    },
    Attack {
        name: "use a device node the host left in the workspace",
        prepare: AsRoot("mknod planted-null c 1 3 && chmod 666 planted-null"),
        script: Sh("echo x > planted-null && echo written"),
        inside: &["cannot create planted-null: Permission denied"],
        outside: AnyCaller(&["written"]),
        host_after: &[],
    },
];

/// Privileges: set-id files, setuid programs, programs outside the exec allowlist.
const PRIVILEGES: &[Attack] = &[
    Attack {
        name: "set the set-user-ID bit on a workspace file",
        prepare: AsCaller("cp /usr/bin/id tool"),
        script: Python(
            "attempt('chmod(04755)', lambda: os.chmod('tool', 0o4755))\n\
             attempt('fchmod(02755)', lambda: os.fchmod(os.open('tool', os.O_RDONLY), 0o2755))\n\
             print(oct(os.stat('tool').st_mode))",
        ),
        inside: &["chmod(04755): EPERM", "fchmod(02755): EPERM", "0o100755"],
        outside: AnyCaller(&["chmod(04755): ok", "fchmod(02755): ok", "0o102755"]),
        host_after: &[NoSetIdBit("tool")],
    },
    Attack {
        name: "create a file with set-user-ID and set-group-ID bits",
        prepare: Nothing,
        script: Python(
            "attempt('open(O_CREAT, 06755)', lambda: os.close(os.open('planted', os.O_CREAT | os.O_WRONLY, 0o6755)))",
        ),
        inside: &["open(O_CREAT, 06755): EPERM"],
        outside: AnyCaller(&["open(O_CREAT, 06755): ok"]),
        host_after: &[Missing("{WORKSPACE}/planted")],
    },
    Attack {
        name: "run a setuid-root program the host left in the workspace",
        prepare: AsRoot("cp /usr/bin/id suid-id && chmod 4755 suid-id"),
        script: Sh("./suid-id -u | sed 's/^/euid=/'"),
        inside: &["euid=1000"],
        outside: AnyCaller(&["euid=0"]),
        host_after: &[],
    },
    Attack {
        name: "become root with su and passwd",
        prepare: Nothing,
        script: Sh("su -c 'echo uid=$(id -u)' root; passwd --status root"),
        inside: &["su: Permission denied", "passwd: Permission denied"],
        outside: RootOnly(&["uid=0", "root "]),
        host_after: &[],
    },
    Attack {
        name: "run a program outside the exec allowlist",
        prepare: Nothing,
        script: Sh("perl -e 'print qq(perl ran\\n)'"),
        inside: &["perl: Permission denied"],
        outside: AnyCaller(&["perl ran"]),
        host_after: &[],
    },
    Attack {
        name: "copy a program to /tmp and run it",
        prepare: Nothing,
        script: Sh(
            "cp /usr/bin/id /tmp/id-{ID} && /tmp/id-{ID} -u | sed 's/^/uid=/'; rm -f /tmp/id-{ID}",
        ),
        inside: &["/tmp/id-{ID}: Permission denied"],
        outside: AnyCaller(&["uid="]),
        host_after: &[],
    },
    Attack {
        name: "write the protected git hooks and config",
        prepare: AsCaller("git init -q"),
        script: Sh(
            "echo 'touch /tmp/pwned' > .git/hooks/post-checkout && echo hook-written\n\
             mv .git/hooks .git/hooks-aside && echo hooks-moved\n\
             git config core.hooksPath /tmp && echo config-written",
        ),
        inside: &[
            "cannot create .git/hooks/post-checkout: Read-only file system",
            "mv: cannot move '.git/hooks' to '.git/hooks-aside': Device or resource busy",
            "could not write config file .git/config: Device or resource busy",
        ],
        outside: AnyCaller(&["hook-written", "hooks-moved", "config-written"]),
        host_after: &[Missing("{WORKSPACE}/.git/hooks/post-checkout")],
    },
];

/// Sockets and the host's network, and the host's processes.
const NETWORK_AND_PROCESSES: &[Attack] = &[
    Attack {
        name: "open raw and packet sockets",
        prepare: Nothing,
        script: Python(
            "open_socket('AF_INET SOCK_RAW', socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n\
             open_socket('AF_PACKET', socket.AF_PACKET, socket.SOCK_RAW, 0)\n\
             open_socket('AF_INET SOCK_PACKET', socket.AF_INET, 10, 0x0300)",
        ),
        inside: &[
            "AF_INET SOCK_RAW: EPERM",
            "AF_PACKET: EPERM",
            "AF_INET SOCK_PACKET: EPERM",
        ],
        outside: OwnUserNamespace(&[
            "AF_INET SOCK_RAW: ok",
            "AF_PACKET: ok",
            "AF_INET SOCK_PACKET: ok",
        ]),
        host_after: &[],
    },
    Attack {
        name: "open netlink sockets other than NETLINK_ROUTE",
        prepare: Nothing,
        script: Python(
            "open_socket('NETLINK_SOCK_DIAG', socket.AF_NETLINK, socket.SOCK_DGRAM, 4)\n\
             open_socket('NETLINK_KOBJECT_UEVENT', socket.AF_NETLINK, socket.SOCK_DGRAM, 15)\n\
             open_socket('NETLINK_ROUTE', socket.AF_NETLINK, socket.SOCK_DGRAM, 0)",
        ),
        inside: &[
            "NETLINK_SOCK_DIAG: EPERM",
            "NETLINK_KOBJECT_UEVENT: EPERM",
            "NETLINK_ROUTE: ok",
        ],
        outside: AnyCaller(&[
            "NETLINK_SOCK_DIAG: ok",
            "NETLINK_KOBJECT_UEVENT: ok",
            "NETLINK_ROUTE: ok",
        ]),
        host_after: &[],
    },
    Attack {
        name: "connect to a TCP port on the host's loopback",
        prepare: Nothing,
        script: Python("connect('tcp 127.0.0.1', socket.AF_INET, ('127.0.0.1', {TCP_PORT}))"),
        inside: &["tcp 127.0.0.1: ECONNREFUSED"],
        outside: AnyCaller(&["tcp 127.0.0.1: ok"]),
        host_after: &[],
    },
    Attack {
        name: "connect to a TCP port on the host's network address",
        prepare: Nothing,
        script: Python("connect('tcp host', socket.AF_INET, ('{HOST_IP}', {TCP_ANY_PORT}))"),
        inside: &["tcp host: ENETUNREACH"],
        outside: AnyCaller(&["tcp host: ok"]),
        host_after: &[],
    },
    Attack {
        name: "connect to a host abstract unix socket",
        prepare: Nothing,
        script: Python("connect('abstract unix', socket.AF_UNIX, '\\0{ABSTRACT}')"),
        inside: &["abstract unix: ECONNREFUSED"],
        outside: AnyCaller(&["abstract unix: ok"]),
        host_after: &[],
    },
    Attack {
        name: "kill a host process",
        prepare: Nothing,
        script: Sh("kill -9 {SLEEP_PID} && echo killed"),
        inside: &["kill: No such process"],
        outside: AnyCaller(&["killed"]),
        host_after: &[SleeperAlive],
    },
    Attack {
        name: "kill the supervisor",
        prepare: Nothing,
        script: Sh("kill -9 1 && echo killed"),
        inside: &["kill: Operation not permitted"],
        outside: NotRun("outside, pid 1 is the host's init"),
        host_after: &[],
    },
    Attack {
        name: "outlive the sandbox (ignore SIGHUP, setsid, double fork, daemon)",
        prepare: Nothing,
        // Starts four sleeps, then waits (boundedly) until all four run before leaving.
        script: Sh(r#"(trap '' HUP; exec sleep {MARKER}) >/dev/null 2>&1 &
             setsid sleep {MARKER} >/dev/null 2>&1 &
             (sleep {MARKER} >/dev/null 2>&1 &)
             python3 -c 'import os
if os.fork() == 0:
  os.setsid()
  if os.fork() == 0: os.execvp("sleep", ["sleep", "{MARKER}"])' >/dev/null 2>&1
             i=0
             while [ $i -lt 1000 ]; do
               n=$(for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline; echo; done 2>/dev/null | grep -c '^sleep {MARKER}')
               [ "$n" = 4 ] && break
               i=$((i + 1)); sleep 0.01
             done
             echo "$n daemons running""#),
        inside: &["4 daemons running"],
        outside: NotRun(
            "outside, the daemons would outlive the test: that is what the attack relies on",
        ),
        host_after: &[NoProcess("sleep {MARKER}")],
    },
];

#[test]
fn host_files_stay_out_of_reach() {
    harness::run_table("files", HOST_FILES);
}

#[test]
fn symlinks_resolve_inside_the_sandbox() {
    harness::run_table("links", SYMLINKS);
}

#[test]
fn proc_sys_dev_and_inherited_descriptors_lead_nowhere() {
    harness::run_table("proc", PROC_SYS_DEV);
}

#[test]
fn no_privilege_can_be_gained() {
    harness::run_table("privileges", PRIVILEGES);
}

#[test]
fn namespaces_mounts_and_ptrace_are_denied() {
    harness::run_table("namespaces", syscalls::NAMESPACES_AND_PTRACE);
}

#[test]
fn seccomp_denies_kernel_interfaces() {
    harness::run_table("seccomp", syscalls::SECCOMP);
}

#[test]
fn the_host_network_and_processes_are_out_of_reach() {
    harness::run_table("network", NETWORK_AND_PROCESSES);
}
