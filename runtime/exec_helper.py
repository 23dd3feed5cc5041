"""The exec helper: a small single-threaded process that starts `docker exec` processes.

It is what ``runc exec`` does for a container without a seccomp filter, an LSM profile or a user
namespace, minus runc's two Go start-ups (runc, then ``runc init``), which are most of the
20-25 ms an exec costs through runc. Run by the daemon as ``python -I -S exec_helper.py`` with
a SOCK_SEQPACKET socket on fd 3; standard library only, so it starts in milliseconds.

One request per message: JSON ``{"init_pid", "cgroup_procs", "process"}`` (``process`` is the
OCI process of the exec) with four descriptors attached: the process's stdin, stdout, stderr and
the write end of an error pipe. For each request the helper forks an intermediate process that
moves itself into the container's cgroups, joins the init's namespaces and forks the exec
process, which is therefore inside the container's PID namespace (see ``join_cgroups`` for how
it avoids the kernel's 7-10 ms cgroup-migration stall). The intermediate reports the
process's host PID and exits, so the process is re-parented to the daemon (the child subreaper)
and reaped there like a container init. The reply is ``{"pid": N}`` or ``{"error": text}``.

The exec process then does what runc's ``setns_init`` / ``finalizeNamespace`` do, in runc's
order: new session, stdio, the NOFILE soft limit raised to the hard one (Go's start-up in runc),
rlimits, supplementary groups, bounding set, keep-caps, gid/uid, working directory,
capabilities (effective/permitted/inheritable/ambient), no_new_privs, PATH lookup as Go's
``exec.LookPath``, ``execve``. Like ``runc exec``, it leaves ``oomScoreAdj`` alone: the
process inherits the daemon's score. A failure before ``execve`` is written to the error pipe in
runc's words (``exec: "nope": executable file not found in $PATH``) and the process exits 127;
the pipe is close-on-exec, so EOF without data means the program runs.

Forking here is safe because this process never starts a thread; the daemon itself is threaded
and must not fork Python code.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import gc
import json
import os
import resource
import signal
import socket
import stat
import sys
from typing import Any, NoReturn

MAX_MESSAGE = 1 << 20
# Joined in runc's order (nsexec): user namespaces are not handled here.
NAMESPACES = ("cgroup", "ipc", "uts", "net", "pid", "mnt")
CLONE_FLAGS = {
    "cgroup": 0x02000000,
    "ipc": 0x08000000,
    "uts": 0x04000000,
    "net": 0x40000000,
    "pid": 0x20000000,
    "mnt": 0x00020000,
}
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
CAP_NUMBERS = {name: number for number, name in enumerate(CAPABILITIES)}

CLONE_INTO_CGROUP = 0x200000000
SYS_CLONE3 = 435  # the same number on every architecture (asm-generic and x86-64)
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522


class ExecFailure(Exception):
    """Reported to the daemon through the error pipe, in runc's wording."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def go_error(err: OSError) -> str:
    """Go's text for an errno: the lower-case strerror ("no such file or directory")."""
    text = os.strerror(err.errno) if err.errno else str(err)
    return text[:1].lower() + text[1:]


def cap_mask(names: list[str] | None) -> int:
    mask = 0
    for name in names or []:
        mask |= 1 << CAP_NUMBERS[name]
    return mask


@functools.cache
def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


def look_path(name: str, env: dict[str, str]) -> str:
    """Go's exec.LookPath (what runc calls with the process's own PATH)."""

    def executable(path: str) -> OSError | None:
        try:
            mode = os.stat(path).st_mode
        except OSError as err:
            return err
        if not stat.S_ISDIR(mode) and mode & 0o111:
            return None
        return PermissionError(13, "permission denied")

    if "/" in name:
        err = executable(name)
        if err is None:
            return name
        if isinstance(err, PermissionError):
            raise ExecFailure(f"exec: {json.dumps(name)}: permission denied")
        raise ExecFailure(f"exec: {json.dumps(name)}: stat {name}: {go_error(err)}")
    for directory in env.get("PATH", "").split(":"):
        path = os.path.join(directory or ".", name)
        if executable(path) is None:
            return path
    raise ExecFailure(f"exec: {json.dumps(name)}: executable file not found in $PATH")


