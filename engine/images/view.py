"""What ``docker images``, ``docker image inspect`` and ``docker history`` receive, in dockerd's shapes.

Shapes follow dockerd 28 (API 1.50) with its field order: list rows always carry ``RepoTags`` /
``RepoDigests`` as lists, ``Created`` as an int and ``SharedSize``/``Containers`` as -1 unless computed.
Inspect also returns the fields older API versions show (``Container``, ``ContainerConfig``); the
router drops them for the versions that no longer have them.
"""

from __future__ import annotations

from typing import Any

from engine import errdefs
from engine.images.filters import FilterMap, invalid_filter, match_kv, validate
from engine.images.model import Image, container_config_shape
from engine.images.reference import familiar_match
from engine.images.repo import ImageRepo
from engine.images.timestamps import ZERO_TIME, Time, get_timestamp, try_parse_rfc3339

LIST_FILTERS = ("dangling", "label", "before", "since", "reference", "until")
GRAPH_DRIVER = "overlay2"


def _summary(image: Image, size: int, tags: list[str], digests: list[str]) -> dict[str, Any]:
    return {
        "Containers": -1,
        "Created": image.created_unix,
        "Id": image.id,
        "Labels": image.labels,
        "ParentId": image.meta.parent or "",
        "RepoDigests": digests,
        "RepoTags": tags,
        "SharedSize": -1,
        "Size": size,
    }


def _bounds(repo: ImageRepo, filters: FilterMap) -> tuple[Time | None, Time | None]:
    before: Time | None = None
    since: Time | None = None
    for value in filters.get("before", ()):
        created = repo.resolve(value).created
        if created is not None and (before is None or before.total_ns() > created.total_ns()):
            before = created
    for value in filters.get("until", ()):
        ts = get_timestamp(value)
        if before is None or before.total_ns() > ts.total_ns():
            before = ts
    for value in filters.get("since", ()):
        created = repo.resolve(value).created
        if created is not None and (since is None or since.total_ns() < created.total_ns()):
            since = created
    return before, since


def list_images(repo: ImageRepo, filters: FilterMap, all_: bool, shared_size: bool) -> list[dict[str, Any]]:
    """dockerd's ImageService.Images for the graph-driver store."""
    validate(filters, LIST_FILTERS)
    dangling_only = False
    if "dangling" in filters:
        values = list(filters["dangling"])
        if "true" in values:
            dangling_only = True
        elif "false" not in values:
            raise invalid_filter("dangling", values)
    before, since = _bounds(repo, filters)
    patterns = list(filters.get("reference", ()))
    images = repo.images()
    parents = {i.meta.parent for i in images if i.meta.parent}
    selected = [i for i in images if i.id not in parents] if dangling_only else images
    rows: list[tuple[Image, dict[str, Any]]] = []
    for image in selected:
        created = image.created
        if before is not None and (created is None or created.total_ns() >= before.total_ns()):
            continue
        if since is not None and (created is None or created.total_ns() <= since.total_ns()):
            continue
        if "label" in filters and (
            image.config.get("config") is None or not match_kv(list(filters["label"]), image.labels)
        ):
            continue
        tags: list[str] = []
        digests: list[str] = []
        for ref in image.references:
            if patterns and not any(familiar_match(p, ref) for p in patterns):
                continue
            if ref.digest is not None:
                digests.append(ref.familiar())
            if ref.tag is not None:
                tags.append(ref.familiar())
        if not tags and not digests:
            if all_ or image.id not in parents:
                if "dangling" in filters and not dangling_only:
                    continue
                if patterns:
                    continue
            else:
                continue
        elif dangling_only and tags:
            continue
        rows.append((image, _summary(image, repo.image_size(image), tags, digests)))
    if shared_size:
        _fill_shared_size(repo, images, rows)
    rows.sort(key=lambda row: row[0].created_unix, reverse=True)
    return [summary for _, summary in rows]


