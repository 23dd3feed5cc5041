"""docker-py (high-level DockerClient and low-level APIClient) against the image and system endpoints.

The assertions are docker-py's own expectations (which exception class, which keys), checked
against the reference dockerd.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import docker
import pytest


def saved_manifest(data: bytes) -> list[dict[str, Any]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        result: list[dict[str, Any]] = json.load(member)
        return result


def version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def test_ping_version_info(dockerpy, daemon):
    assert dockerpy.ping() is True
    version = dockerpy.version()
    assert version["ApiVersion"] == daemon.api_version
    assert version["Os"] == "linux"
    assert version["MinAPIVersion"] == daemon.min_api_version
    assert dockerpy.api.api_version == daemon.api_version
    info = dockerpy.info()
    assert info["Swarm"]["LocalNodeState"] == "inactive"
    assert info["OSType"] == "linux"


def test_pinned_old_api_version(daemon):
    # docker-py's own integration suite runs pinned to 1.41.
    client = docker.DockerClient(base_url=daemon.host, version="1.41", timeout=60)
    try:
        assert client.ping() is True
        assert client.version()["ApiVersion"] == daemon.api_version
        assert isinstance(client.images.list(filters={"label": "org.skiff.never=set"}), list)
    finally:
        client.close()


def test_load_returns_images(dockerpy, images):
    built = images.build(tags=[f"{images.repo()}:a", f"{images.repo()}:b"])
    loaded = dockerpy.images.load(built.path.read_bytes())
    assert [img.id for img in loaded] == [built.id, built.id] or [img.id for img in loaded] == [built.id]
    assert sorted(loaded[0].tags) == [f"{images.repo()}:a", f"{images.repo()}:b"]


def test_load_untagged_returns_image_by_id(dockerpy, images):
    built = images.build(tags=[])
    loaded = dockerpy.images.load(built.path.read_bytes())
    assert [img.id for img in loaded] == [built.id]
    assert loaded[0].tags == []


def test_low_level_load_stream(dockerpy, images):
    built = images.build()
    messages = list(dockerpy.api.load_image(built.path.read_bytes(), quiet=True))
    assert {"stream": f"Loaded image: {built.tags[0]}\n"} in messages


def test_get_and_attrs(dockerpy, images):
    built = images.load(labels={"com.example.role": "web"})
    image = dockerpy.images.get(built.tags[0])
    assert image.id == built.id
    assert image.short_id == "sha256:" + built.short_id
    assert image.tags == [built.tags[0]]
    assert image.labels["com.example.role"] == "web"
    assert image.attrs["Config"]["Cmd"] == ["sh"]
    assert image.attrs["RootFS"]["Type"] == "layers"
    assert image.attrs["Created"] == "2023-11-14T22:13:20Z"
    assert isinstance(image.attrs["Size"], int)
    assert dockerpy.images.get(built.id).id == built.id
    assert dockerpy.images.get(built.short_id).id == built.id


def test_get_missing_raises_image_not_found(dockerpy, daemon):
    with pytest.raises(docker.errors.ImageNotFound) as exc:
        dockerpy.images.get("nope")
    assert exc.value.status_code == 404
    if daemon.is_docker:
        assert exc.value.explanation == "no such image: nope: No such image: nope:latest"
    else:
        assert exc.value.explanation == "No such image: nope:latest"


def test_list_filters(dockerpy, images):
    tag = f"{images.repo()}:latest"
    old = images.load(tags=[tag], labels={"com.example.role": "old"})
    new = images.load(tags=[tag], labels={"com.example.role": "new"})
    case = {"label": f"org.skiff.test.case={images.case}"}

    def ids(**kwargs: Any) -> list[str]:
        return sorted(img.id for img in dockerpy.images.list(**kwargs))

    assert ids(name=images.repo()) == [new.id]
    assert ids(filters={**case, "dangling": True}) == [old.id]
    assert ids(filters={**case, "dangling": False}) == [new.id]
    assert ids(filters={"label": [f"org.skiff.test.case={images.case}", "com.example.role=old"]}) == [old.id]
    assert ids(all=True, filters=case) == sorted([old.id, new.id])
    assert ids(filters={"reference": f"{images.repo()}:*"}) == [new.id]


def test_low_level_images_list_shape(dockerpy, daemon, images):
    built = images.load()
    rows = dockerpy.api.images(name=images.repo())
    assert len(rows) == 1
    row = rows[0]
    assert {
        "Id",
        "ParentId",
        "RepoTags",
        "RepoDigests",
        "Created",
        "Size",
        "SharedSize",
        "Labels",
        "Containers",
    } <= set(row)
    assert row["Id"] == built.id
    assert row["ParentId"] == ""
    assert row["RepoTags"] == [built.tags[0]]
    # API >= 1.43 turns a nil list into []; before that dockerd sent null.
    assert row["RepoDigests"] == ([] if version_tuple(daemon.api_version) >= (1, 43) else None)
    assert row["Created"] == built.epoch
    assert row["SharedSize"] == -1
    assert row["Containers"] == -1
    assert isinstance(row["Size"], int) and row["Size"] > 1_900_000
    assert dockerpy.api.images(name=images.repo(), quiet=True) == [built.id]


def test_tag(dockerpy, images):
    built = images.load()
    image = dockerpy.images.get(built.id)
    assert image.tag(images.repo("other"), "v1") is True
    image.reload()
    assert sorted(image.tags) == sorted([built.tags[0], f"{images.repo('other')}:v1"])
    with pytest.raises(docker.errors.ImageNotFound):
        dockerpy.api.tag("nope", images.repo("x"), "y")


def test_save_single_and_named(dockerpy, images):
    built = images.load(tags=[f"{images.repo()}:a"])
    image = dockerpy.images.get(built.id)
    data = b"".join(image.save(named=True))
    manifest = saved_manifest(data)
    assert manifest[0]["RepoTags"] == [f"{images.repo()}:a"]
    data = b"".join(dockerpy.api.get_image(built.tags[0]))
    assert saved_manifest(data)[0]["RepoTags"] == [f"{images.repo()}:a"]


def test_save_by_id_has_no_tags(dockerpy, images):
    built = images.load()
    data = b"".join(dockerpy.api.get_image(built.id))
    manifest = saved_manifest(data)
    assert manifest[0]["RepoTags"] in (None, [])


def test_save_remove_load_round_trip(dockerpy, images):
    built = images.load()
    data = b"".join(dockerpy.images.get(built.tags[0]).save(named=True))
    dockerpy.images.remove(built.tags[0])
    with pytest.raises(docker.errors.ImageNotFound):
        dockerpy.images.get(built.id)
    loaded = dockerpy.images.load(data)
    assert [img.id for img in loaded] == [built.id]
    assert dockerpy.images.get(built.tags[0]).id == built.id


def test_remove(dockerpy, images):
    built = images.load(tags=[f"{images.repo()}:a", f"{images.repo()}:b"])
    result = dockerpy.api.remove_image(f"{images.repo()}:a")
    assert result == [{"Untagged": f"{images.repo()}:a"}]
    result = dockerpy.api.remove_image(f"{images.repo()}:b")
    assert result[0] == {"Untagged": f"{images.repo()}:b"}
    assert result[1] == {"Deleted": built.id}


def test_remove_conflict_and_force(dockerpy, images):
    one = images.load(tags=[f"{images.repo()}:a", f"{images.repo()}:b"])
    with pytest.raises(docker.errors.APIError) as exc:
        dockerpy.images.remove(one.id)
    assert exc.value.status_code == 409
    assert exc.value.explanation == (
        f"conflict: unable to delete {one.short_id} (must be forced)"
        " - image is referenced in multiple repositories"
    )
    result = dockerpy.api.remove_image(one.id, force=True)
    assert sorted(result[:2], key=lambda r: r["Untagged"]) == [
        {"Untagged": f"{images.repo()}:a"},
        {"Untagged": f"{images.repo()}:b"},
    ]
    assert result[2] == {"Deleted": one.id}


def test_remove_missing(dockerpy):
    with pytest.raises(docker.errors.ImageNotFound) as exc:
        dockerpy.images.remove("nope")
    assert exc.value.status_code == 404
    assert exc.value.explanation == "No such image: nope:latest"


def test_history(dockerpy, images):
    built = images.load()
    history = dockerpy.images.get(built.id).history()
    assert len(history) == 2
    top, base = history
    assert {"Id", "Created", "CreatedBy", "Tags", "Size", "Comment"} <= set(top)
    assert top["Id"] == built.id
    assert top["Tags"] == [built.tags[0]]
    assert top["CreatedBy"] == '/bin/sh -c #(nop)  CMD ["sh"]'
    assert top["Size"] == 0
    assert top["Created"] == built.epoch
    assert base["Id"] == "<missing>"
    assert base["Tags"] is None
    assert base["CreatedBy"] == "/bin/sh -c #(nop) ADD file:busybox-rootfs in / "
    assert base["Size"] > 1_900_000


def test_prune(dockerpy, images):
    tag = f"{images.repo()}:latest"
    old = images.load(tags=[tag])
    new = images.load(tags=[tag])
    case = {"label": f"org.skiff.test.case={images.case}"}
    report = dockerpy.images.prune(filters=case)
    assert report == {"ImagesDeleted": [{"Deleted": old.id}], "SpaceReclaimed": 0}
    report = dockerpy.images.prune(filters={**case, "dangling": False})
    assert report["ImagesDeleted"][0] == {"Untagged": tag}
    assert {"Deleted": new.id} in report["ImagesDeleted"]
    assert isinstance(report["SpaceReclaimed"], int)
    assert dockerpy.images.prune(filters=case) == {"ImagesDeleted": None, "SpaceReclaimed": 0}


def test_prune_bad_filter(dockerpy):
    with pytest.raises(docker.errors.APIError) as exc:
        dockerpy.images.prune(filters={"nope": "x"})
    assert exc.value.status_code == 400
    assert exc.value.explanation.lower() == "invalid filter 'nope'"


def test_import_image(dockerpy, images, rootfs_tar):
    repo = images.repo()
    out = dockerpy.api.import_image(
        src=rootfs_tar.read_bytes(),
        repository=repo,
        tag="v1",
        changes=["ENV A=b", 'CMD ["echo","hi"]', f"LABEL org.skiff.test.case={images.case}"],
    )
    status = json.loads(out.splitlines()[-1] if isinstance(out, str) else out.decode().splitlines()[-1])
    image_id = status["status"]
    images.track(image_id)
    image = dockerpy.images.get(f"{repo}:v1")
    assert image.id == image_id
    assert image.attrs["Config"]["Env"] == ["A=b"]
    assert image.attrs["Config"]["Cmd"] == ["echo", "hi"]


def test_import_from_file(dockerpy, images, rootfs_tar):
    repo = images.repo()
    out = dockerpy.api.import_image_from_file(str(rootfs_tar), repository=repo, tag="f")
    text = out if isinstance(out, str) else out.decode()
    image_id = json.loads(text.splitlines()[-1])["status"]
    images.track(image_id)
    assert dockerpy.images.get(f"{repo}:f").attrs["Comment"] == "Imported from -"
