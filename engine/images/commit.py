"""``docker commit``: a container's read-write layer becomes a new layer on top of its image.

What dockerd does (``CreateImageFromContainer``, ``CommitImage``, ``image.NewChildImage``):

- pause the container while its layer is read, when asked to and it is running (errors ignored,
  the ``pause``/``unpause`` events are published as for ``docker pause``);
- the new config is the request's Config (the container's own when no body was sent) with the
  ``changes`` applied, then ``merge``d with the container's Config;
- the layer is the container's overlay upper dir as a Docker layer tar (whiteouts as ``.wh.``,
  opaque directories as ``.wh..wh..opq``). dockerd keeps ``/etc/hosts``, ``/dev``, ``/proc``,
  ``/.dockerenv``, … in an ``-init`` layer below the container's, so they never reach a commit;
  skiff writes those entries into the container's own upper dir (containers/initlayer.py, and
  runc adds missing mount points there), so they are left out here, as ``docker diff`` leaves
  them out (``fsdiff.INIT_PATHS``). Volume and bind mount targets and the working directory do
  belong to the layer, as with dockerd. A layer without entries is an empty layer: no new diff
  ID, ``empty_layer`` in the history;
- the image config copies the parent's platform and history, adds ``author``, ``container``,
  ``container_config``, ``created`` and a history entry whose ``created_by`` is the container's
  Cmd; its parent is the container's image;
- tag ``repo:tag`` (image ``tag`` event), then the container ``commit`` event.

The layer tar is kept uncompressed in the content store (its digest is the diff ID), so ``docker
save`` and ``push`` can reproduce it. Everything on disk runs in a worker thread holding the repo
lock; a failure removes the layer and blob this commit created.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import stat
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import errdefs
from engine.containers.fsdiff import INIT_PATHS
from engine.images.changes import apply_changes
from engine.images.ingest import Ingested, ingest_layer
from engine.images.model import Image, container_config_shape, dumps_config
from engine.images.platform import host
from engine.images.reference import Reference, repo_tag_reference
from engine.images.repo import ImageRepo
from engine.images.timestamps import now
from storage.archive import export_tar, is_opaque_dir

if TYPE_CHECKING:
    from engine.containers.admin import ContainerAdmin
    from engine.containers.service import ContainerService
    from engine.images.service import ImageService

_SORTED_MAPS = ("ExposedPorts", "Volumes", "Labels")
_INIT_PARENTS = sorted({os.path.dirname(p) for p in INIT_PATHS} - {"/"}, key=len, reverse=True)


@dataclass(frozen=True)
class CommitOptions:
    """The query and body of ``POST /commit`` (``config`` None: no body was sent)."""

    repo: str = ""
    tag: str = ""
    author: str = ""
    comment: str = ""
    changes: Sequence[str] = ()
    config: dict[str, Any] | None = None
    pause: bool = True


@dataclass(frozen=True)
class RwLayer:
    """What the image side needs of the container being committed."""

    container_id: str
    image_id: str
    os: str
    container_config: dict[str, Any]
    upper: Path
    exclude: frozenset[str] = frozenset()


# --- config ----------------------------------------------------------------------------------------


def merge(user: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """dockerd's commit ``merge``: fill what ``user`` (the new config) leaves unset from ``container``."""
    if not user.get("User"):
        user["User"] = container.get("User") or ""
    ports = dict(user.get("ExposedPorts") or {})
    if not ports:
        user["ExposedPorts"] = container.get("ExposedPorts")
    else:
        for port in container.get("ExposedPorts") or {}:
            ports.setdefault(port, {})
        user["ExposedPorts"] = ports
    env = list(user.get("Env") or [])
    if not env:
        user["Env"] = container.get("Env")
    else:
        keys = {str(e).partition("=")[0] for e in env}
        env += [e for e in container.get("Env") or [] if str(e).partition("=")[0] not in keys]
        user["Env"] = env
    labels = dict(user.get("Labels") or {})
    for key, value in (container.get("Labels") or {}).items():
        labels.setdefault(key, value)
    user["Labels"] = labels
    if not user.get("Entrypoint"):
        if not user.get("Cmd"):
            user["Cmd"] = container.get("Cmd")
        if user.get("Entrypoint") is None:
            user["Entrypoint"] = container.get("Entrypoint")
    theirs = container.get("Healthcheck")
    if theirs:
        mine = user.get("Healthcheck")
        if not mine:
            user["Healthcheck"] = theirs
        else:
            merged = dict(mine)
            for key in ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
                if not merged.get(key) and theirs.get(key):
                    merged[key] = theirs[key]
            user["Healthcheck"] = merged
    if not user.get("WorkingDir"):
        user["WorkingDir"] = container.get("WorkingDir") or ""
    volumes = dict(user.get("Volumes") or {})
    if not volumes:
        user["Volumes"] = container.get("Volumes")
    else:
        volumes.update(container.get("Volumes") or {})
        user["Volumes"] = volumes
    if not user.get("StopSignal"):
        user["StopSignal"] = container.get("StopSignal") or ""
    return user


