"""skiffd: the daemon process. Flags → ``DaemonConfig`` → ``engine.wiring.build`` → ``create_app``
→ uvicorn on UNIX sockets this module binds itself.

Why bind ourselves: uvicorn's ``uds=`` makes the socket 0666, and this API is root-equivalent.
Here the socket is created under a 0177 umask, then owned by root:<group> with mode 0660,
like dockerd's. Startup order: lock the data root (one daemon per data root), write the pid
file, build the services, bind the sockets, serve. Everything is undone in reverse on exit.

Shutdown (SIGTERM/SIGINT): ``SkiffServer.shutdown`` first tells the engine (``begin_shutdown``)
so ``/events`` and other long streams end, then lets uvicorn drain connections; afterwards the
services shut down and the socket, pid file and lock are released. Exit status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import grp
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Generator, Sequence
from pathlib import Path

import uvicorn

from api.app import create_app
from api.flags import ConfigError, load_config
from api.ping import PingFastPathProtocol
from engine import wiring
from engine.config import DaemonConfig
from storage.jsonfile import atomic_write_bytes

log = logging.getLogger("skiff.daemon")

LOCK_FILE = "skiffd.lock"
DEFAULT_GROUP = "docker"
SOCKET_MODE = 0o660
GRACEFUL_SHUTDOWN_SECONDS = 10
LISTEN_BACKLOG = 1024
_LOG_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}


class StartupError(Exception):
    pass


# glibc's mallopt parameter; other C libraries lack mallopt/malloc_trim and are left alone.
M_ARENA_MAX = -8
MALLOC_ARENAS = 2
TRIM_INTERVAL_TICKS = 5  # uvicorn ticks every 0.1 s


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def limit_malloc_arenas() -> None:
    """At most two malloc arenas (must run before the first thread starts).

    glibc gives each thread that allocates an arena of its own, up to 8 per CPU; the worker
    threads that unpack layers and write tars each keep megabytes of freed buffers in theirs.
    Two are enough for an event loop plus a few workers and bound what idle memory can hold.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def skip_unused_imports() -> None:
    """Keep httpx's command-line client (rich, pygments: ~3 MiB) out of the daemon.

    ``import httpx`` imports ``httpx._main`` when its optional CLI dependencies are installed
    (test tools pull them into the venv) and falls back to a stub otherwise; a ``None`` entry in
    ``sys.modules`` makes that import fail the documented way. Nothing in the daemon runs it.
    """
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def release_free_memory() -> None:
    """Hand memory that is free inside malloc's heaps back to the kernel (glibc malloc_trim).

    Large buffers (1 MiB tar and hash chunks) stay inside the heap once freed, because glibc
    raises its mmap threshold after the first one; without this an idle daemon keeps the
    peak of its last image load resident.
    """
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


class DataRootLock:
    """An exclusive flock on <data-root>/skiffd.lock held for the daemon's lifetime.

    The file is never unlinked: unlinking a lock file while others may have it open lets two
    processes each lock a different inode.
    """

    def __init__(self, data_root: Path) -> None:
        self.data_root = data_root
        self.path = data_root / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        self.data_root.mkdir(mode=0o711, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StartupError(
                f"another daemon is running on data root {self.data_root} (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_pidfile(path: Path) -> None:
    """dockerd's pidfile.Write: refuse while the recorded process still runs."""
    try:
        recorded = int(path.read_text().strip() or "0")
    except (FileNotFoundError, ValueError):
        recorded = 0
    if recorded and recorded != os.getpid() and _pid_alive(recorded):
        raise StartupError(f"pid file found, ensure skiffd is not running or delete {path}")
    atomic_write_bytes(path, f"{os.getpid()}\n".encode(), mode=0o644)


def remove_pidfile(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()


def socket_group(name: str | None) -> int:
    if name is None:
        try:
            return grp.getgrnam(DEFAULT_GROUP).gr_gid
        except KeyError:
            return 0
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise StartupError(f"group {name} not found") from None


def _listening(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    finally:
        probe.close()
    return True


def bind_unix_socket(path: Path, gid: int) -> socket.socket:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise StartupError(f"{path} exists and is not a socket")
        if _listening(path):
            raise StartupError(f"another daemon is listening on {path}")
        path.unlink()  # stale: left behind by a daemon that did not exit cleanly
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is 0600 from birth, never briefly world-writable
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    try:
        os.chown(path, os.getuid(), gid)
        os.chmod(path, SOCKET_MODE)
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        path.unlink(missing_ok=True)
        raise
    return sock


class SkiffServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, services: wiring.Services) -> None:
        super().__init__(config)
        self.services = services
        self._requests_seen = 0
        self._trimmed_at = 0

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)
        if counter % TRIM_INTERVAL_TICKS == 0:
            self._trim_after_activity()
        return should_exit

    def _trim_after_activity(self) -> None:
        # Once per burst of requests, when a whole interval has passed without a new one.
        total = self.server_state.total_requests
        if total != self._requests_seen:
            self._requests_seen = total
        elif total != self._trimmed_at:
            self._trimmed_at = total
            release_free_memory()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Before uvicorn waits for connections: /events and other long streams end on this.
        wiring.begin_shutdown(self.services)
        await super().shutdown(sockets=sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn's own version re-raises the signal after shutdown, which would make a clean
        # SIGTERM exit look like a kill (status 143). Handle them on the loop instead.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def socket_paths(config: DaemonConfig) -> list[Path]:
    return [Path(host.removeprefix("unix://")) for host in config.hosts]


async def serve(config: DaemonConfig) -> None:
    gid = socket_group(config.group)
    services = wiring.build(config)
    bound: list[tuple[Path, socket.socket]] = []
    try:
        # Before the socket exists: clients that see it answer see reconciled container state.
        await wiring.start(services)
        for path in socket_paths(config):
            bound.append((path, bind_unix_socket(path, gid)))
            log.info("API listen on %s", path)
        uv_config = uvicorn.Config(
            create_app(services),
            http=PingFastPathProtocol,  # DockerH11Protocol (hijack) + the /_ping fast path
            loop="asyncio",
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,  # the version middleware sends dockerd's Server header
            proxy_headers=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        server = SkiffServer(uv_config, services)
        release_free_memory()  # what building the app (pydantic schemas, imports) freed again
        await server.serve(sockets=[sock for _, sock in bound])
    finally:
        for path, sock in bound:
            sock.close()
            path.unlink(missing_ok=True)
        await wiring.shutdown(services)


def configure_logging(level: str) -> None:
    # Every request logs a line: records need not look up thread and process names.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(
        level=_LOG_LEVELS.get(level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pyroute2 logs every netlink message at debug level (thousands of lines per container start)
    # and resets its logger's level when imported, so the filter sits on the handlers instead.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_pyroute2)


def _quiet_pyroute2(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.INFO or not record.name.startswith("pyroute2")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"skiffd: {exc}", file=sys.stderr)
        return 1
    limit_malloc_arenas()
    skip_unused_imports()
    configure_logging(config.log_level)
    lock = DataRootLock(config.data_root)
    pidfile = config.pidfile or config.exec_root / "skiffd.pid"
    try:
        wiring.prepare_roots(config)
        lock.acquire()
        try:
            write_pidfile(pidfile)
            try:
                asyncio.run(serve(config))
            finally:
                remove_pidfile(pidfile)
        finally:
            lock.release()
    except (StartupError, OSError) as exc:
        log.debug("startup failed", exc_info=True)
        print(f"skiffd: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
