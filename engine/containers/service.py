"""Container lifecycle: create, start, stop, kill, restart, wait, remove, resize, shutdown.

The daemon owns every running container's stdio and learns each exit from the runtime
(``Task.wait``); the per-run monitor task turns an exit into state, events, a restart (policy
with dockerd's backoff) or an automatic removal (``--rm``). Each container has one
``asyncio.Lock`` for state transitions; state is written through to ``config.v2.json`` before a
call returns (architecture.md §4). Attach and logs sessions live in ``attach.py``; reconciliation
at daemon start in ``restore.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import signal as _signal
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from engine import errdefs, ids
from engine.containers import createconfig, files, initlayer
from engine.containers.caps import validate_capabilities
from engine.containers.devices import resolve_devices
from engine.containers.health import validate_healthcheck
from engine.containers.live import LiveContainer
from engine.containers.logconfig import validate_log_config
from engine.containers.model import Container, now_rfc3339, parse_time
from engine.containers.mounts import ContainerMounts, with_network_files
from engine.containers.security import parse_security_opt
from engine.containers.spec import build_spec, parse_process_args
from engine.containers.store import ContainerStore, name_conflict
from engine.containers.streams import Subscription
from engine.containers.userlookup import ResolvedUser, resolve_user
from engine.networks.attach import DNS_NAMESERVER
from engine.networks.service import empty_endpoint_settings
from engine.system import ContainerCounts
from runtime.bundle import Bundle
from runtime.cgroups import cgroups_path
from runtime.types import ConsoleSize, IOSpec, Runtime, StartError, Task, parse_signal
from storage import mount as mounts

if TYPE_CHECKING:
    from engine.events import EventBus
    from engine.images.service import ImageService
    from engine.networks.attach import ContainerNetworking
    from engine.volumes.service import VolumeService
    from storage.layers import LayerStore

log = logging.getLogger("skiff.containers")
T1 = TypeVar("T1")
T2 = TypeVar("T2")

WAIT_CONDITIONS = ("not-running", "next-exit", "removed")
DEFAULT_STOP_TIMEOUT = 10
# dockerd's Kill(): after SIGKILL, wait this long for the exit before giving up.
KILL_WAIT = 10.0
# dockerd's restartmanager: 100 ms doubling up to a minute, reset after 10 s of running.
BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 10.0


@dataclass
class WaitResult:
    status_code: int
    error: str | None = None


@dataclass
class _Waiters:
    exit: list[asyncio.Future[WaitResult]] = field(default_factory=list)
    removed: list[asyncio.Future[WaitResult]] = field(default_factory=list)


@dataclass
class PendingAttach:
    """An attach to a container that is not running: subscribed at its next start, before any output."""

    stdout: bool
    stderr: bool
    future: asyncio.Future[tuple[LiveContainer, Subscription]]


class ContainerService:
    def __init__(
        self,
        *,
        store: ContainerStore,
        images: ImageService,
        layers: LayerStore,
        runtime: Runtime,
        events: EventBus,
        exec_root: Path,
        init_path: str | None = None,
        dns: list[str] | None = None,
        network_ids: Mapping[str, str] | None = None,
        volumes: VolumeService | None = None,
        networking: ContainerNetworking | None = None,
    ) -> None:
        self.store = store
        self.images = images
        self.layers = layers
        self.runtime = runtime
        self.events = events
        self.bundles = exec_root / "bundles"
        self.init_path = init_path
        self.dns = list(dns or [])
        # IDs of the pre-defined networks (engine/networkids.py), shown once a container started.
        self.network_ids = dict(network_ids or {})
        # Sandboxes, endpoints, ports and DNS of running containers; None: the runtime's own
        # namespace with nothing in it (engine unit tests).
        self.networking = networking
        if networking is not None:
            networking.files_changed = self.refresh_network_files
        # Volumes, binds and tmpfs mounts of each container (create, start, stop, rm -v).
        self.mounts = ContainerMounts(volumes, store=store, layers=layers, scratch=exec_root / "volume-copy")
        self.live: dict[str, LiveContainer] = {}
        self.shutting_down = False
        # Exec and admin code hook in here: called (synchronously) after every exit is recorded.
        self.on_exit: Callable[[Container, LiveContainer], Any] | None = None
        # Health monitors (health.py) follow each run: called after a start, pause, unpause and exit.
        self.state_hooks: list[Callable[[Container], None]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiters: dict[str, _Waiters] = {}
        self._pending_attach: dict[str, list[PendingAttach]] = {}
        self._backoff: dict[str, float] = {}
        self._restart_timers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._monitors: set[asyncio.Task[Any]] = set()
        self._stopping_all: asyncio.Task[None] | None = None
        # Set at daemon shutdown once every container has stopped and its exit is recorded:
        # waits that can no longer be answered (a container never started) end then.
        self.all_stopped = asyncio.Event()

    # -- helpers -------------------------------------------------------------------

    def get(self, ref: str) -> Container:
        return self.store.get(ref)

    def lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def publish(self, c: Container, action: str, extra: dict[str, str] | None = None) -> None:
        attrs = {**c.labels, "image": str(c.config.get("Image", "")), "name": c.name.lstrip("/")}
        if extra:
            attrs.update(extra)
        self.events.publish("container", action, c.id, attrs)

    def save(self, c: Container) -> None:
        self.store.save(c)

    def bundle(self, cid: str) -> Bundle:
        """The OCI bundle of container ``cid`` (its rootfs is mounted there while it runs)."""
        return Bundle(self.bundles / cid)

    def store_has(self, cid: str) -> bool:
        try:
            return self.store.get(cid).id == cid
        except errdefs.EngineError:
            return False

    def counts(self) -> ContainerCounts:
        """For /info: paused counts as paused, running as running, the rest (restarting too) stopped."""
        running = paused = stopped = 0
        for c in self.store:
            if c.state.paused:
                paused += 1
            elif c.state.running and not c.state.restarting:  # dockerd counts restarting as stopped
                running += 1
            else:
                stopped += 1
        return ContainerCounts(running=running, paused=paused, stopped=stopped)

    def image_usage(self, image_id: str) -> list[tuple[str, bool]]:
        """Who uses ``image_id`` (for rmi's 409 texts): [(container id, running)]."""
        return [(c.id, c.state.alive) for c in self.store if c.image_id == image_id]

    # -- create --------------------------------------------------------------------

    async def create(self, name: str | None, body: dict[str, Any]) -> tuple[Container, list[str]]:
        config = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
        host_config = dict(body.get("HostConfig") or {})
        networking = dict(body.get("NetworkingConfig") or {})
        validate_healthcheck(config.get("Healthcheck"))
        createconfig.validate_host_config(host_config)
        validate_capabilities(host_config.get("CapAdd"), host_config.get("CapDrop"))
        parse_security_opt(host_config.get("SecurityOpt"))
        log_config = host_config.get("LogConfig") or {}
        validate_log_config(str(log_config.get("Type") or ""), log_config.get("Config") or {})
        if name:
            cname = ids.validate_container_name(name)
            owner = self.store.owner_of(cname)
            if owner is not None:
                raise name_conflict(cname, owner)
        else:
            cname = ids.generate_name(self.store.names())
        image_ref = str(config.get("Image") or "")
        if not image_ref:
            raise errdefs.InvalidParameter("No image was specified")
        image = await self.images.resolve(image_ref)
        merged = createconfig.merge_image_config(config, self.images.image_config(image))
        createconfig.fill_defaults(merged, host_config, cgroup_v2=_cgroup_v2())
        argv = parse_process_args(merged)
        cid = ids.new_id()
        c = Container(
            id=cid,
            name=cname,
            created=now_rfc3339(),
            image_id=image.id,
            path=argv[0],
            args=argv[1:],
            config=merged,
            host_config=host_config,
            networking_config=networking,
            snapshot_key=cid,
            runtime=str(host_config.get("Runtime") or "runc"),
        )
        if not merged.get("Hostname"):
            merged["Hostname"] = files.container_hostname(cid, merged, host_config)
        if self.networking is not None:
            c.network_settings = self.networking.create_settings(host_config, networking)
        else:
            c.network_settings = _initial_network_settings(host_config)
        async with AsyncExitStack() as undo:
            await asyncio.to_thread(self.layers.prepare_rw, cid, self.images.top_chain_id(image))
            undo.push_async_callback(asyncio.to_thread, self.layers.remove_rw, cid)
            snapshots = self.layers.snapshotter
            await asyncio.to_thread(initlayer.populate, snapshots.upperdir(cid), snapshots.lowerdirs(cid))
            undo.push_async_callback(asyncio.to_thread, shutil.rmtree, self.store.dir(cid), True)
            await self.mounts.register(c, undo)
            self.store.reserve(c)
            undo.pop_all()
        self.publish(c, "create")
        return c, []

    # -- start ---------------------------------------------------------------------

    async def start(self, ref: str) -> None:
        c = self.get(ref)
        try:
            async with self.lock(c.id):
                if c.state.paused:
                    raise errdefs.Conflict("cannot start a paused container, try unpause instead")
                if c.state.alive:
                    raise errdefs.NotModified()
                if c.state.status == "removing":
                    raise errdefs.Conflict("container is marked for removal and cannot be started")
                if c.state.dead:
                    raise errdefs.Conflict("container is marked for removal and cannot be started")
                # A manual start resets what the restart policy counted (dockerd's ResetRestartManager).
                c.state.manually_stopped = False
                c.restart_count = 0
                self._backoff.pop(c.id, None)
                await self._start_locked(c)
        except errdefs.EngineError as err:
            refused = isinstance(err, errdefs.NotModified | errdefs.Conflict)
            if c.host_config.get("AutoRemove") and not refused:
                # dockerd removes the container before answering; the CLI then waits for the removal.
                await self._auto_remove(c)
            raise

    async def _prepare_rootfs(
        self, c: Container, rootfs: Path, undo: AsyncExitStack
    ) -> tuple[ResolvedUser, list[dict[str, Any]]]:
        """Mount the layers, find the user, mount the volumes: (user, volume mounts) for the spec."""
        layer_mounts = await asyncio.to_thread(self.layers.snapshotter.mounts, c.snapshot_key)
        await asyncio.to_thread(mounts.mount_all, layer_mounts, rootfs)
        undo.push_async_callback(asyncio.to_thread, mounts.unmount, rootfs)
        user = await asyncio.to_thread(
            resolve_user,
            str(c.config.get("User") or ""),
            rootfs,
            [str(g) for g in c.host_config.get("GroupAdd") or []],
        )
        volume_mounts = await self.mounts.setup(c, undo)
        return user, volume_mounts

    async def _network_sandbox(self, c: Container, undo: AsyncExitStack) -> str | None:
        """The netns of the OCI spec: "host", another container's, or a sandbox made for this one
        (still empty: ``_wire_network`` fills it)."""
        netns = self._netns_path(c)
        if netns is not None or self.networking is None:
            return netns
        path = await self.networking.create_sandbox(c)
        undo.push_async_callback(self.networking.teardown, c)
        return str(path) if path is not None else None

    async def _wire_network(self, c: Container) -> None:
        """The sandbox's interfaces, ports and DNS, then the files that name the address."""
        if self.networking is None or self.networking.sandbox_path(c) is None:
            return  # host or container: mode, or no networking at all
        await self.networking.wire(c)
        # Bind-mounted by the runtime already: rewritten in place.
        await self._write_container_files(c, in_place=True)

    async def _create_task(self, c: Container, bundle: Bundle, io: IOSpec, undo: AsyncExitStack) -> Task:
        task = await self.runtime.create(c.id, bundle.path, io)
        undo.push_async_callback(task.delete, True)
        return task

    def _netns_path(self, c: Container) -> str | None:
        mode = str(c.host_config.get("NetworkMode") or "")
        if mode == "host":
            return "host"
        if mode.startswith("container:"):
            other = self.get(mode.split(":", 1)[1])
            if not other.state.running or not other.state.pid:
                raise errdefs.Conflict(
                    "cannot join network namespace of a non running container: "
                    f"container {other.id} is {other.state.status}"
                )
            return f"/proc/{other.state.pid}/ns/net"
        return None

    async def _start_locked(self, c: Container) -> None:
        """Mount, write the bundle, create and start the task; undo everything on failure."""
        bundle = self.bundle(c.id)
        rootfs = bundle.rootfs
        async with AsyncExitStack() as undo:
            try:
                await asyncio.to_thread(Bundle.prepare, self.bundles, c.id)
                undo.push_async_callback(remove_bundle, bundle)
                # The network and the root filesystem do not depend on each other: made side by
                # side, each registering its own undo step, and both finished before any unwinding.
                netns, (user, volume_mounts) = await _all_or_raise(
                    self._network_sandbox(c, undo), self._prepare_rootfs(c, rootfs, undo)
                )
                # Written before the sandbox has its address, which is added once it has one.
                await self._write_container_files(c)
                spec = build_spec(
                    c.config,
                    c.host_config,
                    rootfs=str(rootfs),
                    user=user,
                    hostname=str(c.config.get("Hostname") or c.id[:12]),
                    extra_mounts=with_network_files(
                        volume_mounts,
                        files.bind_mounts(
                            Path(c.hostname_path),
                            Path(c.hosts_path),
                            Path(c.resolv_conf_path),
                            bool(c.host_config.get("ReadonlyRootfs")),
                        ),
                    ),
                    netns_path=netns,
                    cgroups_path=cgroups_path(c.id),
                    init_path=self.init_path,
                    devices=await asyncio.to_thread(resolve_devices, c.host_config),
                )
                await asyncio.to_thread(bundle.write_config, spec)
                size = _console(c.host_config.get("ConsoleSize"))
                io = IOSpec(tty=c.tty, stdin=bool(c.config.get("OpenStdin")), console_size=size)
                # The runtime makes the container in the empty namespace while the network fills
                # it: nothing runs in there before ``task.start``.
                task, _ = await _all_or_raise(self._create_task(c, bundle, io, undo), self._wire_network(c))
                live = LiveContainer.open(c, task)
                undo.push_async_callback(live.abort)
                self.live[c.id] = live
                undo.callback(self.live.pop, c.id, None)
                self._hand_over_attaches(c.id, live)
                await task.start()
            except StartError as err:
                self._record_start_failure(c, err.message, err.exit_code)
                raise
            except errdefs.EngineError as err:
                self._record_start_failure(c, err.message, 128)
                raise
            except OSError as err:  # the host refused something (disk full, fd limit, ...)
                self._record_start_failure(c, str(err), 128)
                raise errdefs.Internal(str(err)) from err
            self._set_network_ids(c)
            c.state.set_running(task.pid)
            self.save(c)
            undo.pop_all()
        live.monitor = self.spawn(self._monitor(c, live, bundle))
        self._monitors.add(live.monitor)
        live.monitor.add_done_callback(self._monitors.discard)
        self.publish(c, "start")
        for hook in self.state_hooks:
            hook(c)

    def _set_network_ids(self, c: Container) -> None:
        """dockerd fills an endpoint's NetworkID when the container connects, i.e. at its start."""
        for name, endpoint in ((c.network_settings or {}).get("Networks") or {}).items():
            if isinstance(endpoint, dict) and name in self.network_ids:
                endpoint["NetworkID"] = self.network_ids[name]

    async def refresh_network_files(self, c: Container) -> None:
        """A running container joined or left a network: dockerd rewrites its hosts and resolv.conf."""
        await self._write_container_files(c, in_place=True)

    async def _write_container_files(self, c: Container, *, in_place: bool = False) -> None:
        """/etc/hostname, /etc/hosts, /etc/resolv.conf and the log path, (re)made at every start.

        dockerd too creates them when the container starts (its inspect shows empty paths
        before that) and rewrites hosts/resolv.conf each time from the current settings.
        """
        cdir = self.store.dir(c.id)
        c.log_path = str(cdir / f"{c.id}-json.log")
        mode = str(c.host_config.get("NetworkMode") or "")
        if mode.startswith("container:") and not in_place:
            # dockerd gives a container sharing another's network that container's files.
            other = self.get(mode.split(":", 1)[1])
            if other.hosts_path and other.resolv_conf_path:
                c.config["Hostname"] = other.config.get("Hostname") or other.short_id
                c.config["Domainname"] = other.config.get("Domainname") or ""
                c.hostname_path, c.hosts_path = other.hostname_path, other.hosts_path
                c.resolv_conf_path = other.resolv_conf_path
                return
        hostname = str(c.config.get("Hostname") or c.short_id)
        net = self.networking
        host_gateway = None
        if net is not None and any(
            files.HOST_GATEWAY in str(h) for h in c.host_config.get("ExtraHosts") or []
        ):
            gw = await net.networks.default_bridge_gateway()
            host_gateway = str(gw) if gw is not None else None
        hp, hosts, resolv = await asyncio.to_thread(
            functools.partial(
                files.write_container_files,
                cdir,
                hostname,
                c.host_config,
                self.dns,
                ip=net.address_of(c) if net is not None else None,
                domainname=str(c.config.get("Domainname") or ""),
                embedded_dns=DNS_NAMESERVER if net is not None and net.uses_embedded_dns(c) else None,
                host_gateway=host_gateway,
                in_place=in_place,
            )
        )
        if in_place:
            return
        c.hostname_path, c.hosts_path, c.resolv_conf_path = str(hp), str(hosts), str(resolv)

    def _record_start_failure(self, c: Container, message: str, exit_code: int) -> None:
        # dockerd keeps the status (created / exited) and records Error and an exit code.
        c.state.error = message
        c.state.exit_code = exit_code
        c.state.running = c.state.restarting = False
        if c.state.status in ("running", "restarting"):
            c.state.status = "exited"
        with contextlib.suppress(OSError):
            self.save(c)

    def _hand_over_attaches(self, cid: str, live: LiveContainer) -> None:
        """Subscribe waiting attach sessions before the first byte can be pumped."""
        for pending in self._pending_attach.pop(cid, []):
            if not pending.future.done():
                sub = live.output.subscribe(stdout=pending.stdout, stderr=pending.stderr)
                pending.future.set_result((live, sub))

    def attach_next_start(self, cid: str, *, stdout: bool, stderr: bool) -> PendingAttach:
        """For attach sessions on a container that is not running (``docker run`` attaches first)."""
        fut: asyncio.Future[tuple[LiveContainer, Subscription]] = asyncio.get_running_loop().create_future()
        pending = PendingAttach(stdout, stderr, fut)
        waiting = [p for p in self._pending_attach.get(cid, []) if not p.future.done()]
        self._pending_attach[cid] = [*waiting, pending]
        return pending

    # -- exit handling -------------------------------------------------------------

    async def _monitor(self, c: Container, live: LiveContainer, bundle: Bundle) -> None:
        status = await live.task.wait()
        await live.drain()
        started_at = c.state.started_at
        restart = False

        def record_exit() -> None:
            nonlocal restart
            self._update_backoff(c.id, started_at)
            restart = (
                not self.shutting_down
                and not live.exit_on_next
                and restart_policy_says(c, status.code, c.state.manually_stopped)
            )
            if restart:
                c.restart_count += 1
                c.state.set_restarting(status.code, status.oom_killed)
            else:
                c.state.set_stopped(status.code, status.oom_killed)
            for hook in self.state_hooks:
                hook(c)
            self.save(c)

        try:
            async with self.lock(c.id):
                # The log is complete and the exit recorded before attach streams end (hijack.md 5).
                await live.close(after=record_exit)
                self.live.pop(c.id, None)
                # dockerd deletes the task before it publishes "die" (compose's attached `up`
                # depends on that order), then releases network and mounts. The rootfs is
                # unmounted beside the task's deletion: runc's delete does not look at it, and no
                # event tells when it goes.
                await asyncio.gather(self._delete_task(live), self._release_rootfs(c, bundle))
                if status.oom_killed:
                    self.publish(c, "oom")
                self.publish(
                    c, "die", {"exitCode": str(status.code), "execDuration": _exec_duration(started_at)}
                )
                await self._release_network(c)  # dockerd's disconnect events follow "die"
                await self.mounts.teardown(c)  # and so do its unmount events
                self._wake(c.id, "exit", WaitResult(status.code))
        finally:
            live.exited.set()
        if self.on_exit is not None:
            self.on_exit(c, live)
        if restart:
            delay = self._backoff.get(c.id, BACKOFF_START)
            self._restart_timers[c.id] = self.spawn(self._restart_later(c, delay))
        elif c.host_config.get("AutoRemove") and not live.manual_restart:
            await self._auto_remove(c)

    @staticmethod
    async def _delete_task(live: LiveContainer) -> None:
        with contextlib.suppress(errdefs.EngineError):
            await live.task.delete(True)

    async def _release_rootfs(self, c: Container, bundle: Bundle) -> None:
        try:
            await asyncio.to_thread(mounts.unmount, bundle.rootfs)
            await remove_bundle(bundle)
        except (errdefs.EngineError, OSError) as err:
            log.warning("cleanup of %s failed: %s", c.short_id, err)

    async def _release_network(self, c: Container) -> None:
        if self.networking is not None:
            await self.networking.teardown(c)
            with contextlib.suppress(OSError):
                self.save(c)

    def _update_backoff(self, cid: str, started_at: str) -> None:
        started = parse_time(started_at)
        ran = (datetime.now(UTC) - started).total_seconds() if started else 0.0
        current = 0.0 if ran >= BACKOFF_RESET_AFTER else self._backoff.get(cid, 0.0)
        self._backoff[cid] = BACKOFF_START if current == 0 else min(current * 2, BACKOFF_MAX)

    async def _restart_later(self, c: Container, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            async with self.lock(c.id):
                if not c.state.restarting or not self.store_has(c.id):
                    return
                try:
                    await self._start_locked(c)
                except errdefs.EngineError as err:
                    log.warning("restart of %s failed: %s", c.short_id, err.message)
                    c.state.set_stopped(c.state.exit_code or 128, error=err.message)
                    self.save(c)
                    self._wake(c.id, "exit", WaitResult(c.state.exit_code, err.message))
        finally:
            if self._restart_timers.get(c.id) is asyncio.current_task():
                del self._restart_timers[c.id]

    def _cancel_restart(self, c: Container) -> None:
        """A stop/kill/rm while waiting to restart: the container stays exited (RestartManager.Cancel)."""
        timer = self._restart_timers.pop(c.id, None)
        if timer is not None:
            timer.cancel()
        if c.state.restarting:
            c.state.set_stopped(c.state.exit_code, c.state.oom_killed, finished_at=c.state.finished_at)
            self.save(c)
            self._wake(c.id, "exit", WaitResult(c.state.exit_code))

    async def _auto_remove(self, c: Container) -> None:
        try:
            await self.remove(c.id, force=True, volumes=True)
        except errdefs.NotFound:
            pass
        except errdefs.EngineError as err:
            log.warning("auto-remove of %s failed: %s", c.short_id, err.message)

    # -- waits ---------------------------------------------------------------------

    def _wake(self, cid: str, kind: str, result: WaitResult) -> None:
        waiters = self._waiters.get(cid)
        if waiters is None:
            return
        futures = waiters.exit if kind == "exit" else waiters.removed
        for fut in futures:
            if not fut.done():
                fut.set_result(result)
        futures.clear()
        if kind == "removed":
            for fut in waiters.exit:
                if not fut.done():
                    fut.set_result(result)
            self._waiters.pop(cid, None)

    def wait(self, ref: str, condition: str | None) -> asyncio.Future[WaitResult]:
        """Validate now (so the API can answer 404/400 before its headers), wait later.

        Cancel the returned future when the client goes away.
        """
        cond = condition or "not-running"
        if cond not in WAIT_CONDITIONS:
            raise errdefs.InvalidParameter(f'invalid condition: "{cond}"')
        c = self.get(ref)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[WaitResult] = loop.create_future()
        waiters = self._waiters.setdefault(c.id, _Waiters())
        waiters.exit = [f for f in waiters.exit if not f.done()]
        waiters.removed = [f for f in waiters.removed if not f.done()]
        if cond == "not-running" and not c.state.alive:
            fut.set_result(WaitResult(c.state.exit_code))
        elif cond == "removed":
            waiters.removed.append(fut)
        else:
            waiters.exit.append(fut)
        return fut

    # -- stop / kill / restart -----------------------------------------------------

    def _mark_kill(self, c: Container, live: LiveContainer | None, sig: int) -> None:
        """dockerd's killWithSignal bookkeeping: ExitOnNext for a stopping signal, manual-stop flag."""
        stop = str(c.config.get("StopSignal") or "")
        exits = True
        if stop and sig != _signal.SIGKILL:
            try:
                exits = parse_signal(stop) == sig
            except errdefs.InvalidParameter:
                exits = False
        if exits and live is not None:
            live.exit_on_next = True
        if not self.shutting_down:
            c.state.manually_stopped = True
            self.save(c)

    async def kill(self, ref: str, signal: str | None = None) -> None:
        sig = parse_signal(signal) if signal else int(_signal.SIGKILL)
        c = self.get(ref)
        if not c.state.alive:
            raise errdefs.Conflict(f"container {c.id} is not running")
        live = self.live.get(c.id)
        self._mark_kill(c, live, sig)
        if live is None:  # waiting to restart: cancelling is enough
            self._cancel_restart(c)
            return
        # Published before the signal goes: the monitor's "die" may otherwise overtake it.
        self.publish(c, "kill", {"signal": str(sig)})
        with contextlib.suppress(errdefs.NotFound, errdefs.Conflict):
            await live.task.kill(sig)  # failing means it exited meanwhile: the monitor records that
        if c.state.paused and live.exit_on_next:
            with contextlib.suppress(errdefs.EngineError):
                await live.task.resume()
        if sig == _signal.SIGKILL:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(live.exited.wait(), KILL_WAIT)

    async def stop(self, ref: str, signal: str | None = None, timeout: int | None = None) -> None:
        c = self.get(ref)
        if not c.state.alive:
            raise errdefs.NotModified()
        live = self.live.get(c.id)
        if live is None:  # restarting: the pending restart is cancelled
            self._mark_kill(c, None, int(_signal.SIGKILL))
            self._cancel_restart(c)
        else:
            await self._stop_live(c, live, signal, timeout)
        self.publish(c, "stop")

    async def _stop_live(
        self, c: Container, live: LiveContainer, signal: str | None, timeout: int | None
    ) -> None:
        sig = parse_signal(signal or str(c.config.get("StopSignal") or "SIGTERM"))
        if timeout is None:
            stop_timeout = c.config.get("StopTimeout")
            timeout = DEFAULT_STOP_TIMEOUT if stop_timeout is None else int(stop_timeout)
        self._mark_kill(c, live, sig)
        live.exit_on_next = True  # a stop always ends the run, whatever the signal
        if not live.exited.is_set():  # the event before the signal, as in kill()
            self.publish(c, "kill", {"signal": str(sig)})
        with contextlib.suppress(errdefs.NotFound, errdefs.Conflict):
            await live.task.kill(sig)
        if c.state.paused:
            with contextlib.suppress(errdefs.EngineError):
                await live.task.resume()
        if timeout < 0:
            await live.exited.wait()
            return
        try:
            await asyncio.wait_for(asyncio.shield(live.exited.wait()), timeout)
        except TimeoutError:
            self.publish(c, "kill", {"signal": str(int(_signal.SIGKILL))})
            with contextlib.suppress(errdefs.NotFound, errdefs.Conflict):
                await live.task.kill(int(_signal.SIGKILL), all=True)
            await live.exited.wait()

    async def restart(self, ref: str, signal: str | None = None, timeout: int | None = None) -> None:
        c = self.get(ref)
        live = self.live.get(c.id)
        if live is not None:
            live.manual_restart = True  # dockerd's HasBeenManuallyRestarted: no --rm removal now
            await self._stop_live(c, live, signal, timeout)
            self.publish(c, "stop")
        elif c.state.restarting:
            self._cancel_restart(c)
        async with self.lock(c.id):
            if not self.store_has(c.id):
                raise errdefs.no_such_container(ref)
            if not c.state.alive:
                c.state.manually_stopped = False
                c.restart_count = 0
                self._backoff.pop(c.id, None)
                await self._start_locked(c)
        self.publish(c, "restart")

    # -- resize --------------------------------------------------------------------

    async def resize(self, ref: str, height: int, width: int) -> None:
        c = self.get(ref)
        live = self.live.get(c.id)
        if live is None:
            # dockerd 28's GetRunningTask: no task, no resize (the CLI only resizes after start).
            raise errdefs.Conflict(f"container {c.id} is not running")
        with contextlib.suppress(OSError):
            await live.task.resize(width, height)
        self.publish(c, "resize", {"height": str(height), "width": str(width)})

    # -- remove --------------------------------------------------------------------

    async def remove(self, ref: str, force: bool = False, volumes: bool = False, link: bool = False) -> None:
        c = self.get(ref)
        if link:
            raise errdefs.InvalidParameter("Conflict, cannot remove the default link name of the container")
        if c.state.status == "removing":
            raise errdefs.Conflict(f"removal of container {c.short_id} is already in progress")
        if c.state.alive:
            if not force:
                state = "paused" if c.state.paused else ("restarting" if c.state.restarting else "running")
                procedure = "stop the container before removing or force remove"
                if c.state.paused:
                    procedure = "unpause and then " + procedure
                raise errdefs.Conflict(
                    f'cannot remove container "{c.name}": container is {state}: {procedure}'
                )
            live = self.live.get(c.id)
            self._mark_kill(c, live, int(_signal.SIGKILL))
            if live is None:
                self._cancel_restart(c)
            else:
                self.publish(c, "kill", {"signal": str(int(_signal.SIGKILL))})
                with contextlib.suppress(errdefs.EngineError):
                    await live.task.kill(int(_signal.SIGKILL), all=True)
                if c.state.paused:
                    with contextlib.suppress(errdefs.EngineError):
                        await live.task.resume()
                await live.exited.wait()
        async with self.lock(c.id):
            if not self.store_has(c.id):
                return  # removed meanwhile (e.g. by AutoRemove)
            if c.state.alive:
                raise errdefs.Conflict(f"cannot remove container \"{c.name}\": container is running: "
                                       "stop the container before removing or force remove")  # fmt: skip
            c.state.status = "removing"
            with contextlib.suppress(OSError):
                self.save(c)
            try:
                await asyncio.to_thread(self.layers.remove_rw, c.snapshot_key)
            except errdefs.NotFound:
                pass
            except errdefs.EngineError as err:
                c.state.status = "dead"
                c.state.dead = True
                self.save(c)
                raise errdefs.Internal(f"unable to remove filesystem for {c.id}: {err.message}") from err
            await asyncio.to_thread(self.store.delete, c)
            await self.mounts.remove(c, volumes)
        self._locks.pop(c.id, None)
        self._backoff.pop(c.id, None)
        for pending in self._pending_attach.pop(c.id, []):
            if not pending.future.done():
                pending.future.cancel()
        self.publish(c, "destroy")
        self._wake(c.id, "removed", WaitResult(c.state.exit_code))

    # -- shutdown ------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Start stopping every container (dockerd without live-restore) while connections drain.

        Waiting clients (``docker run``'s /wait) then get the real exit codes.
        """
        if self._stopping_all is None:
            self.shutting_down = True
            self._stopping_all = asyncio.ensure_future(self._stop_all())

    async def _stop_all(self) -> None:
        for timer in list(self._restart_timers.values()):
            timer.cancel()
        running = [(c, self.live.get(c.id)) for c in self.store if c.id in self.live]
        try:
            await asyncio.gather(
                *(self._stop_live(c, live, None, None) for c, live in running if live is not None),
                return_exceptions=True,
            )
            # Exits still being recorded (and --rm removals) finish before anything is cancelled.
            await asyncio.gather(*list(self._monitors), return_exceptions=True)
        finally:
            self.all_stopped.set()

    async def shutdown(self) -> None:
        self.begin_shutdown()
        assert self._stopping_all is not None
        await asyncio.gather(self._stopping_all, return_exceptions=True)
        await asyncio.gather(*list(self._monitors), return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.runtime.close()


def restart_policy_says(c: Container, exit_code: int, manually_stopped: bool) -> bool:
    """dockerd's RestartManager.ShouldRestart decision (without the cancel and backoff parts)."""
    policy = c.host_config.get("RestartPolicy") or {}
    name = policy.get("Name") or "no"
    if name == "always":
        return True
    if name == "unless-stopped":
        return not manually_stopped
    if name == "on-failure":
        limit = int(policy.get("MaximumRetryCount") or 0)
        return exit_code != 0 and (limit == 0 or c.restart_count < limit)
    return False


@functools.cache
def _cgroup_v2() -> bool:
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _exec_duration(started_at: str) -> str:
    t = parse_time(started_at)
    return str(int((datetime.now(UTC) - t).total_seconds())) if t else "0"


def _console(size: Any) -> ConsoleSize | None:
    if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return ConsoleSize(height=size[0], width=size[1])
    return None


def _initial_network_settings(host_config: dict[str, Any]) -> dict[str, Any]:
    mode = str(host_config.get("NetworkMode") or "bridge")
    name = mode if not mode.startswith("container:") else None
    networks: dict[str, Any] = {}
    if name:
        networks[name] = empty_endpoint_settings()
    return {"Ports": {}, "Networks": networks, "SandboxID": "", "SandboxKey": ""}


async def _all_or_raise(first: Awaitable[T1], second: Awaitable[T2]) -> tuple[T1, T2]:
    """Both results, or the first failure once both have finished (so that every undo step the
    two registered is in place when the caller unwinds)."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    if isinstance(a, BaseException):
        raise a
    if isinstance(b, BaseException):
        raise b
    return a, b


async def remove_bundle(bundle: Bundle) -> None:
    """Delete a container's bundle; one whose rootfs is still mounted stays (and is logged)."""
    if not await asyncio.to_thread(bundle.remove, mounts.is_mounted):
        log.warning("bundle %s left in place: rootfs still mounted or not deletable", bundle.path)
