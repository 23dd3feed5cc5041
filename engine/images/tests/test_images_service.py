"""ImageService list/inspect/history/tag/rmi/prune/resolve with dockerd's answers, on real storage."""

from __future__ import annotations

import pytest

from engine import errdefs

from .conftest import Env, load, run
from .imagetars import ArchiveImage, docker_archive, layer_tar, sha

L1 = layer_tar({"hello.txt": b"hello\n"})
L2 = layer_tar({"b.txt": b"bbb\n"})
L3 = layer_tar({"c.txt": b"ccc\n"})

INSPECT_KEYS = [
    "Id", "RepoTags", "RepoDigests", "Parent", "Comment", "Created", "Container", "ContainerConfig",
    "DockerVersion", "Author", "Config", "Architecture", "Os", "Size", "GraphDriver", "RootFS", "Metadata",
]  # fmt: skip
CONFIG_KEYS = [
    "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin",
    "StdinOnce", "Env", "Cmd", "Image", "Volumes", "WorkingDir", "Entrypoint", "OnBuild", "Labels",
]  # fmt: skip


def add(
    env: Env,
    tags: list[str],
    *layers: bytes,
    created: str = "2024-01-02T03:04:05.123456789Z",
    **extra: object,
) -> str:
    img = ArchiveImage(tags, list(layers or (L1, L2)), {"created": created, **extra})
    load(env.service, docker_archive([img]))
    return img.id


def test_list_shape_and_order(env: Env) -> None:
    old = add(env, ["skiffimg/old:1"], L1, created="2020-01-01T00:00:00Z")
    new = add(env, ["skiffimg/new:1", "skiffimg/new:2"], L1, L2, created="2024-01-01T00:00:00Z",
              config={"Labels": {"a": "1"}})  # fmt: skip
    rows = run(env.service.list_images())
    assert [r["Id"] for r in rows] == [new, old]
    assert rows[0] == {
        "Containers": -1,
        "Created": 1704067200,
        "Id": new,
        "Labels": {"a": "1"},
        "ParentId": "",
        "RepoDigests": [],
        "RepoTags": ["skiffimg/new:1", "skiffimg/new:2"],
        "SharedSize": -1,
        "Size": len(b"hello\n") + len(b"bbb\n"),
    }
    assert rows[1]["Labels"] is None
    shared = run(env.service.list_images(shared_size=True))
    assert [r["SharedSize"] for r in shared] == [6, 6]
    # system df's LayersSize: the shared layer once
    assert run(env.service.layers_size()) == len(b"hello\n") + len(b"bbb\n")


def test_list_filters(env: Env) -> None:
    a = add(
        env, ["skiffimg/a:1", "other/a:1"], L1, created="2020-01-01T00:00:00Z", config={"Labels": {"k": "v"}}
    )
    b = add(env, ["skiffimg/b:1", "solo:1"], L1, L2, created="2022-01-01T00:00:00Z")
    c = add(env, [], L1, L3, created="2024-01-01T00:00:00Z")

    def ids(**filters: list[str]) -> list[str]:
        return [r["Id"] for r in run(env.service.list_images(filters))]

    assert ids(dangling=["true"]) == [c]
    assert ids(dangling=["false"]) == [b, a]
    assert ids(reference=["skiffimg/*"]) == [b, a]
    rows = run(env.service.list_images({"reference": ["other/*"]}))
    assert [r["RepoTags"] for r in rows] == [["other/a:1"]]  # only the matching references are listed
    assert ids(reference=["*:1"]) == [b]  # * does not cross "/"
    assert run(env.service.list_images({"reference": ["*:1"]}))[0]["RepoTags"] == ["solo:1"]
    assert ids(label=["k"]) == [a] and ids(label=["k=v"]) == [a] and ids(label=["k=w"]) == []
    assert ids(before=["skiffimg/b:1"]) == [a]
    assert ids(since=["skiffimg/a:1"]) == [c, b]
    assert ids(until=["2021-01-01T00:00:00Z"]) == [a]
    with pytest.raises(errdefs.InvalidParameter, match=r"^invalid filter 'bogus'$"):
        ids(bogus=["1"])
    with pytest.raises(errdefs.InvalidParameter, match=r"^invalid filter 'dangling=\[1\]'$"):
        ids(dangling=["1"])
    with pytest.raises(errdefs.NotFound, match=r"^No such image: nonexist:latest$"):
        ids(before=["nonexist"])
    with pytest.raises(errdefs.Internal, match=r"^syntax error in pattern$"):
        ids(reference=["["])


