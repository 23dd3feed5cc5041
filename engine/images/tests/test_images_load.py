"""docker load / save / import on real storage: formats, messages, round trips, clean failures."""

from __future__ import annotations

import bz2
import hashlib
import io
import json
import lzma
import tarfile
from pathlib import Path

import pytest

from engine import errdefs
from engine.images.progress import encode, human_size, progress_bar

from .conftest import Env, import_, load, run, save
from .imagetars import ArchiveImage, compress, docker_archive, layer_tar, sha, tar_members

L1 = layer_tar({"hello.txt": b"hello\n"})
L2 = layer_tar({"b.txt": b"bbb\n"})
L3 = layer_tar({"c.txt": b"ccc\n"})
BUSYBOX = Path(__file__).resolve().parents[3] / ".test-image" / "busybox.tar"


def image(tags: list[str], *layers: bytes, **extra: object) -> ArchiveImage:
    return ArchiveImage(tags, list(layers or (L1, L2)), dict(extra))


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("fmt", ["docker", "oci", "both", "legacy"])
def test_load_formats(env: Env, fmt: str, compression: str) -> None:
    img = image(["skiffimg/a:v1", "localhost:5000/x/y:2"])
    data = docker_archive(
        [img],
        layer_compression=compression,
        docker=fmt != "oci",
        oci=fmt in ("oci", "both"),
        legacy_paths=fmt == "legacy",
    )
    messages = load(env.service, data)
    assert messages == [
        {"stream": "Loaded image: skiffimg/a:v1\n"},
        {"stream": "Loaded image: localhost:5000/x/y:2\n"},
    ]
    doc = run(env.service.inspect("skiffimg/a:v1"))
    assert doc["Id"] == img.id
    assert doc["RepoTags"] == ["skiffimg/a:v1", "localhost:5000/x/y:2"]  # sorted by full name, as dockerd
    assert doc["RootFS"] == {"Type": "layers", "Layers": [sha(L1), sha(L2)]}
    assert [a for _, a, i, _ in env.events.events] == ["load"]
    # The layer tars come back byte for byte, so the diff IDs hold after a save.
    saved = tar_members(save(env.service, ["skiffimg/a:v1"]))
    assert saved[f"blobs/sha256/{sha(L1)[7:]}"] == L1
    assert saved[f"blobs/sha256/{sha(L2)[7:]}"] == L2


def test_load_progress_messages_like_dockerd(env: Env) -> None:
    messages = load(env.service, docker_archive([image(["skiffimg/a:v1"])]), quiet=False)
    layer_id = sha(L1)[7:19]
    size = len(L1)
    bar = "[" + "=" * 50 + ">] " + f"{human_size(size):>8}/{human_size(size)}"
    expected = {
        "status": "Loading layer",
        "progressDetail": {"current": size, "total": size},
        "progress": bar,
        "id": layer_id,
    }
    # dockerd's progress reader reports at 100% and once more at EOF.
    assert messages[:2] == [expected, expected]
    assert messages[2]["id"] == sha(L2)[7:19]
    assert messages[-1] == {"stream": "Loaded image: skiffimg/a:v1\n"}
    assert encode(messages[0]).endswith(b'\\u003e]  10.24kB/10.24kB","id":"' + layer_id.encode() + b'"}\r\n')


def test_progress_bar_format() -> None:
    assert progress_bar(10240, 10240) == "[" + "=" * 50 + ">]  10.24kB/10.24kB"
    assert progress_bar(0, 100) == "[>" + " " * 50 + "]       0B/100B"
    assert progress_bar(512, 0) == "    512B"
    assert human_size(1234567) == "1.235MB"
    assert human_size(999) == "999B"


def test_untagged_archive_reports_ids(env: Env) -> None:
    a, b = image([], L1), image([], L2)
    messages = load(env.service, docker_archive([a, b]))
    assert messages == [{"stream": f"Loaded image ID: {a.id}\nLoaded image ID: {b.id}\n"}]
    rows = run(env.service.list_images())
    assert sorted(r["Id"] for r in rows) == sorted([a.id, b.id])
    assert all(r["RepoTags"] == [] and r["RepoDigests"] == [] for r in rows)