def _fill_shared_size(repo: ImageRepo, images: list[Image], rows: list[tuple[Image, dict[str, Any]]]) -> None:
    refs: dict[str, int] = {}
    for image in images:
        for chain in image.chain_ids:
            refs[chain] = refs.get(chain, 0) + 1
    for image, summary in rows:
        summary["SharedSize"] = sum(repo.layer_size(c) for c in image.chain_ids if refs.get(c, 0) > 1)


def graph_driver_data(repo: ImageRepo, image: Image) -> dict[str, str]:
    top = image.top_chain_id
    if top is None:
        return {}
    snapshotter = repo.layers.snapshotter
    try:
        upper = snapshotter.upperdir(top)
        lowers = snapshotter.lowerdirs(top)
    except Exception:
        return {}
    base = upper.parent
    data = {"MergedDir": str(base / "merged"), "UpperDir": str(upper), "WorkDir": str(base / "work")}
    if lowers:
        data = {"LowerDir": ":".join(str(p) for p in lowers), **data}
    return data


def inspect(repo: ImageRepo, image: Image) -> dict[str, Any]:
    """dockerd's ImageInspect (graph-driver store)."""
    cfg = image.config
    comment = str(cfg.get("comment") or "")
    history = image.history
    if not comment and history:
        comment = str(history[-1].get("comment") or "")
    created = image.created
    out: dict[str, Any] = {
        "Id": image.id,
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Parent": image.meta.parent or "",
        "Comment": comment,
        "Created": created.rfc3339nano() if created else "",
        "Container": str(cfg.get("container") or ""),
        "ContainerConfig": container_config_shape(cfg.get("container_config") or {}),
        "DockerVersion": str(cfg.get("docker_version") or ""),
        "Author": str(cfg.get("author") or ""),
        "Config": image.container_config(),
        "Architecture": str(cfg.get("architecture") or ""),
    }
    if cfg.get("variant"):
        out["Variant"] = str(cfg["variant"])
    out["Os"] = image.os
    if cfg.get("os.version"):
        out["OsVersion"] = str(cfg["os.version"])
    out["Size"] = repo.image_size(image)
    out["GraphDriver"] = {"Data": graph_driver_data(repo, image), "Name": GRAPH_DRIVER}
    rootfs: dict[str, Any] = {"Type": str((cfg.get("rootfs") or {}).get("type") or "")}
    if image.diff_ids:
        rootfs["Layers"] = image.diff_ids
    out["RootFS"] = rootfs
    out["Metadata"] = {"LastTagTime": image.meta.last_tag_time or ZERO_TIME}
    return out


def history(repo: ImageRepo, image: Image) -> list[dict[str, Any]]:
    """dockerd's ImageHistory: newest first; IDs and tags follow the parent chain, ``<missing>`` beyond."""
    rows: list[dict[str, Any]] = []
    chains = image.chain_ids
    layer_index = 0
    for h in image.history:
        size = 0
        if not h.get("empty_layer"):
            if layer_index >= len(chains):
                raise errdefs.Internal("too many non-empty layers in History section")
            size = repo.layer_size(chains[layer_index])
            layer_index += 1
        created = _history_created(h)
        rows.insert(
            0,
            {
                "Id": "<missing>",
                "Created": created,
                "CreatedBy": str(h.get("created_by") or ""),
                "Tags": None,
                "Size": size,
                "Comment": str(h.get("comment") or ""),
            },
        )
    current: Image | None = image
    for row in rows:
        if current is None:
            break
        row["Id"] = current.id
        row["Tags"] = current.repo_tags or None
        parent = current.meta.parent
        current = None
        if parent and repo.store.exists(parent):
            current = repo.image(parent)
    return rows


def _history_created(h: dict[str, Any]) -> int:
    created = try_parse_rfc3339(h.get("created"))
    return created.seconds if created else 0