def test_inspect_shape(env: Env) -> None:
    image_id = add(env, ["skiffimg/a:v1"], L1, L2, variant="v8", author="me", comment="c")
    doc = run(env.service.inspect("skiffimg/a:v1"))
    assert list(doc) == [*INSPECT_KEYS[:12], "Variant", *INSPECT_KEYS[12:]]
    assert list(doc["Config"]) == CONFIG_KEYS
    assert list(doc["ContainerConfig"]) == CONFIG_KEYS
    assert doc["Id"] == image_id and doc["Created"] == "2024-01-02T03:04:05.123456789Z"
    assert (doc["Author"], doc["Comment"], doc["Variant"]) == ("me", "c", "v8")
    assert doc["Size"] == 10 and doc["RepoDigests"] == []
    assert doc["GraphDriver"]["Name"] == "overlay2"
    assert set(doc["GraphDriver"]["Data"]) == {"LowerDir", "MergedDir", "UpperDir", "WorkDir"}
    assert doc["Metadata"] == {"LastTagTime": "0001-01-01T00:00:00Z"}
    no_variant = run(env.service.inspect(add(env, ["skiffimg/b:1"], L1)))
    assert "Variant" not in no_variant and "LowerDir" not in no_variant["GraphDriver"]["Data"]


def test_resolve_forms(env: Env) -> None:
    image_id = add(env, ["skiffimg/a:latest"])
    for ref in (
        image_id,
        image_id[7:],
        image_id[7:19],
        image_id[:19],
        "skiffimg/a",
        "docker.io/skiffimg/a:latest",
    ):
        assert run(env.service.resolve(ref)).id == image_id, ref
    cases = {
        "nonexist": (errdefs.NotFound, "No such image: nonexist:latest"),
        "sha256:" + "0" * 64: (errdefs.NotFound, "No such image: sha256:" + "0" * 64),
        "sha256:abc": (errdefs.NotFound, "No such image: sha256:abc"),
        "Bad": (
            errdefs.InvalidParameter,
            "invalid reference format: repository name (library/Bad) must be lowercase",
        ),
        "x@sha256:abc": (errdefs.InvalidParameter, "invalid reference format"),
    }
    for ref, (kind, message) in cases.items():
        with pytest.raises(kind) as err:
            run(env.service.resolve(ref))
        assert err.value.message == message


def test_history(env: Env) -> None:
    history = [
        {"created": "2024-01-01T00:00:00Z", "created_by": "ADD a", "comment": "first"},
        {"created": "2024-01-02T00:00:00Z", "created_by": "ENV x=y", "empty_layer": True},
        {"created": "2024-01-03T00:00:00Z", "created_by": "ADD b"},
    ]
    image_id = add(env, ["skiffimg/h:1"], L1, L2, history=history)
    rows = run(env.service.history("skiffimg/h:1"))
    assert rows == [
        {"Id": image_id, "Created": 1704240000, "CreatedBy": "ADD b", "Tags": ["skiffimg/h:1"], "Size": 4,
         "Comment": ""},
        {"Id": "<missing>", "Created": 1704153600, "CreatedBy": "ENV x=y", "Tags": None, "Size": 0,
         "Comment": ""},
        {"Id": "<missing>", "Created": 1704067200, "CreatedBy": "ADD a", "Tags": None, "Size": 6,
         "Comment": "first"},
    ]  # fmt: skip


def test_tag(env: Env) -> None:
    image_id = add(env, ["skiffimg/a:v1"])
    env.events.events.clear()
    assert run(env.service.tag("skiffimg/a:v1", "skiffimg/t", "x"))
    assert run(env.service.tag(image_id[7:19], "localhost:5000/t", ""))
    assert run(env.service.inspect("skiffimg/t:x"))["RepoTags"] == [
        "skiffimg/a:v1", "skiffimg/t:x", "localhost:5000/t:latest"
    ]  # fmt: skip
    assert run(env.service.inspect(image_id))["Metadata"]["LastTagTime"] != "0001-01-01T00:00:00Z"
    assert [(a, attrs["name"]) for _, a, _, attrs in env.events.events] == [
        ("tag", "skiffimg/t:x"),
        ("tag", "localhost:5000/t:latest"),
    ]
    assert not run(env.service.tag("skiffimg/a:v1", "", "x"))
    with pytest.raises(errdefs.InvalidParameter, match=r"^refusing to create an ambiguous tag"):
        run(env.service.tag("skiffimg/a:v1", "sha256", "abc"))
    with pytest.raises(errdefs.InvalidParameter, match=r"^invalid tag format$"):
        run(env.service.tag("skiffimg/a:v1", "ok", "b@d"))
    with pytest.raises(errdefs.NotFound, match=r"^No such image: nonexist:latest$"):
        run(env.service.tag("nonexist", "ok", "x"))
    with pytest.raises(errdefs.NotFound, match=r"must be lowercase"):
        run(env.service.tag("Bad", "ok", "x"))


def test_rmi_untag_then_delete_with_layers(env: Env) -> None:
    image_id = add(env, ["skiffimg/a:v1", "skiffimg/c:latest"])
    keep = add(env, ["skiffimg/keep:1"], L1)  # shares the bottom layer
    env.events.events.clear()
    assert run(env.service.delete("skiffimg/a:v1")) == [{"Untagged": "skiffimg/a:v1"}]
    top_chain = run(env.service.resolve(image_id)).chain_ids[-1]
    assert run(env.service.delete("skiffimg/c")) == [
        {"Untagged": "skiffimg/c:latest"},
        {"Deleted": image_id},
        {"Deleted": top_chain},
    ]
    assert env.snapshots() == [sha(L1)]
    assert [a for _, a, _, _ in env.events.events] == ["untag", "untag", "delete"]
    assert run(env.service.resolve("skiffimg/keep:1")).id == keep
    assert run(env.service.delete(keep[7:19])) == [
        {"Untagged": "skiffimg/keep:1"},
        {"Deleted": keep},
        {"Deleted": sha(L1)},
    ]
    assert env.snapshots() == [] and env.blobs() == []


