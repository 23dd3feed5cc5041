"""Reading image archives for ``docker load``: docker-save tars, OCI image layouts, and both at once.

A docker-save tar has ``manifest.json`` (``[{"Config", "RepoTags", "Layers", "Parent"}]``) naming
files inside the tar; Docker 25+ additionally writes an OCI layout (``oci-layout``, ``index.json``,
``blobs/sha256/…``) and points ``manifest.json`` into ``blobs/``. When ``manifest.json`` exists it
wins (dockerd's graph-driver store does the same); otherwise ``index.json`` is followed, through
nested indexes, to the manifest for this host's platform.

Paths are resolved the way dockerd resolves them in its unpacked copy (``FollowSymlinkInScope``):
symlinks and hard links inside the archive are followed, ``..`` cannot leave the archive. Members
whose names would escape it are refused outright, rather than clamped as dockerd's chroot does.

The archive must be a seekable, uncompressed tar file (the service spools and decompresses first).
Synchronous; runs in a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from engine import errdefs
from engine.images.platform import Platform

MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.json"
OCI_LAYOUT_FILE = "oci-layout"
REPOSITORIES_FILE = "repositories"

ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_INDEX_TYPES = {MT_OCI_INDEX, MT_DOCKER_LIST}
_MANIFEST_TYPES = {MT_OCI_MANIFEST, MT_DOCKER_MANIFEST}
_MAX_LINKS = 255


@dataclass(frozen=True)
class LayerSource:
    member: str
    size: int
    media_type: str = ""
    digest: str | None = None  # the blob's digest when an OCI descriptor declares it


@dataclass(frozen=True)
class ImageSource:
    config: bytes = field(repr=False)
    layers: tuple[LayerSource, ...]
    repo_tags: tuple[str, ...]
    parent: str | None = None


def _bad(message: str) -> errdefs.InvalidParameter:
    return errdefs.InvalidParameter(message)


def _clean(name: str) -> str | None:
    """Normalise a member name; None if it would leave the archive root."""
    cleaned = posixpath.normpath("/" + name.lstrip("/")) if name else "/"
    parts = name.replace("\\", "/").split("/")
    depth = 0
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < 0:
                return None
        else:
            depth += 1
    return cleaned.lstrip("/")


class ArchiveReader:
    def __init__(self, path: Path) -> None:
        self._members: dict[str, tarfile.TarInfo] = {}
        self._tar: tarfile.TarFile | None = None
        if path.stat().st_size == 0:
            return  # an empty body unpacks to nothing, as with dockerd's untar
        try:
            self._tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by close()
        except (tarfile.TarError, EOFError):
            raise _bad("Error processing tar file(exit status 1): archive/tar: invalid tar header") from None
        try:
            for member in self._tar:
                name = _clean(member.name)
                if name is None:
                    raise _bad(f"invalid archive entry {member.name!r}: path escapes the archive")
                if name:
                    self._members[name] = member
        except tarfile.TarError as e:
            self.close()
            raise _bad(f"Error processing tar file(exit status 1): {e}") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- path resolution -------------------------------------------------------------------------

    def _resolve(self, name: str) -> tarfile.TarInfo:
        """The regular-file member ``name`` designates, following links within the archive."""
        todo = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            done.append(part)
            member = self._members.get("/".join(done))
            if member is None:
                continue
            if member.issym() or (member.islnk() and not todo):
                hops += 1
                if hops > _MAX_LINKS:
                    raise _bad(f"open {name}: too many levels of symbolic links")
                done.pop()
                target = member.linkname.replace("\\", "/")
                if member.islnk() or target.startswith("/"):
                    done = []
                todo = [p for p in target.split("/") if p not in ("", ".")] + todo
        path = "/".join(done)
        member = self._members.get(path)
        if member is None or not member.isfile():
            raise _bad(f"open {name}: no such file or directory")
        return member

    def has(self, name: str) -> bool:
        try:
            self._resolve(name)
        except errdefs.InvalidParameter:
            return False
        return True

    def size(self, name: str) -> int:
        return self._resolve(name).size

    def open(self, name: str) -> IO[bytes]:
        member = self._resolve(name)
        f = self._tar.extractfile(member) if self._tar is not None else None
        if f is None:
            raise _bad(f"open {name}: not a regular file")
        return f

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        member = self._resolve(name)
        if member.size > limit:
            raise _bad(f"{name}: file too large ({member.size} bytes)")
        with self.open(name) as f:
            return f.read()

    def _json(self, name: str) -> Any:
        data = self.read(name)
        try:
            return json.loads(data)
        except ValueError as e:
            raise _bad(f"{name}: {e}") from None

    # --- formats ---------------------------------------------------------------------------------

    def images(self, host: Platform) -> list[ImageSource]:
        if self.has(MANIFEST_FILE):
            return self._docker_images()
        if self.has(INDEX_FILE):
            return self._oci_images(host)
        raise _bad(f"open {MANIFEST_FILE}: no such file or directory")

    def _docker_images(self) -> list[ImageSource]:
        manifest = self._json(MANIFEST_FILE)
        if manifest is None:
            raise _bad("invalid manifest, manifest cannot be null (but can be [])")
        if not isinstance(manifest, list):
            raise _bad("json: cannot unmarshal object into Go value of type []tarexport.manifestItem")
        out: list[ImageSource] = []
        for raw in manifest:
            if not isinstance(raw, dict):
                raise _bad("json: cannot unmarshal manifest item")
            item = {k.lower(): v for k, v in raw.items()}
            config_name = str(item.get("config") or "")
            layers = [str(x) for x in item.get("layers") or []]
            tags = tuple(str(x) for x in item.get("repotags") or [])
            config = self.read(config_name)
            sources = tuple(LayerSource(name, self.size(name)) for name in layers)
            parent = item.get("parent")
            out.append(ImageSource(config, sources, tags, str(parent) if parent else None))
        return out

    def _blob_name(self, descriptor: dict[str, Any]) -> str:
        digest = str(descriptor.get("digest") or "")
        algo, _, encoded = digest.partition(":")
        if algo != "sha256" or len(encoded) != 64:
            raise _bad(f"invalid digest {digest!r} in OCI descriptor")
        return f"blobs/{algo}/{encoded}"

    def _verified_blob(self, descriptor: dict[str, Any]) -> bytes:
        data = self.read(self._blob_name(descriptor))
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest != descriptor.get("digest"):
            raise _bad(f"blob {descriptor.get('digest')}: content digest {digest} does not match")
        return data

    def _oci_images(self, host: Platform) -> list[ImageSource]:
        index = self._json(INDEX_FILE)
        if not isinstance(index, dict):
            raise _bad(f"{INDEX_FILE}: not an OCI image index")
        # Docker 25+ lists one descriptor per tag: descriptors of one manifest are one image.
        by_digest: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for desc in index.get("manifests") or []:
            if not isinstance(desc, dict):
                continue
            manifest = self._select_manifest(desc, host, depth=0)
            if manifest is None:
                continue
            key = str(desc.get("digest"))
            _, names = by_digest.setdefault(key, (manifest, []))
            name = _image_name(desc.get("annotations") or {})
            if name and name not in names:
                names.append(name)
        return [self._oci_image(manifest, names) for manifest, names in by_digest.values()]

    def _select_manifest(self, desc: dict[str, Any], host: Platform, depth: int) -> dict[str, Any] | None:
        if depth > 8:
            raise _bad("OCI index nesting too deep")
        media_type = str(desc.get("mediaType") or "")
        doc = json.loads(self._verified_blob(desc))
        if not isinstance(doc, dict):
            raise _bad(f"blob {desc.get('digest')}: not a JSON object")
        media_type = media_type or str(doc.get("mediaType") or "")
        if media_type in _INDEX_TYPES or (not media_type and "manifests" in doc):
            children = [m for m in doc.get("manifests") or [] if isinstance(m, dict)]
            for child in children:
                platform = child.get("platform")
                if isinstance(platform, dict) and not host.matches(platform):
                    continue
                if not isinstance(platform, dict) and len(children) > 1:
                    continue  # attestation manifests and other platform-less entries
                found = self._select_manifest(child, host, depth + 1)
                if found is not None:
                    return found
            return None
        if media_type in _MANIFEST_TYPES or "config" in doc:
            return doc
        return None

    def _oci_image(self, manifest: dict[str, Any], names: list[str]) -> ImageSource:
        config_desc = manifest.get("config")
        if not isinstance(config_desc, dict):
            raise _bad("OCI manifest has no config")
        config = self._verified_blob(config_desc)
        layers = []
        for desc in manifest.get("layers") or []:
            if not isinstance(desc, dict):
                raise _bad("OCI manifest has an invalid layer descriptor")
            blob = self._blob_name(desc)
            layers.append(
                LayerSource(blob, self.size(blob), str(desc.get("mediaType") or ""), str(desc["digest"]))
            )
        return ImageSource(config, tuple(layers), tuple(names))


def _image_name(annotations: dict[str, Any]) -> str | None:
    """containerd's import naming: the full image name, else a ref name that is a whole reference."""
    name = annotations.get(ANNOTATION_IMAGE_NAME)
    if isinstance(name, str) and name:
        return name
    ref = annotations.get(ANNOTATION_REF_NAME)
    if isinstance(ref, str) and ("/" in ref or ":" in ref):
        # A bare ref name ("latest") is only a tag: without a repository it names nothing.
        return ref
    return None
