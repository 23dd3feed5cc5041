"""ImageStore: image configs, per-image metadata and the reference (tag/digest) store.

Layout under ``root`` (``<data-root>/image``)::

    meta/<hex>.json      {"schema": 1, "layers": [...], "repo_digests": [...], "last_tag_time", "parent"}
    repositories.json    {"schema": 1, "Repositories": {"busybox": {"busybox:latest": "sha256:…"}}}
    tmp/                 scratch space for load/import spooling (emptied at open)

The image config itself is a blob in the content store; the image ID is its digest. An image
exists when both its meta file and its config blob exist; meta is written last on create and
removed first on delete, so a crash in between leaves at most an unreferenced blob.
``repositories.json`` has Moby's shape (keys are familiar names and familiar reference strings) so
that it reads like ``/var/lib/docker/image/overlay2/repositorydb``. Reference *parsing* is the
engine's business: this store takes the familiar repository name and reference string as given.

In-memory indexes (id set, references by id, children by parent) are derived at open.
Synchronous and thread-safe; the engine calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine import errdefs
from storage.content import ContentStore
from storage.jsonfile import atomic_write_json, read_json

SCHEMA = 1


@dataclass(frozen=True)
class LayerRecord:
    """One layer of an image: its identity and the blob that reproduces its tar.

    ``blob`` is the content-store digest of the layer as stored (compressed or not, see
    ``media_type``); ``size`` is that blob's size and ``uncompressed_size`` the tar's size, which a
    streamed save needs up front. ``blob`` is None when no tar was kept (then the layer cannot be saved).
    """

    diff_id: str
    chain_id: str
    blob: str | None
    media_type: str
    size: int
    uncompressed_size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "diff_id": self.diff_id,
            "chain_id": self.chain_id,
            "blob": self.blob,
            "media_type": self.media_type,
            "size": self.size,
            "uncompressed_size": self.uncompressed_size,
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> LayerRecord:
        return LayerRecord(
            diff_id=str(obj["diff_id"]),
            chain_id=str(obj["chain_id"]),
            blob=obj.get("blob"),
            media_type=str(obj.get("media_type", "")),
            size=int(obj.get("size", 0)),
            uncompressed_size=int(obj.get("uncompressed_size", obj.get("size", 0))),
        )


@dataclass(frozen=True)
class ImageMeta:
    layers: tuple[LayerRecord, ...] = ()
    repo_digests: tuple[str, ...] = ()
    last_tag_time: str | None = None
    parent: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "layers": [layer.to_json() for layer in self.layers],
            "repo_digests": list(self.repo_digests),
            "last_tag_time": self.last_tag_time,
            "parent": self.parent,
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> ImageMeta:
        return ImageMeta(
            layers=tuple(LayerRecord.from_json(x) for x in obj.get("layers") or []),
            repo_digests=tuple(obj.get("repo_digests") or []),
            last_tag_time=obj.get("last_tag_time"),
            parent=obj.get("parent"),
        )


@dataclass(frozen=True)
class StoredImage:
    id: str
    config: bytes = field(repr=False)
    meta: ImageMeta


def _hex(image_id: str) -> str:
    if not image_id.startswith("sha256:") or len(image_id) != 71:
        raise errdefs.InvalidParameter(f"invalid image ID {image_id!r}")
    return image_id[7:]


class ImageStore:
    def __init__(self, root: Path, content: ContentStore) -> None:
        self.root = root
        self.content = content
        self._meta_dir = root / "meta"
        self._repos_path = root / "repositories.json"
        self.tmp_dir = root / "tmp"
        self._lock = threading.RLock()
        self._meta_dir.mkdir(parents=True, exist_ok=True)
        # Nothing is loading yet, so anything in tmp/ is a leftover from a crash.
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(mode=0o700)
        self._metas: dict[str, ImageMeta] = {}
        self._repos: dict[str, dict[str, str]] = {}
        self._load()

    # --- open ----------------------------------------------------------------------------------

    def _load(self) -> None:
        for entry in sorted(os.listdir(self._meta_dir)):
            if not entry.endswith(".json") or len(entry) != 69:
                continue
            image_id = "sha256:" + entry[:-5]
            try:
                obj = read_json(self._meta_dir / entry)
                meta = ImageMeta.from_json(obj)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if self.content.has(image_id):
                self._metas[image_id] = meta
        if self._repos_path.exists():
            obj = read_json(self._repos_path)
            for name, refs in (obj.get("Repositories") or {}).items():
                kept = {ref: iid for ref, iid in refs.items() if iid in self._metas}
                if kept:
                    self._repos[name] = kept

    # --- images --------------------------------------------------------------------------------

    def create(self, config: bytes, layers: Sequence[LayerRecord], parent: str | None = None) -> str:
        """Store an image config and its metadata; idempotent (an existing image keeps its metadata)."""
        with self._lock:
            image_id = self.content.put_bytes(config)
            if image_id in self._metas:
                return image_id
            meta = ImageMeta(layers=tuple(layers), parent=parent)
            atomic_write_json(self._meta_dir / f"{_hex(image_id)}.json", meta.to_json())
            self._metas[image_id] = meta
            return image_id

    def exists(self, image_id: str) -> bool:
        return image_id in self._metas

    def get(self, image_id: str) -> StoredImage:
        with self._lock:
            meta = self._metas.get(image_id)
            if meta is None:
                raise errdefs.NotFound(f"No such image: {image_id}")
            return StoredImage(image_id, self.content.read_bytes(image_id), meta)

    def meta(self, image_id: str) -> ImageMeta:
        meta = self._metas.get(image_id)
        if meta is None:
            raise errdefs.NotFound(f"No such image: {image_id}")
        return meta

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._metas)

    def count(self) -> int:
        return len(self._metas)

    def search(self, term: str) -> str | None:
        """Resolve a unique ID prefix (``abc``, ``sha256:abc``) like Moby's digest set; None otherwise."""
        algo, sep, hexpart = term.rpartition(":") if ":" in term else ("", "", term)
        if sep and algo != "sha256":
            return None
        if not hexpart or any(c not in "0123456789abcdef" for c in hexpart):
            return None
        with self._lock:
            found = [i for i in self._metas if i[7:].startswith(hexpart)]
        return found[0] if len(found) == 1 else None

    def _write_meta(self, image_id: str, meta: ImageMeta) -> None:
        atomic_write_json(self._meta_dir / f"{_hex(image_id)}.json", meta.to_json())
        self._metas[image_id] = meta

    def set_last_tag_time(self, image_id: str, when: str) -> None:
        with self._lock:
            self._write_meta(image_id, replace(self.meta(image_id), last_tag_time=when))

    def set_parent(self, image_id: str, parent: str | None) -> None:
        with self._lock:
            self._write_meta(image_id, replace(self.meta(image_id), parent=parent))

    def children(self, image_id: str) -> list[str]:
        with self._lock:
            return [i for i, m in self._metas.items() if m.parent == image_id]

    def delete(self, image_id: str) -> None:
        """Forget an image: its references, its metadata and its config blob (if no one else has it)."""
        with self._lock:
            if image_id not in self._metas:
                raise errdefs.NotFound(f"No such image: {image_id}")
            changed = False
            for name in list(self._repos):
                refs = self._repos[name]
                for ref in [r for r, i in refs.items() if i == image_id]:
                    del refs[ref]
                    changed = True
                if not refs:
                    del self._repos[name]
            if changed:
                self._save_repos()
            (self._meta_dir / f"{_hex(image_id)}.json").unlink(missing_ok=True)
            del self._metas[image_id]
            for i, m in list(self._metas.items()):
                if m.parent == image_id:
                    self._write_meta(i, replace(m, parent=None))
            with contextlib.suppress(errdefs.NotFound):
                self.content.delete(image_id)

    def layer_blobs_in_use(self) -> set[str]:
        with self._lock:
            return {lyr.blob for m in self._metas.values() for lyr in m.layers if lyr.blob}

    def chain_ids_in_use(self, exclude: Iterable[str] = ()) -> set[str]:
        skip = set(exclude)
        with self._lock:
            return {lyr.chain_id for i, m in self._metas.items() if i not in skip for lyr in m.layers}

    def find_layer(self, diff_id: str, chain_id: str) -> LayerRecord | None:
        """Any recorded layer with this identity whose blob is still present (to reuse its tar)."""
        with self._lock:
            for m in self._metas.values():
                for lyr in m.layers:
                    found = lyr.chain_id == chain_id and lyr.diff_id == diff_id and lyr.blob
                    if found and lyr.blob and self.content.has(lyr.blob):
                        return lyr
        return None

    # --- references ----------------------------------------------------------------------------

    def _save_repos(self) -> None:
        atomic_write_json(self._repos_path, {"schema": SCHEMA, "Repositories": self._repos})

    def get_reference(self, name: str, ref: str) -> str | None:
        with self._lock:
            return self._repos.get(name, {}).get(ref)

    def add_reference(self, name: str, ref: str, image_id: str) -> str | None:
        """Point ``ref`` (under repository ``name``) at ``image_id``; returns the ID it pointed at before."""
        with self._lock:
            if image_id not in self._metas:
                raise errdefs.NotFound(f"No such image: {image_id}")
            repo = self._repos.setdefault(name, {})
            previous = repo.get(ref)
            if previous != image_id:
                repo[ref] = image_id
                self._save_repos()
            return previous

    def delete_reference(self, name: str, ref: str) -> bool:
        with self._lock:
            repo = self._repos.get(name)
            if repo is None or ref not in repo:
                return False
            del repo[ref]
            if not repo:
                del self._repos[name]
            self._save_repos()
            return True

    def references(self, image_id: str) -> list[str]:
        """Familiar reference strings pointing at ``image_id`` (unsorted)."""
        with self._lock:
            return [r for refs in self._repos.values() for r, i in refs.items() if i == image_id]

    def references_by_name(self, name: str) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._repos.get(name, {}).items())

    def all_references(self) -> dict[str, list[str]]:
        """image ID → familiar references, one pass (for listing)."""
        out: dict[str, list[str]] = {}
        with self._lock:
            for refs in self._repos.values():
                for r, i in refs.items():
                    out.setdefault(i, []).append(r)
        return out
