"""The runtime seam: what the engine may ask of an OCI runtime, and nothing else.

The engine talks to `Runtime` / `Task` / `Process` only; `runc.OciRuntime` drives a real
runc, `fake.FakeRuntime` runs Python coroutines for engine unit tests. The shapes follow
containerd's task service (create → start → wait → delete, exec as a child process of a
task) because dockerd's container code is written against exactly that life cycle.

Non-goals: images, rootfs mounts, networks, logging. The bundle (config.json + mounted
rootfs) is prepared by the engine (see `bundle.py`); the runtime only runs it.
"""

from __future__ import annotations

import re
import signal as _signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from engine import errdefs

# A signal as the engine receives it from `docker kill -s`: a number, or a name with or
# without the SIG prefix ("TERM", "SIGKILL"). `parse_signal` normalises it.
Signal = int | str


@dataclass(frozen=True)
class ConsoleSize:
    """Docker's HostConfig.ConsoleSize / exec ConsoleSize: [height, width]."""

    height: int
    width: int


@dataclass(frozen=True)
class IOSpec:
    """How a process's stdio is wired.

    tty:   a pseudo-terminal (one combined output stream) instead of pipes.
    stdin: keep a writable stdin; without it the process reads /dev/null (docker run without -i).
    """

    tty: bool = False
    stdin: bool = False
    console_size: ConsoleSize | None = None


@dataclass(frozen=True)
class ExitStatus:
    """How a task or exec process ended.

    code follows the shell / Docker convention: the exit code, or 128 + signal number when
    a signal killed it (SIGKILL → 137, SIGTERM → 143); ``signal`` is then that number.
    oom_killed is true when the kernel's OOM killer fired in the container's cgroup during its
    life (Docker's State.OOMKilled, which is also set when the victim was not the init).
    """

    code: int
    signal: int | None
    oom_killed: bool
    exited_at: datetime


class StartError(errdefs.InvalidParameter):
    """The runtime refused to start the process because of its own configuration.

    dockerd (daemon/start.go translateContainerdStartErr) answers these with 400 and records
    ``exit_code`` in State.ExitCode: 127 for a missing command or a file/directory mount
    mix-up, 126 for a command that cannot be executed. Other failures are errdefs.Internal
    (dockerd records 128 for those).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


StreamName = Literal["stdout", "stderr"]


class OutputStream(Protocol):
    """One output stream of a process; a single consumer reads it.

    The runtime pumps the stream from the moment the process exists and buffers a bounded
    amount; when the consumer falls behind, the runtime stops reading and the process blocks
    on write (dockerd's default "blocking" log mode). The engine must therefore consume
    every stream it is given, even when nobody is attached.
    """

    async def read(self) -> bytes:
        """The next chunk; b"" once the stream has ended (all writers gone or closed)."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...


class Stdio(Protocol):
    """The daemon's end of a process's stdio.

    Non-TTY: stdout and stderr are separate pipes. TTY: ``stdout`` carries the terminal's
    combined output and ``stderr`` is empty (it ends at once), as with `docker run -t`.
    """

    @property
    def tty(self) -> bool: ...

    @property
    def stdout(self) -> OutputStream: ...

    @property
    def stderr(self) -> OutputStream: ...

    async def write_stdin(self, data: bytes) -> None:
        """Write all of ``data``, waiting while the pipe/terminal is full.

        Bytes written after the process closed its stdin (or without IOSpec.stdin) are
        discarded, as dockerd's stdin copier drops them.
        """
        ...

    async def close_stdin(self) -> None:
        """End of input: close the pipe, or on a terminal send VEOF (ctrl-D)."""
        ...

    def close(self) -> None:
        """Drop the daemon's ends now: output streams end, later writes are discarded."""
        ...


class Process(Protocol):
    """A process started with `Task.exec` (`docker exec`)."""

    @property
    def id(self) -> str: ...

    @property
    def pid(self) -> int: ...

    @property
    def stdio(self) -> Stdio: ...

    async def wait(self) -> ExitStatus: ...

    async def kill(self, sig: Signal) -> None: ...

    async def resize(self, width: int, height: int) -> None: ...


class Task(Protocol):
    """A created container: its init process exists (stopped before exec) once `create` returns."""

    @property
    def id(self) -> str: ...

    @property
    def pid(self) -> int: ...

    @property
    def stdio(self) -> Stdio: ...

    @property
    def exit_status(self) -> ExitStatus | None:
        """The exit status once the init has been reaped, without waiting."""
        ...

    async def start(self) -> None: ...

    async def kill(self, sig: Signal, all: bool = False) -> None: ...

    async def wait(self) -> ExitStatus: ...

    async def pause(self) -> None: ...

    async def resume(self) -> None: ...

    async def resize(self, width: int, height: int) -> None:
        """Set the terminal size; a no-op without a TTY (as containerd's shim does)."""
        ...

    async def exec(self, exec_id: str, process_spec: dict[str, Any], io: IOSpec) -> Process:
        """Start an extra process (an OCI `process` object) in the container; it runs at once."""
        ...

    async def update(self, resources: dict[str, Any]) -> None:
        """Apply new limits (an OCI `linux.resources` object), e.g. for `docker update`."""
        ...

    async def delete(self, force: bool = False) -> None:
        """Remove the runtime's state; ``force`` kills a running init first."""
        ...


class Runtime(Protocol):
    async def create(self, id: str, bundle: Path, io: IOSpec) -> Task:
        """Create the container from ``bundle``; its stdio is live, its command not yet started."""
        ...

    async def cleanup_orphan(self, id: str) -> None:
        """Force-remove leftover runtime state of a container from an earlier daemon life."""
        ...

    async def list_ids(self) -> list[str]: ...

    async def state(self, id: str) -> dict[str, Any]:
        """runc's state JSON: ``status`` ("created" / "running" / "paused" / "stopped"), ``pid``,
        ``bundle``; NotFound when the runtime does not know ``id``."""
        ...

    async def close(self) -> None:
        """Stop background work (the reaper's sweep); containers are not touched."""
        ...


_SIGNALS_BY_NAME = {
    name: int(sig) for name, sig in _signal.Signals.__members__.items() if not name.startswith("SIG_")
}


def parse_signal(sig: Signal) -> int:
    """Normalise "TERM" / "SIGTERM" / "15" / 15 to 15; InvalidParameter with dockerd's text otherwise."""
    if isinstance(sig, int):
        number = sig
    else:
        text = sig.strip()
        name = text.upper().removeprefix("SIG")
        rt = re.fullmatch(r"RT(MIN\+|MAX-)(\d+)", name)
        if text.isdigit():
            number = int(text)
        elif rt:
            # Docker's Linux signal map also knows RTMIN+n and RTMAX-n.
            offset = int(rt.group(2))
            number = _signal.SIGRTMIN + offset if rt.group(1) == "MIN+" else _signal.SIGRTMAX - offset
        elif "SIG" + name in _SIGNALS_BY_NAME:
            return _SIGNALS_BY_NAME["SIG" + name]
        else:
            raise errdefs.InvalidParameter(f"Invalid signal: {sig}")
    if not 0 < number < 65:
        raise errdefs.InvalidParameter(f"Invalid signal: {sig}")
    return number