def test_oci_bare_ref_name_is_not_a_name(env: Env) -> None:
    img = image(["skiffimg/a:v1"])
    data = docker_archive([img], docker=False, oci=True)
    members = tar_members(data)
    index = json.loads(members["index.json"])
    index["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
    rebuilt = docker_archive([], docker=False, extra={**members, "index.json": json.dumps(index).encode()})
    assert load(env.service, rebuilt) == [{"stream": f"Loaded image ID: {img.id}\n"}]


def test_reload_moves_tag_like_dockerd(env: Env) -> None:
    old = image(["skiffimg/a:v1"], L1, L2)
    new = image(["skiffimg/a:v1", "skiffimg/c:latest"], L1, L3)
    load(env.service, docker_archive([old]))
    messages = load(env.service, docker_archive([new]))
    assert messages == [
        {
            "stream": f"The image skiffimg/a:v1 already exists, renaming the old one with ID {old.id} "
            "to empty string\n"
        },
        {"stream": "Loaded image: skiffimg/a:v1\n"},
        {"stream": "Loaded image: skiffimg/c:latest\n"},
    ]
    dangling = run(env.service.list_images({"dangling": ["true"]}))
    assert [r["Id"] for r in dangling] == [old.id]
    # Loading the same archive again changes nothing and applies nothing.
    before = env.snapshots()
    assert load(env.service, docker_archive([new]))[-1] == {"stream": "Loaded image: skiffimg/c:latest\n"}
    assert env.snapshots() == before


def test_busybox_test_image(env: Env) -> None:
    if not BUSYBOX.exists():
        pytest.skip("tools/mkimage.py has not built .test-image/busybox.tar")
    data = BUSYBOX.read_bytes()
    assert load(env.service, data) == [{"stream": "Loaded image: busybox:latest\n"}]
    image_ = run(env.service.resolve("busybox"))
    assert env.service.image_config(image_)["Cmd"]
    assert env.service.top_chain_id(image_) == image_.chain_ids[-1]
    # Round trip: what skiff saves, skiff loads into an empty store as the same image.
    saved = save(env.service, ["busybox"])
    members = tar_members(saved)
    for diff_id in image_.diff_ids:
        assert hashlib.sha256(members[f"blobs/sha256/{diff_id[7:]}"]).hexdigest() == diff_id[7:]
    run(env.service.delete("busybox", force=True))
    assert env.snapshots() == [] and env.blobs() == []
    assert load(env.service, saved) == [{"stream": "Loaded image: busybox:latest\n"}]
    assert run(env.service.resolve("busybox:latest")).id == image_.id


def test_save_layout(env: Env) -> None:
    a = image(["skiffimg/a:v1", "skiffimg/a:v2"], L1, L2)
    b = image(["skiffimg/b:latest"], L1, L3)
    load(env.service, docker_archive([a, b], layer_compression="gzip"))
    data = save(env.service, ["skiffimg/a", "skiffimg/b"])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert names[:2] == ["blobs", "blobs/sha256"]
    assert names[-4:] == ["index.json", "manifest.json", "oci-layout", "repositories"]
    members = tar_members(data)
    manifest = json.loads(members["manifest.json"])
    assert manifest == [
        {
            "Config": f"blobs/sha256/{a.id[7:]}",
            "RepoTags": ["skiffimg/a:v1", "skiffimg/a:v2"],
            "Layers": [f"blobs/sha256/{sha(L1)[7:]}", f"blobs/sha256/{sha(L2)[7:]}"],
        },
        {
            "Config": f"blobs/sha256/{b.id[7:]}",
            "RepoTags": ["skiffimg/b:latest"],
            "Layers": [f"blobs/sha256/{sha(L1)[7:]}", f"blobs/sha256/{sha(L3)[7:]}"],
        },
    ]
    index = json.loads(members["index.json"])
    names_in_index = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
    assert names_in_index == [
        "docker.io/skiffimg/a:v1",
        "docker.io/skiffimg/a:v2",
        "docker.io/skiffimg/b:latest",
    ]
    oci_manifest = json.loads(members["blobs/sha256/" + index["manifests"][0]["digest"][7:]])
    assert oci_manifest["config"]["digest"] == a.id
    assert [lyr["digest"] for lyr in oci_manifest["layers"]] == [sha(L1), sha(L2)]
    assert json.loads(members["repositories"]) == {
        "skiffimg/a": {"v1": sha(L2)[7:], "v2": sha(L2)[7:]},
        "skiffimg/b": {"latest": sha(L3)[7:]},
    }
    assert members["oci-layout"] == b'{"imageLayoutVersion":"1.0.0"}'
    assert env.events.actions().count("save") == 2
    # The OCI half alone is a complete layout too.
    oci_only = {k: v for k, v in members.items() if k not in ("manifest.json", "repositories")}
    fresh = env.root / "fresh"
    fresh.mkdir()
    other = Env(fresh, None, None, None, env.events, None)  # type: ignore[arg-type]
    other.reopen()
    assert load(other.service, docker_archive([], docker=False, extra=oci_only))[0] == {
        "stream": "Loaded image: skiffimg/a:v1\n"
    }


def test_save_by_id_and_errors(env: Env) -> None:
    a = image(["skiffimg/a:v1"])
    load(env.service, docker_archive([a]))
    manifest = json.loads(tar_members(save(env.service, [a.id[7:19]]))["manifest.json"])
    assert manifest[0]["RepoTags"] is None
    with pytest.raises(errdefs.NotFound, match=r"^No such image: nonexist$"):
        save(env.service, ["nonexist"])
    with pytest.raises(errdefs.NotFound, match=r"^reference does not exist$"):
        save(env.service, ["skiffimg/a:v2"])


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        (
            "garbage",
            b"this is not a tar" * 40,
            "Error processing tar file(exit status 1): archive/tar: invalid",
        ),
        ("empty", b"", "open manifest.json: no such file or directory"),
        ("truncated", docker_archive([image(["skiffimg/x:1"], L1)])[:700], "Error processing tar file"),
        (
            "no manifest",
            docker_archive([], docker=False, extra={"x": b"y"}),
            "open manifest.json: no such file",
        ),
        (
            "null manifest",
            docker_archive([], docker=False, extra={"manifest.json": b"null"}),
            "invalid manifest, manifest cannot be null (but can be [])",
        ),
        (
            "wrong diff id",
            docker_archive(
                [image(["skiffimg/x:1"], L1, L2, rootfs={"type": "layers", "diff_ids": [sha(L1), sha(L3)]})]
            ),
            f'invalid diffID for layer 1: expected "{sha(L3)}", got "{sha(L2)}"',
        ),
        (
            "layer count",
            docker_archive(
                [image(["skiffimg/x:1"], L1, L2, rootfs={"type": "layers", "diff_ids": [sha(L1)]})]
            ),
            "invalid manifest, layers length mismatch: expected 2, got 1",
        ),
        (
            "escaping layer",
            docker_archive([image(["skiffimg/x:1"], L1, layer_tar({"../../evil": b"x"}))]),
            "",
        ),
        (
            "windows",
            docker_archive([image(["skiffimg/x:1"], L1, os="windows")]),
            "cannot load windows image on linux",
        ),
        ("untagged name", docker_archive([image(["skiffimg/x"], L1)]), 'invalid tag "skiffimg/x"'),
    ],
)
def test_bad_archives_leave_nothing(env: Env, name: str, data: bytes, message: str) -> None:
    load(env.service, docker_archive([image(["keep:1"], L1)]))  # a layer that must survive
    before = (env.snapshots(), env.blobs(), run(env.service.list_images()))
    messages = load(env.service, data)
    assert len(messages) == 1 and set(messages[0]) == {"errorDetail", "error"}, messages
    assert messages[0]["error"] == messages[0]["errorDetail"]["message"]
    assert message in messages[0]["error"]
    assert (env.snapshots(), env.blobs(), run(env.service.list_images())) == before
    assert list((env.root / "image" / "tmp").iterdir()) == []


