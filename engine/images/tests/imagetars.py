"""Tiny image archives built in tests: layer tars, docker-save tars, OCI layouts and both combined."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from typing import Any

import zstandard

from engine.images.reference import parse_normalized_named


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes], mtime: int = 1700000000) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


@dataclass
class ArchiveImage:
    tags: list[str]
    layers: list[bytes]
    config_extra: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] | None = None

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-02T03:04:05.123456789Z",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in self.layers]},
            "history": self.history
            if self.history is not None
            else [
                {"created": "2024-01-02T03:04:05Z", "created_by": f"ADD layer{i}"}
                for i in range(len(self.layers))
            ],
        }
        cfg.update(self.config_extra)
        return cfg

    def config_bytes(self) -> bytes:
        return json.dumps(self.config(), separators=(",", ":")).encode()

    @property
    def id(self) -> str:
        return sha(self.config_bytes())


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def docker_archive(
    images: list[ArchiveImage],
    *,
    layer_compression: str = "none",
    oci: bool = False,
    docker: bool = True,
    legacy_paths: bool = False,
    extra: dict[str, bytes] | None = None,
) -> bytes:
    """A ``docker save`` tar (``docker``), an OCI layout (``oci``) or both (Docker 25+)."""
    buf = io.BytesIO()
    manifest: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []
    written: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def blob(data: bytes) -> str:
            name = f"blobs/sha256/{sha(data)[7:]}"
            if name not in written:
                written.add(name)
                _add(tar, name, data)
            return name

        for image in images:
            cfg = image.config_bytes()
            layer_blobs = [compress(x, layer_compression) for x in image.layers]
            if legacy_paths:
                config_path = f"{sha(cfg)[7:]}.json"
                _add(tar, config_path, cfg)
                layer_paths = []
                for i, data in enumerate(layer_blobs):
                    path = f"{sha(image.layers[i])[7:]}/layer.tar"
                    if path not in written:
                        written.add(path)
                        _add(tar, path, data)
                    layer_paths.append(path)
            else:
                config_path = blob(cfg)
                layer_paths = [blob(x) for x in layer_blobs]
            manifest.append({"Config": config_path, "RepoTags": image.tags or None, "Layers": layer_paths})
            media = {"none": "", "gzip": "+gzip", "zstd": "+zstd"}[layer_compression]
            oci_manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(cfg),
                               "size": len(cfg)},
                    "layers": [
                        {"mediaType": "application/vnd.oci.image.layer.v1.tar" + media, "digest": sha(x),
                         "size": len(x)}
                        for x in layer_blobs
                    ],
                }
            ).encode()  # fmt: skip
            if oci:
                blob(oci_manifest)
                desc = {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha(oci_manifest),
                    "size": len(oci_manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
                for tag in image.tags or [""]:
                    entry = dict(desc)
                    if tag:
                        name = str(parse_normalized_named(tag))
                        entry["annotations"] = {
                            "io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[-1],
                        }
                    index.append(entry)
        if docker:
            _add(tar, "manifest.json", json.dumps(manifest).encode())
        if oci:
            _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            _add(
                tar,
                "index.json",
                json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": index,
                    }
                ).encode(),
            )
        for name, data in (extra or {}).items():
            _add(tar, name, data)
    return buf.getvalue()


def tar_members(data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            f = tar.extractfile(member)
            out[member.name] = f.read() if f else b""
    return out