def home_of(uid: int) -> str:
    """runc sets HOME from the container's /etc/passwd when the process has none ("/" otherwise)."""
    try:
        with open("/etc/passwd", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def apply_capabilities(libc: ctypes.CDLL, caps: dict[str, list[str]]) -> None:
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    effective, permitted = cap_mask(caps.get("effective")), cap_mask(caps.get("permitted"))
    inheritable = cap_mask(caps.get("inheritable"))
    for i in (0, 1):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    _check(libc.capset(ctypes.byref(header), data), "capset")
    _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT)")
    for name in caps.get("ambient") or []:
        _check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NUMBERS[name], 0, 0), "ambient")


def raise_nofile_soft_limit() -> None:
    """What Go's start-up does in ``runc exec`` (Go >= 1.19): RLIMIT_NOFILE soft limit = hard limit.

    runc init inherits the raised limit from the runc process, so a process whose spec sets no
    RLIMIT_NOFILE runs with the daemon's hard limit as its soft one, as under dockerd (Go too),
    not with this helper's inherited soft limit. Errors are ignored, as Go does (a hard limit
    above fs.nr_open cannot be set again).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def become_process(process: dict[str, Any], fds: list[int]) -> NoReturn:
    """In the exec process (inside the container's namespaces): set it up as runc does, then exec."""
    stdin, stdout, stderr, errpipe = fds
    try:
        libc = _libc()
        os.setsid()
        for target, fd in enumerate((stdin, stdout, stderr)):
            os.dup2(fd, target)  # the copies are inheritable; the originals are close-on-exec
        raise_nofile_soft_limit()
        for rlimit in process.get("rlimits") or []:
            kind = getattr(resource, str(rlimit["type"]))
            resource.setrlimit(kind, (int(rlimit["soft"]), int(rlimit["hard"])))
        user = process.get("user") or {}
        uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
        os.setgroups([int(g) for g in user.get("additionalGids") or []])
        caps = process.get("capabilities") or {}
        bounding = cap_mask(caps.get("bounding"))
        for number in range(last_cap() + 1):
            if not bounding & (1 << number):
                _check(libc.prctl(PR_CAPBSET_DROP, number, 0, 0, 0), "prctl(PR_CAPBSET_DROP)")
        _check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        cwd = str(process.get("cwd") or "/")
        try:
            os.chdir(cwd)
        except OSError as err:
            reason = f"chdir to cwd ({json.dumps(cwd)}) set in config.json failed: {go_error(err)}"
            raise ExecFailure(reason) from None
        _check(libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
        apply_capabilities(libc, caps)
        if process.get("noNewPrivileges"):
            _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        env: dict[str, str] = {}
        for entry in process.get("env") or []:
            key, _, value = str(entry).partition("=")
            env[key] = value
        if "HOME" not in env:
            env["HOME"] = home_of(uid)
        args = [str(a) for a in process.get("args") or []]
        path = look_path(args[0], env)
        try:
            os.execve(path, args, env)
        except OSError as err:
            raise ExecFailure(f"exec {path}: {go_error(err)}") from None
    except ExecFailure as failure:
        message = f"exec failed: unable to start container process: {failure}"
    except BaseException as exc:  # anything else still must not return into the helper's loop
        message = f"exec failed: unable to start container process: {exc}"
    try:
        os.write(errpipe, message.encode(errors="replace"))
    finally:
        os._exit(127)


class _CloneArgs(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
            "set_tid", "set_tid_size", "cgroup",
        )
    ]  # fmt: skip


def join_cgroups(procs_files: list[str]) -> int | None:
    """Move this (single-threaded) process into the container's cgroups, but for a cgroup v2 one.

    Writing a process's PID to ``cgroup.procs`` takes the kernel's global threadgroup rwsem for
    writing, which waits for an RCU grace period: 7-10 ms for every exec. A v1 ``tasks`` write
    of the current thread skips that lock (cgroup_procs_write_start), and a single-threaded
    process is its only thread. For the v2 hierarchy the child is instead created inside the
    cgroup (clone3 with CLONE_INTO_CGROUP, ``fork_into``): returned here as an open directory.
    """
    unified: int | None = None
    for procs in procs_files:
        directory = os.path.dirname(procs)
        if os.path.exists(os.path.join(directory, "cgroup.controllers")):  # cgroup v2
            if unified is None:
                unified = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            continue
        tasks = os.path.join(directory, "tasks")
        fd = os.open(tasks if os.path.exists(tasks) else procs, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    return unified


def fork_into(cgroup_dir: int | None) -> int:
    """``os.fork``, the child born in the cgroup v2 directory ``cgroup_dir`` when one is given."""
    if cgroup_dir is None:
        return os.fork()
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD, cgroup=cgroup_dir)
    # Safe without os.fork's bookkeeping: this process has a single thread and no at-fork hooks.
    size = ctypes.c_size_t(ctypes.sizeof(args))
    pid = int(libc.syscall(ctypes.c_long(SYS_CLONE3), ctypes.byref(args), size))
    if pid >= 0:
        if pid > 0:
            os.close(cgroup_dir)
        return pid
    err = ctypes.get_errno()
    if err not in (errno.ENOSYS, errno.EINVAL, errno.E2BIG, errno.EOPNOTSUPP):
        raise OSError(err, f"clone3: {os.strerror(err)}")
    # An older kernel: join through cgroup.procs, paying the grace period.
    fd = os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=cgroup_dir)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
        os.close(cgroup_dir)
    return os.fork()


