"""Daemon start: make every recorded container state true again, then apply restart policies.

skiffd has no shim and no live-restore: a container's stdio dies with the daemon that held it,
so nothing recorded as running can be adopted. As dockerd does without live-restore
(daemon.restore), every container recorded running, paused or restarting is reconciled:

- whatever runc still knows about it is force-deleted (a live init is SIGKILLed), its rootfs
  unmounted and its bundle removed;
- its state becomes exited: 137 (128 + SIGKILL) when it was still alive and we killed it here,
  255 when it died unseen and its status is lost (containerd reports a dead shim's task as 255);
- a container caught in the middle of a removal is marked dead (``RemovalInProgress``).

Leftovers without a record (an interrupted create) are force-deleted too. Then, like dockerd's
``ShouldRestart`` at boot, containers that were started before and whose restart policy says so
(``always``; ``unless-stopped`` unless stopped by hand; ``on-failure`` after a non-zero exit
within its retry count) are started again, and stopped ``--rm`` containers are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from engine import errdefs
from engine.containers.model import Container
from engine.containers.service import remove_bundle, restart_policy_says
from engine.networks.attach import forget_endpoints
from runtime.bundle import Bundle
from storage import mount as mounts

if TYPE_CHECKING:
    from engine.containers.service import ContainerService

log = logging.getLogger("skiff.containers")

EXIT_KILLED = 137
EXIT_STATUS_LOST = 255
_ALIVE = ("created", "running", "paused", "pausing")


async def restore(service: ContainerService) -> None:
    known = await _runtime_ids(service)
    recorded = {c.id for c in service.store}
    for orphan in sorted(known - recorded):
        log.info("removing leftover runtime state of %s", orphan[:12])
        await _force_delete(service, orphan)
        await _remove_bundle(service.bundle(orphan))
    await asyncio.gather(*(_reconcile(service, c, c.id in known) for c in service.store))
    for leftover in _bundle_dirs(service.bundles) - recorded - known:
        await _remove_bundle(service.bundle(leftover))

    to_start: list[Container] = []
    to_remove: list[Container] = []
    for c in service.store:
        if c.state.dead or c.state.alive:
            continue
        if c.state.has_been_started and restart_policy_says(c, c.state.exit_code, c.state.manually_stopped):
            to_start.append(c)
        elif c.host_config.get("AutoRemove") and c.state.has_been_started:
            to_remove.append(c)
    await asyncio.gather(*(_start(service, c) for c in to_start))
    await asyncio.gather(*(_remove(service, c) for c in to_remove))


async def _runtime_ids(service: ContainerService) -> set[str]:
    try:
        return set(await service.runtime.list_ids())
    except errdefs.EngineError as err:
        log.warning("cannot list runtime containers: %s", err.message)
        return set()


async def _reconcile(service: ContainerService, c: Container, known: bool) -> None:
    alive = False
    if known:
        alive = await _is_alive(service, c.id)
        await _force_delete(service, c.id)
    await _remove_bundle(service.bundle(c.id))
    changed = False
    if c.state.status == "removing":
        c.state.status, c.state.dead = "dead", True
        changed = True
    elif c.state.alive or c.state.paused:
        # A restarting container already has its last real exit code; keep it.
        code = EXIT_KILLED if alive else (c.state.exit_code if c.state.restarting else EXIT_STATUS_LOST)
        log.info("container %s was %s: recorded as exited (%d)", c.short_id, c.state.status, code)
        c.state.set_stopped(code)
        forget_endpoints(c.network_settings)
        changed = True
    if changed:
        try:
            service.save(c)
        except OSError as exc:
            log.error("cannot record the state of %s: %s", c.short_id, exc)


async def _is_alive(service: ContainerService, cid: str) -> bool:
    try:
        state = await service.runtime.state(cid)
    except errdefs.EngineError:
        return False
    return str(state.get("status") or "") in _ALIVE


async def _force_delete(service: ContainerService, cid: str) -> None:
    try:
        await service.runtime.cleanup_orphan(cid)
    except errdefs.EngineError as err:
        log.warning("cannot delete runtime state of %s: %s", cid[:12], err.message)


def _bundle_dirs(bundles: Path) -> set[str]:
    with contextlib.suppress(FileNotFoundError):
        return {p.name for p in bundles.iterdir() if p.is_dir()}
    return set()


async def _remove_bundle(bundle: Bundle) -> None:
    # A rootfs still mounted by the previous daemon life is unmounted first; remove_bundle
    # leaves the directory if that failed.
    if not bundle.path.exists():
        return
    with contextlib.suppress(errdefs.EngineError):
        await asyncio.to_thread(mounts.unmount, bundle.rootfs)
    await remove_bundle(bundle)


async def _start(service: ContainerService, c: Container) -> None:
    try:
        await service.start(c.id)
    except errdefs.NotModified:
        pass
    except errdefs.EngineError as err:
        log.error("failed to start container %s: %s", c.short_id, err.message)


async def _remove(service: ContainerService, c: Container) -> None:
    try:
        await service.remove(c.id, force=True, volumes=True)
    except errdefs.EngineError as err:
        log.error("failed to remove container %s: %s", c.short_id, err.message)
