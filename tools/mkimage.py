#!/usr/bin/env python3
"""Build the busybox test image offline as a byte-for-byte reproducible `docker save` archive.

The archive uses the combined layout `docker save` writes since Docker 25 (manifest.json and
repositories for the legacy loader, plus oci-layout, index.json and blobs/sha256/ for OCI tools):
dockerd 20.10 only reads manifest.json, whose Config/Layers paths may point anywhere inside the
archive, so one file loads on old and new daemons, on skopeo and on skiff.

Reproducibility: every tar entry has a fixed mtime (SOURCE_DATE_EPOCH, default 1700000000),
uid/gid 0, no user names, and entries are sorted; JSON documents are written with sorted keys.

Usage: tools/mkimage.py [-o .test-image/busybox.tar] [-t busybox:latest ...] [--label k=v ...]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_EPOCH = 1700000000
DEFAULT_BUSYBOX = Path("/usr/bin/busybox")
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / ".test-image" / "busybox.tar"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"
INDEX_HTML = "<html><body>skiff busybox test image</body></html>\n"

# Go's GOARCH names, which Docker uses in image configs.
GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class ImageSpec:
    """What goes into the image; defaults give the canonical `busybox:latest`."""

    tags: tuple[str, ...] = ("busybox:latest",)
    labels: dict[str, str] = field(default_factory=dict)
    busybox: Path = DEFAULT_BUSYBOX
    epoch: int = DEFAULT_EPOCH
    arch: str = ""
    cmd: tuple[str, ...] = ("sh",)
    # (path, content) pairs added to the layer, e.g. to give a variant a layer of its own.
    extra_files: tuple[tuple[str, bytes], ...] = ()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def machine_arch() -> str:
    machine = platform.machine()
    return GOARCH.get(machine, machine)


def applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True).stdout
    return sorted({name for name in out.split() if name and "/" not in name and name != "busybox"})


class _TarBuilder:
    """Collects entries, then writes them sorted with fixed metadata."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = self.epoch
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def directory(self, name: str, mode: int = 0o755) -> None:
        self.entries[name] = (self._info(name, tarfile.DIRTYPE, mode), None)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.entries[name] = (info, data)

    def symlink(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.entries[name] = (info, None)

    def build(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(self.entries):
                info, data = self.entries[name]
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def build_layer(spec: ImageSpec) -> bytes:
    tb = _TarBuilder(spec.epoch)
    for d in (
        "bin",
        "dev",
        "etc",
        "home",
        "proc",
        "sys",
        "usr",
        "usr/bin",
        "usr/sbin",
        "sbin",
        "var",
        "var/www",
    ):
        tb.directory(d)
    tb.directory("root", 0o700)
    tb.directory("home/app", 0o755)
    tb.directory("tmp", 0o1777)
    tb.file("bin/busybox", spec.busybox.read_bytes(), 0o755)
    for name in applets(spec.busybox):
        tb.symlink(f"bin/{name}", "busybox")
    tb.file("etc/passwd", PASSWD.encode())
    tb.file("etc/group", GROUP.encode())
    tb.file("var/www/index.html", INDEX_HTML.encode())
    for path, content in spec.extra_files:
        tb.file(path.lstrip("/"), content)
    return tb.build()


def _rfc3339(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_config(spec: ImageSpec, diff_id: str, arch: str) -> bytes:
    created = _rfc3339(spec.epoch)
    container_config: dict[str, object] = {"Env": [PATH_ENV], "Cmd": list(spec.cmd)}
    if spec.labels:
        container_config["Labels"] = dict(spec.labels)
    config: dict[str, object] = {
        "architecture": arch,
        "config": container_config,
        "created": created,
        "history": [
            {"created": created, "created_by": "/bin/sh -c #(nop) ADD file:busybox-rootfs in / "},
            {
                "created": created,
                "created_by": f"/bin/sh -c #(nop)  CMD {json.dumps(list(spec.cmd))}",
                "empty_layer": True,
            },
        ],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    if arch == "arm64":
        config["variant"] = "v8"
    return canonical_json(config)


def normalize_tag(tag: str) -> tuple[str, str, str]:
    """Return (familiar name, tag, fully qualified reference) for `name[:tag]`."""
    name, _, t = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    first = name.split("/", 1)[0]
    has_domain = "/" in name and ("." in first or ":" in first or first == "localhost")
    if has_domain:
        full = name
    elif "/" in name:
        full = f"docker.io/{name}"
    else:
        full = f"docker.io/library/{name}"
    return name, t, f"{full}:{t}"


def build_archive(spec: ImageSpec) -> bytes:
    arch = spec.arch or machine_arch()
    layer = build_layer(spec)
    layer_hex = sha256_hex(layer)
    config = build_config(spec, f"sha256:{layer_hex}", arch)
    config_hex = sha256_hex(config)
    plat: dict[str, str] = {"architecture": arch, "os": "linux"}
    if arch == "arm64":
        plat["variant"] = "v8"
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": f"sha256:{config_hex}", "size": len(config)},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": f"sha256:{layer_hex}", "size": len(layer)}],
        }
    )
    manifest_hex = sha256_hex(manifest)

    repo_tags: list[str] = []
    repositories: dict[str, dict[str, str]] = {}
    index_manifests: list[dict[str, object]] = []
    for tag in spec.tags:
        name, t, full = normalize_tag(tag)
        repo_tags.append(f"{name}:{t}")
        repositories.setdefault(name, {})[t] = layer_hex
        index_manifests.append(
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": f"sha256:{manifest_hex}",
                "size": len(manifest),
                "platform": plat,
                "annotations": {"io.containerd.image.name": full, "org.opencontainers.image.ref.name": t},
            }
        )
    docker_manifest = [
        {
            "Config": f"blobs/sha256/{config_hex}",
            "RepoTags": repo_tags or None,
            "Layers": [f"blobs/sha256/{layer_hex}"],
        }
    ]
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": index_manifests}

    tb = _TarBuilder(spec.epoch)
    tb.directory("blobs")
    tb.directory("blobs/sha256")
    tb.file(f"blobs/sha256/{layer_hex}", layer)
    tb.file(f"blobs/sha256/{config_hex}", config)
    tb.file(f"blobs/sha256/{manifest_hex}", manifest)
    tb.file("index.json", canonical_json(index) + b"\n")
    tb.file("manifest.json", canonical_json(docker_manifest) + b"\n")
    tb.file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    if repositories:
        tb.file("repositories", canonical_json(repositories) + b"\n")
    return tb.build()


