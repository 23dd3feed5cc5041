"""Network sandboxes: named network namespaces under ``<exec_root>/netns/<id>``, and a way to run code in one.

A namespace is made by a short-lived thread that unshares its own network namespace (the
namespace is a per-thread attribute, so the rest of the process is untouched) and bind-mounts
``/proc/thread-self/ns/net`` onto the sandbox file, which keeps the namespace alive after the
thread is gone; ``lo`` is brought up inside while the thread is there. Deleting unmounts and
unlinks; the kernel frees the namespace, and every veth inside it, once no process is left in it.

``run_in_netns`` runs a function in a fresh thread that has joined the namespace with setns(2)
and then ends, so a pooled worker thread is never left in the wrong namespace. Sockets, including
pyroute2's netlink sockets, belong to the namespace they were created in, so objects made there
keep working from any thread afterwards.

All functions here block; the engine calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute

from engine import errdefs
from network.netlink import run_in_thread

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MNT_DETACH = 0x2
_SANDBOX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

_libc = ctypes.CDLL(None, use_errno=True)


def _oserror(what: str, path: Path | str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}", str(path))


def setns(path: Path) -> None:
    """Move the calling thread into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise _oserror("setns", path)
    finally:
        os.close(fd)


def run_in_netns(path: Path, fn: Callable[[], T]) -> T:
    """Run ``fn`` inside the network namespace at ``path`` (e.g. to make sockets or IPRoute there)."""

    def inner() -> T:
        setns(path)
        return fn()

    return run_in_thread(inner, f"netns:{path.name}")


def is_netns(path: Path) -> bool:
    """True if ``path`` is a bind-mounted network namespace (nsfs) rather than the empty placeholder."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except OSError:
        return False


def create_netns(path: Path, *, ipv6: bool = False) -> None:
    """Create a network namespace bound at ``path`` (which must not exist) with ``lo`` up and, unless
    ``ipv6``, IPv6 off on every interface it will have (dockerd's sandboxes without IPv6 show no
    inet6 address, not even a link-local one)."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)

    def make() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            raise _oserror("unshare", path)
        source = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        if _libc.mount(source, os.fsencode(path), None, MS_BIND, None) != 0:
            raise _oserror("mount", path)
        if not ipv6:
            # /proc/sys/net shows the namespace of the thread that opens it: this new one.
            for scope in ("default", "all"):
                with contextlib.suppress(FileNotFoundError):  # a kernel without IPv6
                    Path(f"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6").write_text("1")
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    try:
        run_in_thread(make, f"netns-create:{path.name}")
    except BaseException:
        delete_netns(path)
        raise


def delete_netns(path: Path) -> None:
    """Unmount and remove a namespace file; a missing or unmounted one is fine."""
    if _libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount: {os.strerror(err)}", str(path))
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class SandboxManager:
    """The sandboxes of one daemon: ``root`` is ``<exec_root>/netns``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sandbox_id: str) -> Path:
        if not _SANDBOX_ID.fullmatch(sandbox_id):
            raise errdefs.InvalidParameter(f"invalid sandbox id: {sandbox_id!r}")
        return self.root / sandbox_id

    def create(self, sandbox_id: str, *, ipv6: bool = False) -> Path:
        path = self.path(sandbox_id)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            create_netns(path, ipv6=ipv6)
        except FileExistsError:
            raise errdefs.Conflict(f"sandbox {sandbox_id} already exists") from None
        return path

    def delete(self, sandbox_id: str) -> None:
        delete_netns(self.path(sandbox_id))

    def exists(self, sandbox_id: str) -> bool:
        return is_netns(self.path(sandbox_id))

    def list(self) -> list[str]:
        """Every sandbox file, mounted or not (start-up reconciliation deletes the stale ones)."""
        try:
            return sorted(p.name for p in self.root.iterdir())
        except FileNotFoundError:
            return []