def test_rmi_conflicts(env: Env) -> None:
    image_id = add(env, ["skiffimg/a:v1", "skiffimg/b:v1"])
    short = image_id[7:19]
    with pytest.raises(errdefs.Conflict) as err:
        run(env.service.delete(short))
    assert err.value.message == (
        f"conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"
    )
    run(env.service.delete("skiffimg/b:v1"))
    env.usage[image_id] = [("c" * 64, False)]
    with pytest.raises(errdefs.Conflict) as err:
        run(env.service.delete("skiffimg/a:v1"))
    assert err.value.message == (
        f'conflict: unable to remove repository reference "skiffimg/a:v1" (must force) - container '
        f"{'c' * 12} is using its referenced image {short}"
    )
    with pytest.raises(errdefs.Conflict) as err:
        run(env.service.delete(short))
    assert err.value.message == (
        f"conflict: unable to delete {short} (must be forced) - "
        f"image is being used by stopped container {'c' * 12}"
    )
    env.usage[image_id] = [("d" * 64, True)]
    with pytest.raises(errdefs.Conflict) as err:
        run(env.service.delete(short, force=True))
    assert err.value.message == (
        f"conflict: unable to delete {short} (cannot be forced) - image is being used by running container "
        f"{'d' * 12}"
    )
    # Forcing the name of a running image only untags it.
    assert run(env.service.delete("skiffimg/a:v1", force=True)) == [{"Untagged": "skiffimg/a:v1"}]
    assert run(env.service.resolve(short)).id == image_id
    with pytest.raises(errdefs.NotFound, match=r"^No such image: nonexist:latest$"):
        run(env.service.delete("nonexist"))
    with pytest.raises(errdefs.InvalidParameter, match=r"^image name cannot be blank$"):
        run(env.service.delete(" "))


def test_rmi_forced_with_stopped_container_keeps_layer_for_it(env: Env) -> None:
    image_id = add(env, ["skiffimg/a:v1"], L1)
    image = run(env.service.resolve(image_id))
    env.layers.prepare_rw("ctr", env.service.top_chain_id(image))
    env.usage[image_id] = [("c" * 64, False)]
    records = run(env.service.delete(image_id[7:], force=True))
    assert records == [{"Untagged": "skiffimg/a:v1"}, {"Deleted": image_id}]
    assert sha(L1) in env.snapshots()  # the container still builds on it
    env.layers.remove_rw("ctr")
    assert run(env.service.collect_garbage()) == [sha(L1)]
    assert env.snapshots() == []


def test_prune(env: Env) -> None:
    add(env, ["skiffimg/a:v1"], L1, L2)
    dangling = add(env, [], L1, L3, created="2020-01-01T00:00:00Z")
    labelled = add(env, ["skiffimg/l:1"], L2, config={"Labels": {"keep": "yes"}})
    env.events.events.clear()
    report = run(env.service.prune())
    chain = run(env.service.resolve(add(env, [], L1, L3, created="2020-01-01T00:00:00Z"))).chain_ids[-1]
    assert report == {"ImagesDeleted": [{"Deleted": dangling}, {"Deleted": chain}], "SpaceReclaimed": 4}
    assert env.events.events[-2][1:3] == ("prune", "")
    run(env.service.delete(dangling[7:]))
    assert run(env.service.prune()) == {"ImagesDeleted": None, "SpaceReclaimed": 0}
    report = run(env.service.prune({"dangling": ["false"], "label!": ["keep=yes"]}))
    assert report["ImagesDeleted"][0] == {"Untagged": "skiffimg/a:v1"}
    assert [r["Id"] for r in run(env.service.list_images())] == [labelled]
    report = run(env.service.prune({"dangling": ["false"], "until": ["2000-01-01T00:00:00Z"]}))
    assert report["ImagesDeleted"] is None
    with pytest.raises(errdefs.InvalidParameter, match=r"^invalid filter 'reference'$"):
        run(env.service.prune({"reference": ["x"]}))
    with pytest.raises(errdefs.InvalidParameter, match=r"^invalid filter 'dangling=\[maybe\]'$"):
        run(env.service.prune({"dangling": ["maybe"]}))
    with pytest.raises(errdefs.Internal, match=r"^more than one until filter specified$"):
        run(env.service.prune({"until": ["1h", "2h"]}))


def test_state_survives_reopen(env: Env) -> None:
    image_id = add(env, ["skiffimg/a:v1"])
    run(env.service.tag("skiffimg/a:v1", "skiffimg/b", "2"))
    service = env.reopen()
    assert run(service.inspect("skiffimg/b:2"))["Id"] == image_id
    assert service.count() == 1