def image_id(archive: bytes) -> str:
    """The image ID ("sha256:<config hex>") of an archive made by build_archive."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        config_path: str = json.load(member)[0]["Config"]
    return "sha256:" + config_path.rsplit("/", 1)[-1]


def write_archive(spec: ImageSpec, output: Path) -> str:
    """Write the archive atomically; returns the image ID. Leaves an identical file untouched."""
    data = build_archive(spec)
    output.parent.mkdir(parents=True, exist_ok=True)
    if not (output.exists() and output.read_bytes() == data):
        tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data)
            tmp.replace(output)
        finally:
            tmp.unlink(missing_ok=True)
    return image_id(data)


def _parse_labels(values: Iterable[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise SystemExit(f"mkimage: bad --label {item!r} (want key=value)")
        labels[key] = value
    return labels


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("-t", "--tag", action="append", default=[], help="repeatable; default busybox:latest")
    parser.add_argument("--label", action="append", default=[], help="image label key=value (repeatable)")
    parser.add_argument("--busybox", type=Path, default=DEFAULT_BUSYBOX)
    parser.add_argument("--arch", default="", help="GOARCH for the config (default: this machine)")
    parser.add_argument("--no-tag", action="store_true", help="write an untagged image")
    args = parser.parse_args(argv)
    if not args.busybox.is_file():
        print(f"mkimage: {args.busybox} not found (apt-get install busybox-static)", file=sys.stderr)
        return 1
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))
    tags: tuple[str, ...] = () if args.no_tag else tuple(args.tag or ["busybox:latest"])
    spec = ImageSpec(
        tags=tags, labels=_parse_labels(args.label), busybox=args.busybox, epoch=epoch, arch=args.arch
    )
    print(write_archive(spec, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