def intermediate(request: dict[str, Any], fds: list[int], report: int) -> NoReturn:
    """Join the container's cgroups and namespaces, fork the exec process, report its PID, exit."""
    try:
        init_pid = int(request["init_pid"])
        joins: list[tuple[int, int]] = []
        for kind in NAMESPACES:
            theirs = f"/proc/{init_pid}/ns/{kind}"
            try:
                if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{kind}").st_ino:
                    continue  # shared with the host (--pid host, --network host, ...)
            except FileNotFoundError:
                continue  # a kernel without this namespace type
            joins.append((os.open(theirs, os.O_RDONLY | os.O_CLOEXEC), CLONE_FLAGS[kind]))
        unified = join_cgroups([str(p) for p in request.get("cgroup_procs") or []])
        libc = _libc()
        for fd, flag in joins:
            _check(libc.setns(fd, flag), "setns")
            os.close(fd)
        pid = fork_into(unified)
        if pid == 0:
            os.close(report)  # the helper reads it to EOF: only this intermediate may hold it
            become_process(request["process"], fds)
        os.write(report, f"P{pid}".encode())
        os._exit(0)
    except BaseException as exc:
        try:
            os.write(report, f"E{exc}".encode(errors="replace"))
        finally:
            os._exit(1)


def handle(request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
    if len(fds) != 4:
        return {"error": f"exec helper: expected 4 descriptors, got {len(fds)}"}
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:
            os.close(r)
            intermediate(request, fds, w)
    finally:
        os.close(w)
    try:
        chunks = []
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    if text.startswith("P"):
        return {"pid": int(text[1:])}
    return {"error": text[1:] or "exec helper: the intermediate process died"}


def serve(sock: socket.socket) -> None:
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 4, socket.MSG_CMSG_CLOEXEC)
        except (ConnectionError, OSError):
            return
        if not data:
            return  # the daemon closed its end
        for fd in fds:
            # recv_fds ignores MSG_CMSG_CLOEXEC before Python 3.12: only stdio may reach the program.
            os.set_inheritable(fd, False)
        try:
            reply = handle(json.loads(data), list(fds))
        except Exception as exc:
            reply = {"error": f"exec helper: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        try:
            sock.send(json.dumps(reply).encode())
        except OSError:
            return


def main() -> None:
    fd = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    os.set_inheritable(fd, False)  # passed to us inheritable; exec'd processes must not get it
    # Everything the forked children need is set up once, here; and with the collector off and
    # the heap frozen, a child touches (copies) as few of the parent's pages as possible.
    _libc()
    last_cap()
    gc.disable()
    gc.freeze()
    serve(socket.socket(fileno=fd))


if __name__ == "__main__":
    main()