def test_failed_second_image_keeps_the_first(env: Env) -> None:
    good = image(["skiffimg/good:1"], L1)
    bad = image(["skiffimg/bad:1"], L2, rootfs={"type": "layers", "diff_ids": [sha(L3)]})
    messages = load(env.service, docker_archive([good, bad]))
    assert messages[0] == {"stream": "Loaded image: skiffimg/good:1\n"}
    assert "invalid diffID" in messages[1]["error"]
    assert [r["RepoTags"] for r in run(env.service.list_images())] == [["skiffimg/good:1"]]
    assert env.snapshots() == [sha(L1)]


def test_compressed_outer_archive(env: Env) -> None:
    data = compress(docker_archive([image(["skiffimg/a:v1"])]), "gzip")
    assert load(env.service, data) == [{"stream": "Loaded image: skiffimg/a:v1\n"}]


def test_parent_links_from_manifest(env: Env) -> None:
    parent = image(["skiffimg/p:1"], L1)
    child = ArchiveImage(
        ["skiffimg/c:1"], [L1, L2], history=[*parent.config()["history"], {"created_by": "x"}]
    )
    data = docker_archive([parent, child])
    members = tar_members(data)
    manifest = json.loads(members["manifest.json"])
    manifest[1]["Parent"] = parent.id
    data = docker_archive([], docker=False, extra={**members, "manifest.json": json.dumps(manifest).encode()})
    load(env.service, data)
    assert run(env.service.inspect("skiffimg/c:1"))["Parent"] == parent.id
    history = run(env.service.history("skiffimg/c:1"))
    assert [h["Id"] for h in history] == [child.id, parent.id]
    assert [h["Tags"] for h in history] == [["skiffimg/c:1"], ["skiffimg/p:1"]]
    with pytest.raises(errdefs.Conflict, match=r"image has dependent child images"):
        run(env.service.delete(parent.id[7:], force=True))


