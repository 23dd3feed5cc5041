"""Disk usage (``GET /system/df``): images with their container counts and shared sizes, containers
with their sizes, volumes with ``UsageData``, and the build cache. skiff keeps no build cache, so
``BuildCache`` is what dockerd's BuildKit answers when its cache is empty (``null``), and
``POST /build/prune`` checks its options as dockerd does and reclaims nothing.

Only the kinds asked for are computed: each one walks the disk. Rendering of the rows (API
version differences) stays in the API layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine import errdefs
from engine.containers.admin import Listed
from engine.images.timestamps import get_timestamp

OBJECT_TYPES = ("container", "image", "volume", "build-cache")
# BuildKit's cache record fields a prune filter may name (one value each), then the age filters.
BUILD_CACHE_FIELDS = ("id", "parent", "type", "description", "inuse", "shared", "private")
BUILD_PRUNE_FILTERS = (*BUILD_CACHE_FIELDS, "until", "unused-for", "label", "label!")


class _Images(Protocol):
    async def list_images(
        self, filters: Any = None, all: bool = False, digests: bool = False, shared_size: bool = False
    ) -> list[dict[str, Any]]: ...

    async def layers_size(self) -> int: ...


class _Containers(Protocol):
    async def list_containers(
        self, filters: Any, *, all: bool = False, limit: int = 0, size: bool = False
    ) -> list[Listed]: ...


class _Volumes(Protocol):
    async def list(self, filters: Any = None) -> list[dict[str, Any]]: ...

    async def usage(self, name: str) -> tuple[int, int]: ...


@dataclass(frozen=True)
class DiskUsageOptions:
    containers: bool = True
    images: bool = True
    volumes: bool = True
    build_cache: bool = True

    @classmethod
    def from_types(cls, types: Sequence[str] | None) -> DiskUsageOptions:
        """The ``type`` query values (API 1.42+); none given means everything, as on dockerd."""
        if not types:
            return cls()
        for t in types:
            if t not in OBJECT_TYPES:
                raise errdefs.InvalidParameter(f"unknown object type: {t}")
        return cls(
            containers="container" in types,
            images="image" in types,
            volumes="volume" in types,
            build_cache="build-cache" in types,
        )


@dataclass
class DiskUsage:
    """``None`` for a kind not asked for (dockerd answers ``null`` for it)."""

    layers_size: int = 0
    images: list[dict[str, Any]] | None = None
    containers: list[Listed] | None = None
    volumes: list[dict[str, Any]] | None = None
    # Go's nil slice: BuildKit lists no records, so dockerd answers ``null`` even when asked.
    build_cache: list[dict[str, Any]] | None = field(default=None)


async def disk_usage(
    opts: DiskUsageOptions, *, images: _Images, containers: _Containers, volumes: _Volumes | None
) -> DiskUsage:
    out = DiskUsage()
    listed: list[Listed] | None = None
    if opts.containers or opts.images:
        # Images need every container for their ``Containers`` count; sizes only when shown.
        listed = await containers.list_containers({}, all=True, size=opts.containers)
    if opts.containers:
        out.containers = listed
    if opts.images:
        rows = await images.list_images({}, shared_size=True)
        users: dict[str, int] = {}
        for item in listed or ():
            users[item.container.image_id] = users.get(item.container.image_id, 0) + 1
        for row in rows:
            row["Containers"] = users.get(row["Id"], 0)
        out.images = rows
        out.layers_size = await images.layers_size()
    if opts.volumes:
        out.volumes = await _volumes(volumes) if volumes is not None else []
    return out


def prune_build_cache(filters: dict[str, list[str]]) -> dict[str, Any]:
    """``POST /build/prune``: dockerd's filter checks (toBuildkitPruneInfo); nothing to delete."""
    try:
        _check_build_prune_filters(filters)
    except errdefs.EngineError as e:
        raise type(e)(f"failed to prune build cache: {e.message}") from None
    return {"CachesDeleted": None, "SpaceReclaimed": 0}


def _check_build_prune_filters(filters: dict[str, list[str]]) -> None:
    for key in filters:
        if key not in BUILD_PRUNE_FILTERS:
            raise errdefs.InvalidParameter(f"invalid filter '{key}'")
    until, unused_for = filters.get("until", []), filters.get("unused-for", [])
    if until and unused_for:
        raise errdefs.InvalidParameter('conflicting filters: "until" and "unused-for"')
    key = "unused-for" if unused_for else "until"
    values = until + unused_for
    if len(values) > 1:
        raise errdefs.InvalidParameter("filters expect only one value")
    if values:
        try:
            get_timestamp(values[0])
        except errdefs.EngineError as e:
            raise errdefs.InvalidParameter(
                f"\"{key}\" filter expects a duration (e.g., '24h') or a timestamp: {e.message}"
            ) from None
    for name in BUILD_CACHE_FIELDS:
        if len(filters.get(name, [])) > 1:
            raise errdefs.InvalidParameter("filters expect only one value")


async def _volumes(volumes: _Volumes) -> list[dict[str, Any]]:
    listed = await volumes.list()

    async def one(vol: dict[str, Any]) -> dict[str, Any]:
        try:
            size, refs = await volumes.usage(vol["Name"])
        except errdefs.NotFound:  # removed while we walked: dockerd reports what it can
            size, refs = -1, -1
        return {**vol, "UsageData": {"RefCount": refs, "Size": size}}

    pending: list[Awaitable[dict[str, Any]]] = [one(v) for v in listed]
    return list(await asyncio.gather(*pending))
