"""``docker save``: images as one tar holding a docker-save archive *and* an OCI image layout.

This is what dockerd 25+ writes: ``blobs/sha256/<hex>`` holds every layer tar (named by its diff ID,
uncompressed), every config and an OCI manifest per image; ``manifest.json`` (read by dockerd's
graph-driver store, including 20.10) points into ``blobs/``; ``index.json`` + ``oci-layout`` make
the same tar an OCI layout for containerd-based loaders; ``repositories`` is the legacy tag map.

Names are chosen as dockerd's tarexport does: ``repo`` alone takes every tag of that repository,
``repo:tag`` that tag, an ID (or prefix) the image without tags. Planning (name resolution) happens
before the response starts, so a missing image is an ordinary 404; the tar is then written entry by
entry into a worker-thread stream, never assembled in memory. Layer tars are the exact bytes the
image was loaded with (decompressed when stored compressed), so their diff IDs hold.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from engine import errdefs
from engine.images.ingest import UNCOMPRESSED_TYPES
from engine.images.model import Image, dumps_config, platform_of
from engine.images.reference import Reference, parse_any_reference, parse_normalized_named
from engine.images.repo import ImageRepo
from storage.images import LayerRecord
from storage.layers import LayerStream

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
_CHUNK = 256 * 1024


@dataclass
class _Entry:
    image: Image
    tags: list[Reference] = field(default_factory=list)


def plan(repo: ImageRepo, names: list[str]) -> list[_Entry]:
    """tarexport.parseNames: which images, with which tags, in request order."""
    entries: dict[str, _Entry] = {}

    def add(image_id: str, ref: Reference | None) -> None:
        entry = entries.get(image_id)
        if entry is None:
            if not repo.store.exists(image_id):
                raise errdefs.no_such_image(image_id)
            entry = entries[image_id] = _Entry(repo.image(image_id))
        if ref is None or ref.digest is not None:
            return
        tagged = ref.with_default_tag()
        if all(str(t) != str(tagged) for t in entry.tags):
            entry.tags.append(tagged)

    for name in names:
        try:
            ref = parse_any_reference(name)
        except errdefs.InvalidParameter as e:
            raise errdefs.Internal(e.message) from None  # dockerd passes these through untyped
        if isinstance(ref, str):
            add(ref, None)
            continue
        if ref.familiar_name == "sha256" or ref.is_name_only:
            assocs = [] if ref.familiar_name == "sha256" else repo.store.references_by_name(ref.familiar_name)
            for familiar, image_id in assocs:
                add(image_id, _parse(familiar))
            if not assocs:
                found = repo.store.search(name)
                if found is None:
                    raise errdefs.no_such_image(name)
                add(found, None)
            continue
        referenced = repo.get_reference(ref)
        if referenced is None:
            raise errdefs.NotFound("reference does not exist")
        add(referenced, ref)
    for entry in entries.values():
        image = entry.image
        if not image.diff_ids:
            raise errdefs.Internal("empty export - not implemented")
        if [layer.diff_id for layer in image.meta.layers] != image.diff_ids:
            raise errdefs.Internal(f"image {image.id} has no stored layer tars to export")
        for layer in image.meta.layers:
            if not layer.blob or not repo.content.has(layer.blob):
                raise errdefs.Internal(
                    f"layer {layer.diff_id} of image {entry.image.id} has no stored tar to export"
                )
    return list(entries.values())


def _parse(familiar: str) -> Reference | None:
    try:
        return parse_normalized_named(familiar)
    except errdefs.InvalidParameter:
        return None


class _ChunkWriter:
    """File-like sink for tarfile's stream mode that hands out chunks of about _CHUNK bytes."""

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self._emit = emit
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        if len(self._buf) >= _CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buf:
            chunk = bytes(self._buf)
            self._buf.clear()
            self._emit(chunk)


