"""``docker import``: a filesystem tar (plain or compressed) becomes a one-layer image.

The config is what dockerd's ImportImage writes: the ``--change`` instructions applied to an empty
container config, the platform (default: this host), ``created`` now, ``comment`` and one history
entry carrying the message. Runs in a worker thread, holding the repo lock; the layer and blob are
removed again if the image cannot be created.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine import errdefs
from engine.images.changes import apply_changes
from engine.images.ingest import ingest_layer
from engine.images.model import container_config_shape, dumps_config
from engine.images.platform import Platform
from engine.images.reference import Reference
from engine.images.repo import ImageRepo
from engine.images.timestamps import now


def build_config(changes: Sequence[str]) -> dict[str, Any]:
    """The container config an import gets from its ``changes`` (validated before any work)."""
    shaped = container_config_shape(apply_changes({}, changes))
    assert shaped is not None
    return shaped


def import_image(
    repo: ImageRepo,
    archive: Path,
    *,
    ref: Reference | None,
    platform: Platform,
    message: str,
    container_config: dict[str, Any],
    docker_version: str,
) -> str:
    with repo.lock:
        with open(archive, "rb") as f:
            try:
                ingested = ingest_layer(repo.layers, repo.content, None, f, expected_diff_id=None)
            except errdefs.InvalidParameter as e:
                # dockerd reports an unreadable tar as a plain (500) error from its untar helper.
                raise errdefs.Internal(f"Error processing tar file(exit status 1): {e.message}") from None
        record = ingested.record
        created = now().rfc3339nano()
        config: dict[str, Any] = {"architecture": platform.architecture}
        if message:
            config["comment"] = message
        config["config"] = container_config
        config["container_config"] = container_config_shape({})
        config["created"] = created
        if docker_version:
            config["docker_version"] = docker_version
        history: dict[str, Any] = {"created": created}
        if message:
            history["comment"] = message
        config["history"] = [history]
        config["os"] = platform.os
        if platform.variant:
            config["variant"] = platform.variant
        config["rootfs"] = {"type": "layers", "diff_ids": [record.diff_id]}
        # image.Image.MarshalJSON round-trips through a map, so dockerd's configs have sorted top-level keys.
        config = dict(sorted(config.items()))
        try:
            image_id = repo.store.create(dumps_config(config), [record])
            if ref is not None:
                repo.add_tag(ref, image_id)
                repo.store.set_last_tag_time(image_id, now().rfc3339nano())
        except BaseException:
            if record.chain_id not in repo.store.chain_ids_in_use():
                with contextlib.suppress(errdefs.EngineError):
                    repo.layers.remove(record.chain_id)
            raise
        if ref is not None:
            repo.event("tag", image_id, ref.familiar())
        repo.event("import", image_id, image_id)
        return image_id