def new_container_config(
    container_config: dict[str, Any], override: dict[str, Any] | None, changes: Sequence[str]
) -> dict[str, Any]:
    """The committed image's Config: ``changes`` applied to ``override`` (or the container's own
    Config), then merged with the container's Config. Bad changes raise InvalidParameter."""
    base = copy.deepcopy(override if override is not None else container_config)
    return merge(apply_changes(base, changes), container_config)


def _go_shape(config: dict[str, Any]) -> dict[str, Any]:
    shaped = container_config_shape(config)
    assert shaped is not None
    for key in _SORTED_MAPS:  # Go's encoding/json writes map keys sorted
        if isinstance(shaped.get(key), dict):
            shaped[key] = dict(sorted(shaped[key].items()))
    return shaped


def child_config(
    parent: Image,
    layer: RwLayer,
    config: dict[str, Any],
    container_config: dict[str, Any],
    *,
    author: str,
    comment: str,
    diff_id: str | None,
    created: str,
    docker_version: str,
) -> dict[str, Any]:
    """``image.NewChildImage``: the parent's platform and history plus this commit."""
    parent_cfg = parent.config
    entry: dict[str, Any] = {"created": created}
    if author:
        entry["author"] = author
    created_by = " ".join(str(a) for a in container_config.get("Cmd") or [])
    if created_by:
        entry["created_by"] = created_by
    if comment:
        entry["comment"] = comment
    if diff_id is None:
        entry["empty_layer"] = True
    out: dict[str, Any] = {
        "architecture": str(parent_cfg.get("architecture") or host().architecture),
        "config": _go_shape(config),
        "container": layer.container_id,
        "container_config": _go_shape(container_config),
        "created": created,
        "history": [*parent.history, entry],
        "os": layer.os,
        "rootfs": {"type": "layers", "diff_ids": [*parent.diff_ids, *([diff_id] if diff_id else [])]},
    }
    if author:
        out["author"] = author
    if docker_version:
        out["docker_version"] = docker_version
    for key in ("variant", "os.version", "os.features"):
        if parent_cfg.get(key):
            out[key] = parent_cfg[key]
    # image.Image.MarshalJSON round-trips through a map: dockerd's configs have sorted top-level keys.
    return dict(sorted(out.items()))


# --- the layer -------------------------------------------------------------------------------------


def init_artifacts(upper: Path, lowers: Sequence[Path]) -> frozenset[str]:
    """Upper-dir paths (relative) that dockerd's init layer would hold: empty files, symlinks or
    directories at ``fsdiff.INIT_PATHS``, and ``/etc`` or ``/dev`` when nothing else changed inside
    them. A file the container filled in itself is content and stays."""
    found: set[str] = set()
    for path in INIT_PATHS:
        rel = path.lstrip("/")
        try:
            st = os.lstat(upper / rel)
        except (FileNotFoundError, NotADirectoryError):
            continue
        empty_file = stat.S_ISREG(st.st_mode) and st.st_size == 0
        if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode) or empty_file:
            found.add(rel)
    for path in _INIT_PARENTS:  # deepest first: /dev/pts before /dev
        rel = path.lstrip("/")
        target = upper / rel
        try:
            st = os.lstat(target)
            children = os.listdir(target)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if rel in found or is_opaque_dir(target):
            continue
        if not all(f"{rel}/{name}" in found for name in children):
            continue
        lower = next((p / rel for p in lowers if (p / rel).is_dir()), None)
        # A mode the container changed itself is a real change, not runc's copy-up.
        if lower is None or stat.S_IMODE(lower.stat().st_mode) == stat.S_IMODE(st.st_mode):
            found.add(rel)
    return frozenset(found)


def _export(layer: RwLayer, dest: Path) -> bool:
    """Write the layer tar to ``dest``; False when it has no entries (an empty layer)."""
    with open(dest, "wb") as f:
        export_tar(layer.upper, f, upper=True, exclude=layer.exclude)
    with tarfile.open(dest, mode="r|") as tf:
        return tf.next() is not None