def _info(name: str, size: int, mtime: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mtime = mtime
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.uname = info.gname = "root"
    return info


def _open_layer(stack: contextlib.ExitStack, repo: ImageRepo, layer: LayerRecord) -> tuple[IO[bytes], int]:
    """The layer's tar as it was loaded (decompressed if stored compressed) and its size."""
    assert layer.blob is not None
    raw = stack.enter_context(repo.content.open(layer.blob))
    if layer.media_type in UNCOMPRESSED_TYPES or not layer.media_type:
        return raw, repo.content.size(layer.blob)
    return stack.enter_context(LayerStream(raw).reader), layer.uncompressed_size


def write(repo: ImageRepo, entries: list[_Entry], emit: Callable[[bytes], None]) -> None:
    """Write the archive for ``entries`` through ``emit`` (runs in a worker thread)."""
    blobs: dict[str, tuple[str, Any]] = {}  # hex → ("layer", LayerRecord) | ("bytes", data)
    mtimes: dict[str, int] = {}
    manifest: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    for entry in entries:
        image = entry.image
        created = image.created_unix
        config_hex = image.id[7:]
        blobs[config_hex] = ("bytes", image.raw)
        mtimes[config_hex] = created
        layer_descs = []
        layer_paths = []
        for layer, diff_id in zip(image.meta.layers, image.diff_ids, strict=True):
            size = layer.uncompressed_size if layer.media_type not in UNCOMPRESSED_TYPES else layer.size
            blobs.setdefault(diff_id[7:], ("layer", layer))
            mtimes.setdefault(diff_id[7:], created)
            layer_descs.append({"mediaType": MT_OCI_LAYER, "digest": diff_id, "size": size})
            layer_paths.append(f"blobs/sha256/{diff_id[7:]}")
        oci_manifest = dumps_config(
            {
                "schemaVersion": 2,
                "mediaType": MT_OCI_MANIFEST,
                "config": {"mediaType": MT_OCI_CONFIG, "digest": image.id, "size": len(image.raw)},
                "layers": layer_descs,
            }
        )
        manifest_digest = "sha256:" + hashlib.sha256(oci_manifest).hexdigest()
        blobs[manifest_digest[7:]] = ("bytes", oci_manifest)
        mtimes[manifest_digest[7:]] = 0
        descriptor = {"mediaType": MT_OCI_MANIFEST, "digest": manifest_digest, "size": len(oci_manifest)}
        platform = platform_of(image.config)
        if entry.tags:
            for tag in entry.tags:
                index.append(
                    {
                        **descriptor,
                        "annotations": {
                            "io.containerd.image.name": str(tag),
                            "org.opencontainers.image.ref.name": tag.tag,
                        },
                        "platform": platform,
                    }
                )
                repositories.setdefault(tag.familiar_name, {})[str(tag.tag)] = image.diff_ids[-1][7:]
        else:
            index.append({**descriptor, "platform": platform})
        item: dict[str, Any] = {
            "Config": f"blobs/sha256/{config_hex}",
            "RepoTags": [t.familiar() for t in entry.tags] or None,
            "Layers": layer_paths,
        }
        manifest.append(item)
        repo.event("save", image.id, image.id)

    out = _ChunkWriter(emit)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:  # type: ignore[call-overload]
        tar.addfile(_info("blobs", 0, 0, directory=True))
        tar.addfile(_info("blobs/sha256", 0, 0, directory=True))
        for hexname in sorted(blobs):
            kind, value = blobs[hexname]
            name = f"blobs/sha256/{hexname}"
            if kind == "bytes":
                tar.addfile(_info(name, len(value), mtimes[hexname]), io.BytesIO(value))
                continue
            with contextlib.ExitStack() as stack:
                src, size = _open_layer(stack, repo, value)
                tar.addfile(_info(name, size, mtimes[hexname]), src)
        index_doc = dumps_config({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": index})
        tar.addfile(_info("index.json", len(index_doc), 0), io.BytesIO(index_doc))
        manifest_doc = dumps_config(manifest) + b"\n"
        tar.addfile(_info("manifest.json", len(manifest_doc), 0), io.BytesIO(manifest_doc))
        tar.addfile(_info("oci-layout", len(OCI_LAYOUT), 0), io.BytesIO(OCI_LAYOUT))
        if repositories:
            repos_doc = dumps_config(repositories) + b"\n"
            tar.addfile(_info("repositories", len(repos_doc), 0), io.BytesIO(repos_doc))
    out.flush()
