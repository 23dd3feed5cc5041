"""Bring up ``lo`` in a container's fresh network namespace.

runc creates the namespace but leaves its loopback interface down; dockerd's libnetwork brings
it up for every sandbox (``--network none`` included), and programs expect 127.0.0.1 to work.
Until the networking area owns sandboxes, the engine does this one step between ``runc create``
and ``runc start``, when the init exists but has not run the user's command yet.
"""

from __future__ import annotations

import asyncio
import shutil

from engine import errdefs

_NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
_IP = shutil.which("ip") or "/usr/sbin/ip"


async def bring_up(pid: int) -> None:
    """``ip link set lo up`` inside the network namespace of ``pid``; errdefs.Internal on failure."""
    proc = await asyncio.create_subprocess_exec(
        _NSENTER,
        f"--net=/proc/{pid}/ns/net",
        _IP,
        "link",
        "set",
        "lo",
        "up",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise errdefs.Internal(f"failed to set up loopback interface: {detail}")