# --- import ----------------------------------------------------------------------------------------


def test_import_with_changes(env: Env) -> None:
    changes = [
        'ENV A=b C="d e"',
        "CMD echo $A",
        "EXPOSE 80 8000-8001/udp",
        "WORKDIR x",
        "ONBUILD run echo hi",
        "LABEL a=b",
        'ENTRYPOINT ["/bin/sh"]',
        "USER app",
        "VOLUME /data",
        "STOPSIGNAL SIGINT",
    ]
    fs = compress(layer_tar({"etc/hello": b"hi\n"}), "gzip")
    image_id = import_(env.service, fs, repo="skiffimg/imp", tag="1", message="hello msg", changes=changes)
    doc = run(env.service.inspect("skiffimg/imp:1"))
    assert doc["Id"] == image_id and doc["Comment"] == "hello msg"
    config = doc["Config"]
    assert config["Env"] == ["A=b", "C=d e"]
    assert config["Cmd"] == ["/bin/sh", "-c", "echo $A"]  # CMD before ENTRYPOINT in the same set is kept
    assert config["Entrypoint"] == ["/bin/sh"]
    assert config["ExposedPorts"] == {"80/tcp": {}, "8000/udp": {}, "8001/udp": {}}
    assert config["WorkingDir"] == "/x" and config["User"] == "app"
    assert config["OnBuild"] == ["run echo hi"] and config["Labels"] == {"a": "b"}
    assert config["Volumes"] == {"/data": {}} and config["StopSignal"] == "SIGINT"
    assert doc["Metadata"]["LastTagTime"] != "0001-01-01T00:00:00Z"
    raw = json.loads(env.content.read_bytes(image_id))
    assert list(raw) == sorted(raw)  # dockerd's image JSON has sorted top-level keys
    assert raw["history"][0]["comment"] == "hello msg" and raw["os"] == "linux"
    assert env.events.actions() == ["tag", "import"]
    # The imported layer saves back as the uncompressed tar whose digest is the diff ID.
    members = tar_members(save(env.service, ["skiffimg/imp:1"]))
    diff_id = raw["rootfs"]["diff_ids"][0]
    assert members[f"blobs/sha256/{diff_id[7:]}"] == layer_tar({"etc/hello": b"hi\n"})


