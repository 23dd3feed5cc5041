"""Daemon side of the exec helper (exec_helper.py): exec processes without `runc exec`.

``runc exec`` spends most of its 20-25 ms starting Go twice; the helper, a single-threaded
Python process the daemon starts once, forks the process straight into the container (see
exec_helper.py for what it does and in which order). Only execs that need nothing runc does
beyond that take this path (``eligible``): no TTY (runc's console socket handles the pty), no
seccomp filter, LSM profile or user namespace, capability and rlimit names the helper knows.
Everything else, and every exec while the helper cannot be started, goes through runc.

Requests are serialised (one in flight); a helper that dies is started again at the next exec.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runtime import cgroups
from runtime.exec_helper import CAP_NUMBERS
from runtime.types import IOSpec

HELPER = Path(__file__).with_name("exec_helper.py")
REPLY_MAX = 1 << 16
# The process reports a setup failure or execs within milliseconds; this only bounds a wedge.
SETUP_TIMEOUT = 10.0


class HelperUnavailable(Exception):
    """The helper could not take the request; nothing was started (use runc instead)."""


def container_allows(spec: Mapping[str, Any]) -> bool:
    """What the container's config.json rules out: a seccomp filter, LSM profiles, a user namespace."""
    linux = spec.get("linux") or {}
    process = spec.get("process") or {}
    if linux.get("seccomp") or linux.get("mountLabel") or process.get("apparmorProfile"):
        return False
    if process.get("selinuxLabel"):
        return False
    return not any(ns.get("type") == "user" for ns in linux.get("namespaces") or [])


def eligible(process: Mapping[str, Any], io: IOSpec) -> bool:
    """Whether the helper can start this exec's process exactly as runc would."""
    if io.tty or process.get("terminal"):
        return False
    if process.get("apparmorProfile") or process.get("selinuxLabel") or not process.get("args"):
        return False
    user = process.get("user") or {}
    if user.get("umask") is not None or user.get("username"):
        return False
    caps = process.get("capabilities") or {}
    if any(name not in CAP_NUMBERS for names in caps.values() for name in names or []):
        return False
    return all(hasattr(resource, str(r.get("type"))) for r in process.get("rlimits") or [])


def cgroup_procs(layout: cgroups.CgroupLayout, proc_cgroup: str) -> list[str]:
    """The ``cgroup.procs`` files of the cgroups listed in a /proc/<pid>/cgroup text."""
    found: list[str] = []
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path:
            continue
        if hierarchy == "0" and not controllers:
            mount = layout.unified
        else:
            mount = next((layout.v1[c] for c in controllers.split(",") if c in layout.v1), None)
        if mount is None:
            continue
        procs = mount / path.lstrip("/") / "cgroup.procs"
        if procs.exists() and str(procs) not in found:
            found.append(str(procs))
    return found


async def read_to_eof(fd: int, timeout: float = SETUP_TIMEOUT) -> bytes:
    """Everything written to a pipe until its last writer is gone; closes ``fd``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    chunks: list[bytes] = []

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as err:
            data = b""
            chunks.append(f"read error: {err}".encode())
        if data:
            chunks.append(data)
        elif not done.done():
            done.set_result(None)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return b"".join(chunks)


class FastExec:
    """The helper process and its request channel (one per OciRuntime)."""

    def __init__(self, python: str = sys.executable, script: Path = HELPER) -> None:
        self.python = python
        self.script = script
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._lock = asyncio.Lock()

    async def _ensure_helper(self) -> socket.socket:
        if self._proc is not None and self._proc.returncode is None and self._sock is not None:
            return self._sock
        await self._stop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            # -I -S: no site-packages, no environment: the helper needs the standard library only.
            self._proc = await asyncio.create_subprocess_exec(
                self.python,
                "-I",
                "-S",
                str(self.script),
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
            )
        except OSError as err:
            ours.close()
            raise HelperUnavailable(f"cannot start the exec helper: {err}") from err
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        return ours

    async def spawn(
        self, init_pid: int, cgroup_procs: Sequence[str], process: Mapping[str, Any], stdio: Sequence[int]
    ) -> tuple[int, int]:
        """Start ``process`` in the container of ``init_pid``; returns (host PID, error pipe fd).

        Read the error pipe to EOF (``read_to_eof``): text there means the process failed before
        exec and is exiting with 127. Raises HelperUnavailable when nothing was started.
        """
        payload = json.dumps({"init_pid": init_pid, "cgroup_procs": list(cgroup_procs), "process": process})
        async with self._lock:
            sock = await self._ensure_helper()
            r, w = os.pipe2(os.O_CLOEXEC)
            try:
                try:
                    socket.send_fds(sock, [payload.encode()], [*stdio, w])
                finally:
                    os.close(w)
                reply = await asyncio.get_running_loop().sock_recv(sock, REPLY_MAX)
            except OSError as err:
                os.close(r)
                await self._stop()
                raise HelperUnavailable(f"exec helper: {err}") from err
            except BaseException:
                os.close(r)
                raise
        if not reply:
            os.close(r)
            await self._stop()
            raise HelperUnavailable("the exec helper exited")
        answer = json.loads(reply)
        if "pid" not in answer:
            os.close(r)
            raise HelperUnavailable(str(answer.get("error") or "exec helper: no answer"))
        return int(answer["pid"]), r

    async def _stop(self) -> None:
        if self._sock is not None:
            self._sock.close()  # the helper exits at EOF
            self._sock = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), 2.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def close(self) -> None:
        async with self._lock:
            await self._stop()
