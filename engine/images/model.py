"""The engine's image record and the Docker shapes derived from an image config.

An image config is the JSON blob whose digest is the image ID (Docker image spec v1.2 / OCI image
config). dockerd decodes it into Go structs (field names matched case-insensitively) and encodes
``config`` back as a ``container.Config``, so inspect shows every field of that struct even when the
image leaves it out; ``container_config_shape`` reproduces that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine import errdefs
from engine.images.reference import Reference
from engine.images.timestamps import Time, try_parse_rfc3339
from storage.images import ImageMeta, StoredImage
from storage.layers import chain_ids

# container.Config in field order: (JSON name, default when absent, omitted when empty).
_CONTAINER_CONFIG_FIELDS: tuple[tuple[str, Any, bool], ...] = (
    ("Hostname", "", False),
    ("Domainname", "", False),
    ("User", "", False),
    ("AttachStdin", False, False),
    ("AttachStdout", False, False),
    ("AttachStderr", False, False),
    ("ExposedPorts", None, True),
    ("Tty", False, False),
    ("OpenStdin", False, False),
    ("StdinOnce", False, False),
    ("Env", None, False),
    ("Cmd", None, False),
    ("Healthcheck", None, True),
    ("ArgsEscaped", False, True),
    ("Image", "", False),
    ("Volumes", None, False),
    ("WorkingDir", "", False),
    ("Entrypoint", None, False),
    ("NetworkDisabled", False, True),
    ("MacAddress", "", True),
    ("OnBuild", None, False),
    ("Labels", None, False),
    ("StopSignal", "", True),
    ("StopTimeout", None, True),
    ("Shell", None, True),
)
_STR_SLICE_FIELDS = {"Cmd", "Entrypoint", "Shell"}


def _strslice(value: Any) -> list[str] | None:
    # strslice.StrSlice accepts a bare string as a one-element list.
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return None


def container_config_shape(raw: Any) -> dict[str, Any] | None:
    """The image config's ``config`` as dockerd prints it (a full ``container.Config``)."""
    if not isinstance(raw, dict):
        return None
    by_lower = {k.lower(): v for k, v in raw.items()}
    out: dict[str, Any] = {}
    for name, default, omit_empty in _CONTAINER_CONFIG_FIELDS:
        value = by_lower.get(name.lower(), default)
        if name in _STR_SLICE_FIELDS:
            value = _strslice(value)
        if value is None and default is not None:
            value = default
        if omit_empty and (value is None or value == default or value == {} or value == []):
            continue
        out[name] = value
    return out


def dumps_config(obj: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it: no spaces, ``<>&`` escaped (the bytes an ID hashes)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def platform_of(config: dict[str, Any]) -> dict[str, str]:
    out = {"architecture": str(config.get("architecture") or ""), "os": str(config.get("os") or "")}
    if config.get("variant"):
        out["variant"] = str(config["variant"])
    return out


@dataclass(frozen=True)
class Image:
    """An image as the engine sees it: config, metadata and the references pointing at it."""

    id: str
    config: dict[str, Any]
    raw: bytes
    meta: ImageMeta
    references: tuple[Reference, ...] = ()

    @staticmethod
    def from_stored(stored: StoredImage, references: tuple[Reference, ...]) -> Image:
        try:
            config = json.loads(stored.config)
        except ValueError as e:
            raise errdefs.Internal(f"image {stored.id}: corrupt config: {e}") from None
        if not isinstance(config, dict):
            raise errdefs.Internal(f"image {stored.id}: corrupt config")
        return Image(stored.id, config, stored.config, stored.meta, references)

    @property
    def short_id(self) -> str:
        return self.id[7:19]

    @property
    def diff_ids(self) -> list[str]:
        rootfs = self.config.get("rootfs") or {}
        return [str(d) for d in rootfs.get("diff_ids") or []]

    @property
    def chain_ids(self) -> list[str]:
        if self.meta.layers:
            return [layer.chain_id for layer in self.meta.layers]
        return chain_ids(self.diff_ids)

    @property
    def top_chain_id(self) -> str | None:
        chains = self.chain_ids
        return chains[-1] if chains else None

    @property
    def created(self) -> Time | None:
        return try_parse_rfc3339(self.config.get("created"))

    @property
    def created_unix(self) -> int:
        created = self.created
        return created.seconds if created else 0

    @property
    def os(self) -> str:
        # image.OperatingSystem(): an empty os means the host's (linux).
        return str(self.config.get("os") or "linux")

    @property
    def labels(self) -> dict[str, str] | None:
        cfg = self.config.get("config")
        if not isinstance(cfg, dict):
            return None
        labels = {k.lower(): v for k, v in cfg.items()}.get("labels")
        return labels if isinstance(labels, dict) else None

    @property
    def history(self) -> list[dict[str, Any]]:
        return [h for h in self.config.get("history") or [] if isinstance(h, dict)]

    @property
    def tags(self) -> list[Reference]:
        return [r for r in self.references if r.tag is not None and r.digest is None]

    @property
    def digests(self) -> list[Reference]:
        return [r for r in self.references if r.digest is not None]

    @property
    def repo_tags(self) -> list[str]:
        return [r.familiar() for r in self.tags]

    @property
    def repo_digests(self) -> list[str]:
        return [r.familiar() for r in self.digests]

    def container_config(self) -> dict[str, Any] | None:
        return container_config_shape(self.config.get("config"))
