"""tools/mkimage.py: the test image is reproducible and shaped like a `docker save` archive."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TOOLS = Path(__file__).resolve().parent.parent
BUSYBOX = Path("/usr/bin/busybox")

pytestmark = pytest.mark.skipif(not BUSYBOX.exists(), reason="busybox-static not installed")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mkimage", TOOLS / "mkimage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mkimage", module)
    spec.loader.exec_module(module)
    return module


mkimage = _load()


@pytest.fixture(scope="module")
def archive() -> bytes:
    data: bytes = mkimage.build_archive(mkimage.ImageSpec())
    return data


def members(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    out: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for info in tar.getmembers():
            f = tar.extractfile(info) if info.isfile() else None
            out[info.name] = (info, f.read() if f else b"")
    return out


def read_json(data: bytes, name: str) -> Any:
    return json.loads(members(data)[name][1])


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    script = str(TOOLS / "mkimage.py")
    for out in (first, second):
        subprocess.run([sys.executable, script, "-o", str(out)], check=True, capture_output=True)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() == mkimage.build_archive(mkimage.ImageSpec())


def test_archive_layout(archive: bytes) -> None:
    m = members(archive)
    names = list(m)
    assert names == sorted(names)
    assert {"manifest.json", "index.json", "oci-layout", "repositories"} <= set(names)
    for info, _ in m.values():
        assert (info.uid, info.gid, info.mtime) == (0, 0, mkimage.DEFAULT_EPOCH)
    # Every blob is named by its digest.
    for name, (info, body) in m.items():
        if name.startswith("blobs/sha256/") and info.isfile():
            assert hashlib.sha256(body).hexdigest() == name.rsplit("/", 1)[1]


def test_manifest_config_and_index_agree(archive: bytes) -> None:
    (entry,) = read_json(archive, "manifest.json")
    assert entry["RepoTags"] == ["busybox:latest"]
    config = read_json(archive, entry["Config"])
    layer = members(archive)[entry["Layers"][0]][1]
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}
    assert config["os"] == "linux"
    assert config["architecture"] == mkimage.machine_arch()
    assert config["config"]["Cmd"] == ["sh"]
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert len(config["history"]) == 2 and config["history"][1]["empty_layer"] is True
    index = read_json(archive, "index.json")
    (desc,) = index["manifests"]
    assert desc["annotations"]["io.containerd.image.name"] == "docker.io/library/busybox:latest"
    oci_manifest = read_json(archive, "blobs/sha256/" + desc["digest"].split(":")[1])
    assert oci_manifest["config"]["digest"] == "sha256:" + entry["Config"].rsplit("/", 1)[1]
    assert mkimage.image_id(archive) == oci_manifest["config"]["digest"]
    layer_hex = entry["Layers"][0].rsplit("/", 1)[1]
    assert read_json(archive, "repositories") == {"busybox": {"latest": layer_hex}}


def test_layer_contents(archive: bytes) -> None:
    (entry,) = read_json(archive, "manifest.json")
    layer = members(members(archive)[entry["Layers"][0]][1])
    assert layer["bin/busybox"][0].mode == 0o755
    assert layer["bin/busybox"][1] == BUSYBOX.read_bytes()
    assert layer["bin/sh"][0].issym() and layer["bin/sh"][0].linkname == "busybox"
    assert layer["tmp"][0].mode == 0o1777
    assert layer["root"][0].mode == 0o700
    for d in ("dev", "proc", "sys", "etc", "var/www"):
        assert layer[d][0].isdir(), d
    passwd = layer["etc/passwd"][1].decode()
    assert passwd.startswith("root:x:0:0:")
    assert "\napp:x:1000:1000:" in passwd and "\nnobody:x:65534:65534:" in passwd
    assert "app:x:1000:" in layer["etc/group"][1].decode()
    assert all(info.uid == 0 and info.gid == 0 for info, _ in layer.values())


def test_tags_and_labels_change_only_the_config(archive: bytes) -> None:
    spec = mkimage.ImageSpec(tags=("example.com:5000/a/b:v1", "other"), labels={"k": "v"})
    custom = mkimage.build_archive(spec)
    (entry,) = read_json(custom, "manifest.json")
    assert entry["RepoTags"] == ["example.com:5000/a/b:v1", "other:latest"]
    assert read_json(custom, entry["Config"])["config"]["Labels"] == {"k": "v"}
    assert mkimage.image_id(custom) != mkimage.image_id(archive)
    (base_entry,) = read_json(archive, "manifest.json")
    assert entry["Layers"] == base_entry["Layers"]
    names = [
        d["annotations"]["io.containerd.image.name"] for d in read_json(custom, "index.json")["manifests"]
    ]
    assert names == ["example.com:5000/a/b:v1", "docker.io/library/other:latest"]


def test_untagged_archive() -> None:
    data = mkimage.build_archive(mkimage.ImageSpec(tags=()))
    (entry,) = read_json(data, "manifest.json")
    assert entry["RepoTags"] is None
    assert "repositories" not in members(data)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("busybox", ("busybox", "latest", "docker.io/library/busybox:latest")),
        ("busybox:1", ("busybox", "1", "docker.io/library/busybox:1")),
        ("me/app:x", ("me/app", "x", "docker.io/me/app:x")),
        ("localhost:5000/app", ("localhost:5000/app", "latest", "localhost:5000/app:latest")),
        ("reg.io/a/b:c", ("reg.io/a/b", "c", "reg.io/a/b:c")),
    ],
)
def test_normalize_tag(tag: str, expected: tuple[str, str, str]) -> None:
    assert mkimage.normalize_tag(tag) == expected


def test_write_archive_is_atomic_and_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "img.tar"
    image_id = mkimage.write_archive(mkimage.ImageSpec(), out)
    mtime = out.stat().st_mtime_ns
    assert mkimage.write_archive(mkimage.ImageSpec(), out) == image_id
    assert out.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out.parent.iterdir()) == ["img.tar"]
