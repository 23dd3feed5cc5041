"""``docker load``: images from an archive into the store, reporting as dockerd's tarexport.Load does.

Per image: check the config, apply each missing layer (``Loading layer`` progress unless quiet),
create the image, then move its tags (``The image X already exists, renaming the old one …``,
``Loaded image: X``). An image is all or nothing: if anything fails, the layers and blobs it added
and nobody uses are removed again; images already loaded from the same archive stay, as in dockerd
(their ``Loaded image`` lines have been sent). Untagged archives end with ``Loaded image ID:`` lines.
Runs in a worker thread, holding the repo lock.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from engine import errdefs
from engine.images import progress
from engine.images.archive import ArchiveReader, ImageSource
from engine.images.ingest import Ingested, ingest_layer
from engine.images.platform import Platform
from engine.images.progress import Message, ProgressReader
from engine.images.reference import Reference, parse_normalized_named
from engine.images.repo import ImageRepo
from engine.images.streams import Emitter
from engine.images.timestamps import try_parse_rfc3339
from storage.images import LayerRecord
from storage.layers import chain_id


@dataclass
class _Undo:
    layers: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)

    def add(self, ingested: Ingested) -> None:
        if ingested.new_layer:
            self.layers.append(ingested.record.chain_id)
        if ingested.new_blob and ingested.record.blob:
            self.blobs.append(ingested.record.blob)


def parse_config(data: bytes) -> dict[str, Any]:
    try:
        config = json.loads(data)
    except ValueError as e:
        raise errdefs.InvalidParameter(f"invalid image JSON: {e}") from None
    if not isinstance(config, dict):
        raise errdefs.InvalidParameter("invalid image JSON: not an object")
    if not isinstance(config.get("rootfs"), dict):
        raise errdefs.InvalidParameter("invalid image JSON, no RootFS key")
    os_ = config.get("os") or "linux"
    if os_ != "linux":
        raise errdefs.InvalidParameter(f"cannot load {os_} image on linux")
    return config


class Loader:
    def __init__(self, repo: ImageRepo, emit: Emitter[Message], quiet: bool, host: Platform) -> None:
        self._repo = repo
        self._emit = emit
        self._quiet = quiet
        self._host = host

    def run(self, archive: Path) -> None:
        with ArchiveReader(archive) as reader, self._repo.lock:
            sources = reader.images(self._host)
            ids_text = ""
            ref_count = 0
            links: list[tuple[str, str | None]] = []
            for source in sources:
                self._emit.check()
                image_id, ref_count = self._load_one(reader, source)
                ids_text += f"Loaded image ID: {image_id}\n"
                links.append((image_id, source.parent))
            self._set_parents(links)
            if ref_count == 0:
                self._emit(progress.stream(ids_text))

    def _load_one(self, reader: ArchiveReader, source: ImageSource) -> tuple[str, int]:
        repo = self._repo
        config = parse_config(source.config)
        diff_ids = [str(d) for d in config["rootfs"].get("diff_ids") or []]
        if len(source.layers) != len(diff_ids):
            expected, actual = len(source.layers), len(diff_ids)
            raise errdefs.InvalidParameter(
                f"invalid manifest, layers length mismatch: expected {expected}, got {actual}"
            )
        tags = [self._tag(t) for t in source.repo_tags]
        undo = _Undo()
        try:
            records: list[LayerRecord] = []
            parent: str | None = None
            for index, (layer, diff_id) in enumerate(zip(source.layers, diff_ids, strict=True)):
                self._emit.check()
                chain = chain_id(parent, diff_id)
                known = repo.store.find_layer(diff_id, chain) if repo.layers.has(chain) else None
                if known is None:
                    ingested = self._ingest(
                        reader, layer.member, layer.size, layer.digest, parent, diff_id, index
                    )
                    undo.add(ingested)
                    known = ingested.record
                records.append(known)
                parent = chain
            image_id = repo.store.create(source.config, records)
        except BaseException:
            self._undo(undo)
            raise
        for ref in tags:
            previous = repo.add_tag(ref, image_id)
            if previous is not None and previous != image_id:
                self._emit(
                    progress.stream(
                        f"The image {ref.familiar()} already exists, renaming the old one with ID "
                        f"{previous} to empty string\n"
                    )
                )
            self._emit(progress.stream(f"Loaded image: {ref.familiar()}\n"))
        repo.event("load", image_id, image_id)
        return image_id, len(tags)

    @staticmethod
    def _tag(raw: str) -> Reference:
        ref = parse_normalized_named(raw)
        if ref.tag is None:
            raise errdefs.InvalidParameter(f'invalid tag "{raw}"')
        return ref

    def _ingest(
        self,
        reader: ArchiveReader,
        member: str,
        size: int,
        blob_digest: str | None,
        parent: str | None,
        diff_id: str,
        index: int,
    ) -> Ingested:
        raw = reader.open(member)
        try:
            src: IO[bytes] = raw
            bar: ProgressReader | None = None
            if not self._quiet:
                bar = ProgressReader(raw, size, diff_id[7:19], "Loading layer", self._emit)
                src = io.BufferedReader(bar, 1 << 20)
            ingested = ingest_layer(
                self._repo.layers,
                self._repo.content,
                parent,
                src,
                expected_diff_id=diff_id,
                expected_blob=blob_digest,
                layer_index=index,
            )
            if bar is not None:
                bar.finish()
            return ingested
        finally:
            raw.close()

    def _undo(self, undo: _Undo) -> None:
        repo = self._repo
        in_use = repo.store.chain_ids_in_use()
        for chain in reversed(undo.layers):
            if chain in in_use:
                continue
            with contextlib.suppress(errdefs.EngineError):
                repo.layers.remove(chain)
        blobs_in_use = repo.store.layer_blobs_in_use()
        for blob in undo.blobs:
            if blob not in blobs_in_use:
                with contextlib.suppress(errdefs.EngineError):
                    repo.content.delete(blob)

    def _set_parents(self, links: list[tuple[str, str | None]]) -> None:
        loaded = {image_id for image_id, _ in links}
        for image_id, parent in links:
            if not parent or parent == image_id or parent not in loaded:
                continue
            child, par = self._repo.image(image_id), self._repo.image(parent)
            if not _valid_parent(child.history, par.history):
                raise errdefs.InvalidParameter(f"image {parent} is not a valid parent for {image_id}")
            self._repo.store.set_parent(image_id, parent)


def _valid_parent(child: list[dict[str, Any]], parent: list[dict[str, Any]]) -> bool:
    if not child and not parent:
        return True
    if len(child) - len(parent) != 1:
        return False
    for p, c in zip(parent, child, strict=False):
        pc, cc = try_parse_rfc3339(p.get("created")), try_parse_rfc3339(c.get("created"))
        if (pc is None) != (cc is None) or (pc and cc and pc.total_ns() != cc.total_ns()):
            return False
        if {k: v for k, v in p.items() if k != "created"} != {k: v for k, v in c.items() if k != "created"}:
            return False
    return True