def test_import_errors_leave_nothing(env: Env) -> None:
    fs = layer_tar({"a": b"a"})
    with pytest.raises(errdefs.InvalidParameter, match=r"^run is not a valid change command$"):
        import_(env.service, fs, changes=["RUN x"])
    with pytest.raises(errdefs.NotImplemented_, match=r"does not download"):
        import_(env.service, fs, src="http://127.0.0.1:9/x.tar")
    with pytest.raises(errdefs.InvalidParameter, match=r"must be lowercase"):
        import_(env.service, fs, repo="Bad")
    with pytest.raises(errdefs.Internal, match=r"^Error processing tar file"):
        import_(env.service, layer_tar({"../evil": b"x"}))
    with pytest.raises(errdefs.InvalidParameter, match=r"cannot be used on this platform"):
        import_(env.service, fs, platform="windows/amd64")
    assert env.snapshots() == [] and env.blobs() == [] and run(env.service.list_images()) == []
    assert list((env.root / "image" / "tmp").iterdir()) == []


def test_import_platform_and_untagged(env: Env) -> None:
    image_id = import_(env.service, layer_tar({"a": b"a"}), platform="linux/arm64")
    doc = run(env.service.inspect(image_id))
    assert (doc["Architecture"], doc["Os"], doc["RepoTags"]) == ("arm64", "linux", [])
    assert env.events.actions() == ["import"]


def test_pull_references_are_checked_before_any_request(env: Env) -> None:
    # (Pulls themselves are in test_registry_pull.py, against an in-memory registry.)
    with pytest.raises(errdefs.InvalidParameter, match=r"must be lowercase"):
        run(env.service.pull("Busybox"))
    with pytest.raises(errdefs.Forbidden, match=r"'scratch' is a reserved name"):
        run(env.service.pull("scratch", "latest"))


def test_symlinked_and_hardlinked_layers_in_archive(env: Env) -> None:
    # docker save before 25 deduplicated layers with symlinks (<v1id>/layer.tar -> ../<other>/layer.tar).
    a = image(["skiffimg/a:1"], L1)
    b = image(["skiffimg/b:1"], L1, L2)
    members = tar_members(docker_archive([a, b], legacy_paths=True))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("linked/layer.tar")
        link.type, link.linkname = tarfile.SYMTYPE, f"../{sha(L1)[7:]}/layer.tar"
        tar.addfile(link)
        hard = tarfile.TarInfo("hard.tar")
        hard.type, hard.linkname = tarfile.LNKTYPE, f"{sha(L2)[7:]}/layer.tar"
        tar.addfile(hard)
        manifest = json.loads(members["manifest.json"])
        manifest[1]["Layers"] = ["linked/layer.tar", "hard.tar"]
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    messages = load(env.service, buf.getvalue())
    assert messages == [
        {"stream": "Loaded image: skiffimg/a:1\n"},
        {"stream": "Loaded image: skiffimg/b:1\n"},
    ]
    escaping = docker_archive([], docker=False, extra={"manifest.json": b"[]"})
    members = tar_members(escaping)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"[]"))
    (error,) = load(env.service, buf.getvalue())
    assert "escapes the archive" in error["error"]


def test_load_events_carry_labels(env: Env) -> None:
    img = image(["skiffimg/a:1"], L1, config={"Labels": {"team": "x"}})
    load(env.service, docker_archive([img]))
    assert env.events.events == [("image", "load", img.id, {"team": "x", "name": img.id})]


def test_import_compressions(env: Env) -> None:
    fs = layer_tar({"a": b"a"})
    for data in (compress(fs, "gzip"), compress(fs, "zstd"), bz2.compress(fs), lzma.compress(fs)):
        image_id = import_(env.service, data)
        (diff_id,) = run(env.service.resolve(image_id)).diff_ids
        assert diff_id == sha(fs)
    with pytest.raises(errdefs.Internal, match=r"^Error processing tar file"):
        import_(env.service, lzma.compress(fs)[:20])
    assert list((env.root / "image" / "tmp").iterdir()) == []
