"""Manifests: media types, parsing what a registry returns, choosing a platform from an index,
and building the manifest a push uploads.

Pull accepts Docker schema 2 and OCI image manifests, Docker manifest lists and OCI indexes; schema 1
is refused with dockerd's deprecation message. Push writes a Docker schema 2 manifest (what dockerd
writes) unless a layer is zstd, which only OCI can describe; the JSON is indented with three spaces
like Go's ``MarshalIndent`` in docker/distribution, so a re-push reproduces the registry's digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine import errdefs
from engine.images.platform import Platform, normalize_arch

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
MT_DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_DOCKER_LAYER_PLAIN = "application/vnd.docker.image.rootfs.diff.tar"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

ACCEPT = ", ".join(
    (
        MT_DOCKER_MANIFEST,
        MT_DOCKER_LIST,
        MT_OCI_MANIFEST,
        MT_OCI_INDEX,
        MT_DOCKER_SCHEMA1_SIGNED,
        MT_DOCKER_SCHEMA1,
    )
)
IMAGE_TYPES = (MT_DOCKER_MANIFEST, MT_OCI_MANIFEST)
INDEX_TYPES = (MT_DOCKER_LIST, MT_OCI_INDEX)
CONFIG_TYPES = (MT_DOCKER_CONFIG, MT_OCI_CONFIG)
# What a layer may be (dockerd's supportedMediaTypes; prefixes cover +gzip, +zstd, foreign, …).
LAYER_PREFIXES = ("application/vnd.docker.image.rootfs.", "application/vnd.oci.image.layer.")
MAX_MANIFEST_SIZE = 4 << 20


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None

    @staticmethod
    def from_json(obj: Any) -> Descriptor:
        if not isinstance(obj, dict) or not isinstance(obj.get("digest"), str):
            raise errdefs.InvalidParameter("unsupported manifest format")
        platform = obj.get("platform")
        return Descriptor(
            media_type=str(obj.get("mediaType") or ""),
            digest=obj["digest"],
            size=int(obj.get("size") or 0),
            platform=platform if isinstance(platform, dict) else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest}


@dataclass(frozen=True)
class Manifest:
    """A fetched manifest: its kind (``image`` or ``index``), raw bytes and parsed document."""

    media_type: str
    raw: bytes
    doc: dict[str, Any]

    @property
    def digest(self) -> str:
        return sha256_digest(self.raw)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def config(self) -> Descriptor:
        return Descriptor.from_json(self.doc.get("config"))

    @property
    def layers(self) -> list[Descriptor]:
        return [Descriptor.from_json(x) for x in self.doc.get("layers") or []]

    @property
    def manifests(self) -> list[Descriptor]:
        return [Descriptor.from_json(x) for x in self.doc.get("manifests") or []]


def schema1_error(ref: str) -> errdefs.InvalidParameter:
    return errdefs.InvalidParameter(
        "Docker Image Format v1 and Docker Image manifest version 2, schema 1 support has been removed. "
        f"Suggest the author of {ref} to upgrade the image to the OCI Format or Docker Image manifest v2, "
        "schema 2. More information at https://docs.docker.com/go/deprecated-image-specs/"
    )


def parse(content_type: str, raw: bytes, ref: str) -> Manifest:
    """Identify and parse a manifest body; ``ref`` names the image in the schema 1 error."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise errdefs.InvalidParameter("unsupported manifest format")
    declared = doc.get("mediaType")
    if media_type in ("", "application/json", "text/plain", "application/octet-stream") and isinstance(
        declared, str
    ):
        media_type = declared
    if media_type in (MT_DOCKER_SCHEMA1, MT_DOCKER_SCHEMA1_SIGNED) or doc.get("schemaVersion") == 1:
        raise schema1_error(ref)
    if media_type not in IMAGE_TYPES + INDEX_TYPES:
        # OCI content served without a media type: tell by shape.
        if "manifests" in doc:
            media_type = MT_OCI_INDEX
        elif "config" in doc and "layers" in doc:
            media_type = MT_OCI_MANIFEST
        else:
            raise errdefs.InvalidParameter("unsupported manifest format")
    return Manifest(media_type, raw, doc)


def check_config_type(media_type: str) -> None:
    """dockerd refuses artifacts (helm charts, plugins, …) that are not container images."""
    if media_type and media_type not in CONFIG_TYPES:
        kind = {"application/vnd.docker.plugin.v1+json": "plugin"}.get(media_type, "unknown")
        raise errdefs.InvalidParameter(f'Encountered remote "{media_type}"({kind}) when fetching')


def check_layer_type(media_type: str) -> None:
    lower = media_type.lower()
    if lower.startswith("application/vnd.docker.ai."):
        raise errdefs.InvalidParameter(
            'AI models are not yet supported by the Engine, please use "docker model pull/run" instead'
        )
    if media_type and not lower.startswith(LAYER_PREFIXES):
        raise errdefs.InvalidParameter(f"unsupported media type {media_type}")


# --- platform selection ----------------------------------------------------------------------------

_VARIANT_ORDER = {"amd64": ("", "v1", "v2"), "arm64": ("", "v8")}


def _rank(desc: Descriptor, target: Platform) -> int | None:
    """How well an index entry fits ``target``: 0 is best, None is no match.

    Like containerd's ``platforms.Only``: the exact variant first, then older variants the CPU also
    runs (arm/v7 runs v6 and v5; amd64 runs 386); an entry without a platform fits last.
    """
    p = desc.platform
    if p is None:
        return 1000
    if str(p.get("os") or "") != target.os:
        return None
    arch, variant = normalize_arch(str(p.get("architecture") or ""), str(p.get("variant") or ""))
    if arch == target.architecture:
        if target.variant and variant:
            if variant == target.variant:
                return 0
            if arch == "arm" and variant < target.variant:  # v5 < v6 < v7 < v8
                return 10 + ord(target.variant[-1]) - ord(variant[-1])
            return None
        if not target.variant and arch in _VARIANT_ORDER:
            order = _VARIANT_ORDER[arch]
            return order.index(variant) if variant in order else None
        return 0
    if target.architecture == "amd64" and arch == "386":
        return 100
    return None


def select(manifests: Sequence[Descriptor], target: Platform) -> list[Descriptor]:
    """The index entries usable on ``target``, best first (stable for equal ranks)."""
    ranked = [(r, i, d) for i, d in enumerate(manifests) if (r := _rank(d, target)) is not None]
    return [d for _, _, d in sorted(ranked, key=lambda x: (x[0], x[1]))]


def no_match_error(target: Platform) -> errdefs.NotFound:
    return errdefs.NotFound(f"no matching manifest for {target} in the manifest list entries")


# --- building ---------------------------------------------------------------------------------------


def build_image_manifest(config: Descriptor, layers: Sequence[Descriptor]) -> tuple[str, bytes]:
    """(media type, bytes) of the manifest for a push."""
    oci = any(layer.media_type == MT_OCI_LAYER_ZSTD for layer in layers)
    media_type = MT_OCI_MANIFEST if oci else MT_DOCKER_MANIFEST
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return media_type, json.dumps(doc, indent=3).encode()