def _undo(repo: ImageRepo, ingested: Ingested) -> None:
    record = ingested.record
    if ingested.new_layer and record.chain_id not in repo.store.chain_ids_in_use():
        with contextlib.suppress(errdefs.EngineError):
            repo.layers.remove(record.chain_id)
    if ingested.new_blob and record.blob and record.blob not in repo.store.layer_blobs_in_use():
        with contextlib.suppress(errdefs.EngineError):
            repo.content.delete(record.blob)


def commit_image(
    repo: ImageRepo,
    layer: RwLayer,
    config: dict[str, Any],
    *,
    author: str,
    comment: str,
    ref: Reference | None,
    docker_version: str,
    container_config: dict[str, Any] | None = None,
) -> str:
    """Create the image (synchronous, a worker thread's job); returns its ID."""
    fd, name = tempfile.mkstemp(dir=repo.store.tmp_dir, prefix="commit-", suffix=".tar")
    os.close(fd)
    tar_path = Path(name)
    try:
        has_entries = _export(layer, tar_path)
        with repo.lock:
            parent = repo.image(layer.image_id)
            ingested: Ingested | None = None
            if has_entries:
                with open(tar_path, "rb") as f:
                    ingested = ingest_layer(
                        repo.layers, repo.content, parent.top_chain_id, f, expected_diff_id=None
                    )
            try:
                created = now().rfc3339nano()
                image_config = child_config(
                    parent,
                    layer,
                    config,
                    container_config if container_config is not None else layer.container_config,
                    author=author,
                    comment=comment,
                    diff_id=ingested.record.diff_id if ingested else None,
                    created=created,
                    docker_version=docker_version,
                )
                records = [*parent.meta.layers, *([ingested.record] if ingested else [])]
                image_id = repo.store.create(dumps_config(image_config), records, parent=parent.id)
                if ref is not None:
                    repo.add_tag(ref, image_id)
                    repo.store.set_last_tag_time(image_id, now().rfc3339nano())
            except BaseException:
                if ingested is not None:
                    _undo(repo, ingested)
                raise
    finally:
        tar_path.unlink(missing_ok=True)
    if ref is not None:
        repo.event("tag", image_id, ref.familiar())
    return image_id


# --- the container side ----------------------------------------------------------------------------


async def commit_container(
    containers: ContainerService,
    admin: ContainerAdmin,
    images: ImageService,
    name: str,
    options: CommitOptions,
) -> str:
    """``POST /commit``: the new image's ID."""
    ref = repo_tag_reference(options.repo, options.tag)
    if not name:
        raise errdefs.InvalidParameter('invalid name or ID supplied: ""')
    c = containers.get(name)
    if c.state.dead:
        raise errdefs.Conflict(f"You cannot commit container {c.id} which is Dead")
    if c.state.status == "removing":
        raise errdefs.Conflict(f"You cannot commit container {c.id} which is being removed")
    # Checked before pausing (dockerd pauses first): a bad change then never stops the container.
    config = new_container_config(c.config, options.config, options.changes)
    # Go aliases the container's Config when no body and no changes were sent, so merge's
    # ``Labels: {}`` shows in container_config too.
    container_config = config if options.config is None and not options.changes else c.config
    snapshotter = containers.layers.snapshotter
    try:
        upper = snapshotter.upperdir(c.snapshot_key)
        lowers = snapshotter.lowerdirs(c.snapshot_key)
    except errdefs.NotFound:
        raise errdefs.Internal(f"RWLayer of container {c.name.lstrip('/')} is unexpectedly nil") from None
    exclude = await asyncio.to_thread(init_artifacts, upper, lowers)
    layer = RwLayer(c.id, c.image_id, c.platform or "linux", c.config, upper, exclude)
    paused = False
    if options.pause and c.state.running and not c.state.paused and c.id in containers.live:
        with contextlib.suppress(errdefs.EngineError):  # dockerd ignores a failed pause too
            await admin.pause(c.id)
            paused = True
    try:
        image_id = await images.commit(
            layer,
            config,
            author=options.author,
            comment=options.comment,
            ref=ref,
            container_config=container_config,
        )
        containers.publish(
            c,
            "commit",
            {"comment": options.comment, "imageID": image_id, "imageRef": ref.familiar() if ref else ""},
        )
    finally:
        if paused:
            with contextlib.suppress(errdefs.EngineError):
                await admin.unpause(c.id)
    return image_id
