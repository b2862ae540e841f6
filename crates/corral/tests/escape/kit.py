"""The escape suite's Python helpers, copied into every attack's workspace as kit.py.

Every attempt prints one line, `<label>: ok` or `<label>: <ERRNO>` (EPERM, EACCES, ...), so
the Rust side can assert the exact way an attack fails inside the sandbox and works outside.
Syscall numbers are x86_64's.
"""

import ctypes
import errno
import os
import socket

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def report(label, err=None):
    print(f"{label}: {'ok' if err is None else errno.errorcode.get(err, err)}", flush=True)


def attempt(label, action):
    """Runs `action`; reports ok or the errno of the OSError it raised."""
    try:
        action()
    except OSError as e:
        report(label, e.errno)
    else:
        report(label)


def _arg(value):
    if isinstance(value, str):
        return ctypes.c_char_p(value.encode())
    if isinstance(value, bytes):
        return ctypes.c_char_p(value)
    if isinstance(value, int):
        return ctypes.c_long(value)
    return value


def _raw(nr, *args):
    result = libc.syscall(ctypes.c_long(nr), *map(_arg, args))
    return result, (ctypes.get_errno() if result < 0 else None)


def syscall(label, nr, *args):
    """The raw system call `nr`; strings become C strings, ints longs."""
    result, err = _raw(nr, *args)
    report(label, err)
    return result


def fork_with(label, nr, *args):
    """A fork-like clone or clone3: the child leaves at once, the parent reaps it."""
    result, err = _raw(nr, *args)
    if result == 0:
        os._exit(0)
    if result > 0:
        os.waitpid(result, 0)
    report(label, err)


def clone3_args(flags):
    """A `struct clone_args` (version 0, 64 bytes) for a fork-like clone3 with `flags`."""
    sigchld = 17
    return ctypes.byref((ctypes.c_uint64 * 8)(flags, 0, 0, 0, sigchld, 0, 0, 0))


def child():
    """A child process that waits until this process exits (it reads a pipe only we hold)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    return pid


def kill(pid):
    os.kill(pid, 9)
    os.waitpid(pid, 0)


def ptrace_attach():
    target = child()
    result, err = _raw(101, 16, target, 0, 0)  # PTRACE_ATTACH
    if result == 0:
        os.waitpid(target, 0)
        _raw(101, 17, target, 0, 0)  # PTRACE_DETACH
    kill(target)
    report("ptrace(PTRACE_ATTACH, child)", err)


def ptrace_traceme():
    pid = os.fork()
    if pid == 0:
        result, err = _raw(101, 0, 0, 0, 0)  # PTRACE_TRACEME
        os._exit(0 if result == 0 else err)
    _, status = os.waitpid(pid, 0)
    report("ptrace(PTRACE_TRACEME)", os.waitstatus_to_exitcode(status) or None)


def process_vm_readv():
    target = child()
    _, err = _raw(310, target, 0, 0, 0, 0, 0)
    kill(target)
    report("process_vm_readv(child)", err)


def open_socket(label, *args):
    attempt(label, lambda: socket.socket(*args).close())


def connect(label, family, address):
    def go():
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(address)

    attempt(label, go)
