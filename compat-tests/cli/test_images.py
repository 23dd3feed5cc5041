"""The docker CLI's image and system commands, asserting the exact output dockerd gives.

Every expectation was checked against the reference dockerd (SKIFF_TEST_DOCKER_HOST=...); where
dockerd 20.10 words an error differently from dockerd 28 (which skiff follows), the test branches
on `daemon.is_docker`.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import ok

NO_SUCH = "Error response from daemon: No such image: nope:latest\n"
TABLE_HEADER = re.compile(r"^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE$")
HEX64 = re.compile(r"^sha256:[0-9a-f]{64}$")


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def saved_manifest(path: Path) -> tuple[list[dict[str, Any]], set[str]]:
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        return json.load(member), set(tar.getnames())


def inspect(docker: Any, ref: str) -> dict[str, Any]:
    data = json.loads(ok(docker("image", "inspect", ref)))
    assert isinstance(data, list) and len(data) == 1
    result: dict[str, Any] = data[0]
    return result


# --- version / info -------------------------------------------------------------------------------


def test_version_reports_linux_server(docker, daemon):
    info = json.loads(ok(docker("version", "--format", "{{json .}}")))
    server = info["Server"]
    assert server["Os"] == "linux"
    assert server["ApiVersion"] == daemon.api_version
    assert server["MinAPIVersion"] == daemon.min_api_version
    assert server["Components"][0]["Name"] == "Engine"
    assert ok(docker("version", "--format", "{{.Server.Os}}/{{.Server.Arch}}")).strip() in (
        "linux/amd64",
        "linux/arm64",
    )


def test_version_plain_has_server_section(docker):
    out = ok(docker("version"))
    assert "Client:" in out
    assert re.search(r"^Server:", out, re.M)
    assert re.search(r"^ Engine:\n  Version:\s+\S+", out, re.M)


def test_info_swarm_inactive(docker):
    assert ok(docker("info", "--format", "{{.Swarm.LocalNodeState}}")) == "inactive\n"
    info = json.loads(ok(docker("info", "--format", "{{json .}}")))
    assert info["OSType"] == "linux"
    assert info["Swarm"]["ControlAvailable"] is False
    assert isinstance(info["Images"], int)
    assert info["IndexServerAddress"] == "https://index.docker.io/v1/"
    out = ok(docker("info"))
    assert " Swarm: inactive\n" in out
    assert " OSType: linux\n" in out


# --- load -----------------------------------------------------------------------------------------


def test_load_from_file(docker, images):
    image = images.build(tags=[f"{images.repo()}:v1", f"{images.repo()}:v2"])
    res = docker("load", "-i", image.path)
    assert ok(res) == f"Loaded image: {images.repo()}:v1\nLoaded image: {images.repo()}:v2\n"
    assert inspect(docker, f"{images.repo()}:v1")["Id"] == image.id


def test_load_from_stdin_quiet(docker, images):
    image = images.build()
    res = docker("load", "-q", input=image.path.read_bytes())
    assert ok(res) == f"Loaded image: {image.tags[0]}\n"
    assert res.stderr == ""
    assert inspect(docker, image.tags[0])["Id"] == image.id


def test_load_twice_is_idempotent(docker, images):
    image = images.load()
    assert ok(docker("load", "-i", image.path)) == f"Loaded image: {image.tags[0]}\n"
    assert ok(docker("images", "-q", "--no-trunc", "--filter", images.case_filter)).split() == [image.id]


def test_load_moves_tag_and_leaves_old_image_dangling(docker, images):
    tag = f"{images.repo()}:latest"
    old = images.load(tags=[tag])
    new = images.build(tags=[tag])
    out = ok(docker("load", "-i", new.path))
    assert out == (
        f"The image {tag} already exists, renaming the old one with ID {old.id} to empty string\n"
        f"Loaded image: {tag}\n"
    )
    assert inspect(docker, tag)["Id"] == new.id
    old_inspect = inspect(docker, old.id)
    assert old_inspect["RepoTags"] == []
    dangling = ok(
        docker("images", "-q", "--no-trunc", "--filter", "dangling=true", "--filter", images.case_filter)
    )
    assert dangling.split() == [old.id]


def test_load_untagged_image(docker, images):
    image = images.build(tags=[])
    assert ok(docker("load", "-i", image.path)) == f"Loaded image ID: {image.id}\n"
    assert inspect(docker, image.id)["RepoTags"] == []


def test_load_garbage_fails(docker, tmp_path):
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar archive\n" * 10)
    res = docker("load", "-i", garbage)
    assert res.rc == 1
    assert res.stderr.startswith("Error")
    assert res.stdout == ""


# --- images ---------------------------------------------------------------------------------------


def test_images_table(docker, images):
    image = images.load()
    out = ok(docker("images", "--filter", f"reference={images.repo()}"))
    header, *rows = lines(out)
    assert TABLE_HEADER.match(header), header
    assert len(rows) == 1
    repo, tag, short_id, *created, size = rows[0].split()
    assert (repo, tag, short_id) == (images.repo(), "latest", image.short_id)
    assert " ".join(created).endswith("ago")
    assert size == "1.98MB"


def test_images_positional_reference(docker, images):
    image = images.load(tags=[f"{images.repo()}:a", f"{images.repo('other')}:b"])
    out = ok(docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", images.repo()))
    assert out == f"{images.repo()}:a {image.short_id}\n"


def test_images_quiet_and_no_trunc(docker, images):
    image = images.load()
    assert ok(docker("images", "-q", images.repo())) == f"{image.short_id}\n"
    assert ok(docker("images", "-q", "--no-trunc", images.repo())) == f"{image.id}\n"


def test_images_digests_column(docker, images):
    images.load()
    out = ok(docker("images", "--digests", images.repo()))
    header, row = lines(out)
    assert re.match(r"^REPOSITORY\s+TAG\s+DIGEST\s+IMAGE ID\s+CREATED\s+SIZE$", header)
    assert row.split()[2] == "<none>"


def test_images_format_fields(docker, images):
    image = images.load(labels={"com.example.role": "web"})
    fmt = "{{.Repository}}|{{.Tag}}|{{.ID}}|{{.Size}}|{{.CreatedAt}}|{{.Digest}}"
    out = ok(docker("images", "--format", fmt, images.repo()))
    assert out == f"{images.repo()}|latest|{image.short_id}|1.98MB|2023-11-14 22:13:20 +0000 UTC|<none>\n"
    row = json.loads(ok(docker("images", "--format", "json", images.repo())))
    assert row["ID"] == image.short_id
    assert row["Repository"] == images.repo()


def test_images_filter_label(docker, images):
    web = images.load(tags=[f"{images.repo()}:web"], labels={"com.example.role": "web"})
    db = images.load(tags=[f"{images.repo()}:db"], labels={"com.example.role": "db"})

    def ids(*filters: str) -> list[str]:
        args = [a for f in filters for a in ("--filter", f)]
        return sorted(ok(docker("images", "-q", "--no-trunc", *args, "--filter", images.case_filter)).split())

    assert ids("label=com.example.role") == sorted([web.id, db.id])
    assert ids("label=com.example.role=web") == [web.id]
    assert ids("label=com.example.role=db") == [db.id]
    assert ids("label=com.example.role=none") == []
    assert ids("label=com.example.absent") == []
    # Several label filters must all match.
    assert ids("label=com.example.role=web", "label=com.example.role=db") == []


def test_images_filter_dangling(docker, images):
    tag = f"{images.repo()}:latest"
    old = images.load(tags=[tag])
    new = images.load(tags=[tag])
    fmt = ["--format", "{{.ID}} {{.Repository}}:{{.Tag}}", "--filter", images.case_filter]
    assert ok(docker("images", "--filter", "dangling=true", *fmt)) == f"{old.short_id} <none>:<none>\n"
    assert ok(docker("images", "--filter", "dangling=false", *fmt)) == f"{new.short_id} {tag}\n"
    both = lines(ok(docker("images", *fmt)))
    assert sorted(both) == sorted([f"{old.short_id} <none>:<none>", f"{new.short_id} {tag}"])


def test_images_filter_reference_wildcards(docker, images):
    a = images.load(tags=[f"{images.repo()}:1.0", f"{images.repo()}:2.0"])
    fmt = ["--format", "{{.Repository}}:{{.Tag}}"]
    assert lines(ok(docker("images", *fmt, "--filter", f"reference={images.repo()}:1.*"))) == [
        f"{images.repo()}:1.0"
    ]
    both = ok(docker("images", *fmt, "--filter", f"reference=skifftest-{images.case}-*"))
    assert sorted(lines(both)) == [f"{images.repo()}:1.0", f"{images.repo()}:2.0"]
    assert ok(docker("images", "-q", "--filter", f"reference={images.repo()}:3.0")) == ""
    assert a.id


def test_images_filter_before_since(docker, images):
    old = images.load(tags=[f"{images.repo()}:old"], epoch=1600000000)
    mid = images.load(tags=[f"{images.repo()}:mid"], epoch=1650000000)
    new = images.load(tags=[f"{images.repo()}:new"], epoch=1700000000)

    def ids(flt: str) -> list[str]:
        return sorted(
            ok(docker("images", "-q", "--no-trunc", "--filter", flt, "--filter", images.case_filter)).split()
        )

    assert ids(f"before={images.repo()}:mid") == [old.id]
    assert ids(f"since={images.repo()}:mid") == [new.id]
    assert ids(f"since={old.id}") == sorted([mid.id, new.id])
    assert ids(f"before={new.short_id}") == sorted([old.id, mid.id])


def test_images_created_order_newest_first(docker, images):
    old = images.load(tags=[f"{images.repo()}:old"], epoch=1600000000)
    new = images.load(tags=[f"{images.repo()}:new"], epoch=1700000000)
    out = ok(docker("images", "-q", "--no-trunc", "--filter", images.case_filter))
    assert out.split() == [new.id, old.id]


def test_images_bad_filter(docker, daemon):
    res = docker("images", "--filter", "foo=bar")
    assert res.rc == 1
    word = "Invalid" if daemon.is_docker else "invalid"
    assert res.stderr == f"Error response from daemon: {word} filter 'foo'\n"


def test_images_bad_dangling_value(docker, daemon):
    res = docker("images", "--filter", "dangling=maybe")
    assert res.rc == 1
    word = "Invalid" if daemon.is_docker else "invalid"
    assert res.stderr == f"Error response from daemon: {word} filter 'dangling=[maybe]'\n"


# --- tag ------------------------------------------------------------------------------------------


def test_tag(docker, images):
    image = images.load()
    target = f"{images.repo('tagged')}:v1"
    res = docker("tag", image.tags[0], target)
    assert ok(res) == "" and res.stderr == ""
    assert inspect(docker, target)["Id"] == image.id
    assert sorted(inspect(docker, image.id)["RepoTags"]) == sorted([image.tags[0], target])
    # Tagging again (same target) is fine and changes nothing.
    assert ok(docker("tag", image.id, target)) == ""
    # By short ID, default tag latest.
    assert ok(docker("tag", image.short_id, images.repo("bare"))) == ""
    assert inspect(docker, images.repo("bare"))["Id"] == image.id


def test_tag_moves_existing_tag(docker, images):
    first = images.load(tags=[f"{images.repo()}:a"])
    second = images.load(tags=[f"{images.repo()}:b"])
    assert ok(docker("tag", second.id, f"{images.repo()}:a")) == ""
    assert inspect(docker, f"{images.repo()}:a")["Id"] == second.id
    assert inspect(docker, first.id)["RepoTags"] == []


def test_tag_missing_source(docker, images):
    res = docker("tag", "nope", f"{images.repo()}:x")
    assert (res.rc, res.stdout, res.stderr) == (1, "", NO_SUCH)


def test_tag_invalid_reference(docker, images):
    image = images.load()
    res = docker("tag", image.id, "Bad:Tag")
    assert res.rc == 1
    assert "invalid reference format: repository name (library/Bad) must be lowercase" in res.stderr


# --- save -----------------------------------------------------------------------------------------


def test_save_to_file_and_stdout(docker, images, tmp_path):
    image = images.load()
    out = tmp_path / "out.tar"
    res = docker("save", "-o", out, image.tags[0])
    assert ok(res) == "" and res.stderr == ""
    manifest, names = saved_manifest(out)
    assert len(manifest) == 1
    assert manifest[0]["RepoTags"] == [image.tags[0]]
    assert manifest[0]["Config"] in names
    assert all(layer in names for layer in manifest[0]["Layers"])
    assert len(manifest[0]["Layers"]) == 1
    assert "repositories" in names

    # Without -o the archive goes to stdout (the CLI only refuses a terminal).
    piped = tmp_path / "stdout.tar"
    res = docker("save", image.tags[0], stdout_file=piped)
    assert (res.rc, res.stderr) == (0, "")
    manifest, _ = saved_manifest(piped)
    assert manifest[0]["RepoTags"] == [image.tags[0]]


def test_save_several_images(docker, images, tmp_path):
    a = images.load(tags=[f"{images.repo()}:a"])
    b = images.load(tags=[f"{images.repo()}:b", f"{images.repo()}:c"])
    out = tmp_path / "two.tar"
    ok(docker("save", "-o", out, f"{images.repo()}:a", f"{images.repo()}:b", f"{images.repo()}:c"))
    manifest, names = saved_manifest(out)
    by_tags = {tuple(sorted(item["RepoTags"])): item for item in manifest}
    assert set(by_tags) == {(f"{images.repo()}:a",), (f"{images.repo()}:b", f"{images.repo()}:c")}
    configs = {item["Config"] for item in manifest}
    assert len(configs) == 2
    assert all(c in names for c in configs)
    assert {a.id, b.id} == {"sha256:" + Path(c).name.removesuffix(".json") for c in configs}


def test_save_by_repository_name_includes_all_tags(docker, images, tmp_path):
    images.load(tags=[f"{images.repo()}:a", f"{images.repo()}:b"])
    out = tmp_path / "repo.tar"
    ok(docker("save", "-o", out, images.repo()))
    manifest, _ = saved_manifest(out)
    assert sorted(manifest[0]["RepoTags"]) == [f"{images.repo()}:a", f"{images.repo()}:b"]


def test_save_missing_image(docker, tmp_path):
    res = docker("save", "-o", tmp_path / "x.tar", "nope")
    assert res.rc == 1
    assert res.stderr.startswith("Error response from daemon: No such image: nope")


def test_save_rmi_load_round_trip(docker, images, tmp_path):
    image = images.load(tags=[f"{images.repo()}:a", f"{images.repo()}:b"])
    before = inspect(docker, image.id)
    out = tmp_path / "rt.tar"
    ok(docker("save", "-o", out, f"{images.repo()}:a", f"{images.repo()}:b"))
    ok(docker("rmi", f"{images.repo()}:a", f"{images.repo()}:b"))
    assert docker("image", "inspect", image.id).rc == 1
    loaded = ok(docker("load", "-i", out))
    assert sorted(lines(loaded)) == [f"Loaded image: {images.repo()}:a", f"Loaded image: {images.repo()}:b"]
    after = inspect(docker, image.id)
    for key in ("Id", "Config", "RootFS", "Created", "Size", "Architecture", "Os"):
        assert after[key] == before[key], key
    assert sorted(after["RepoTags"]) == sorted(before["RepoTags"])


# --- import ---------------------------------------------------------------------------------------


def test_import_file_with_tag(docker, images, rootfs_tar):
    ref = f"{images.repo()}:imported"
    out = ok(docker("import", rootfs_tar, ref))
    image_id = out.strip()
    images.track(image_id)
    assert HEX64.match(image_id), out
    data = inspect(docker, ref)
    assert data["Id"] == image_id
    assert data["Comment"] == "Imported from -"
    assert data["RepoTags"] == [ref]
    assert data["RootFS"]["Layers"] == [inspect_layer_of(rootfs_tar)]
    assert data["Size"] == expected_size(rootfs_tar)
    assert data["Os"] == "linux"
    history = ok(docker("history", "--format", "{{.CreatedBy}}|{{.Comment}}", ref))
    assert history == "|Imported from -\n"


def test_import_stdin_with_changes_and_message(docker, images, rootfs_tar):
    ref = f"{images.repo()}:changed"
    res = docker(
        "import",
        "--change",
        'CMD ["/bin/sh","-c","echo hi"]',
        "--change",
        "ENV A=b",
        "--change",
        f"LABEL org.skiff.test.case={images.case}",
        "-m",
        "my msg",
        "-",
        ref,
        input=rootfs_tar.read_bytes(),
    )
    image_id = ok(res).strip()
    images.track(image_id)
    data = inspect(docker, ref)
    assert data["Config"]["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert data["Config"]["Env"] == ["A=b"]
    assert data["Config"]["Labels"] == {"org.skiff.test.case": images.case}
    assert data["Comment"] == "my msg"


def test_import_without_tag_is_dangling(docker, images, rootfs_tar):
    image_id = ok(
        docker("import", "--change", f"LABEL org.skiff.test.case={images.case}", rootfs_tar)
    ).strip()
    images.track(image_id)
    assert inspect(docker, image_id)["RepoTags"] == []
    dangling = ok(
        docker("images", "-q", "--no-trunc", "--filter", "dangling=true", "--filter", images.case_filter)
    )
    assert dangling.split() == [image_id]


def test_import_bad_change(docker, rootfs_tar):
    res = docker("import", "--change", "BOGUS x", rootfs_tar)
    assert res.rc == 1
    assert res.stderr == "Error response from daemon: bogus is not a valid change command\n"


def test_import_garbage(docker, images, tmp_path):
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar\n" * 3)
    # The label lets cleanup find the image should a daemon accept this.
    res = docker("import", "--change", f"LABEL org.skiff.test.case={images.case}", garbage)
    assert res.rc == 1
    assert res.stderr.startswith("Error response from daemon: ")


def inspect_layer_of(layer_tar: Path) -> str:
    return "sha256:" + hashlib.sha256(layer_tar.read_bytes()).hexdigest()


def expected_size(layer_tar: Path) -> int:
    """dockerd's image Size: bytes of every non-directory entry (symlinks count their target length)."""
    total = 0
    with tarfile.open(layer_tar) as tar:
        for member in tar.getmembers():
            if member.isfile():
                total += member.size
            elif member.issym():
                total += len(member.linkname)
    return total


# --- rmi ------------------------------------------------------------------------------------------


def test_rmi_untag_then_delete(docker, images):
    image = images.load(tags=[f"{images.repo()}:a", f"{images.repo()}:b"])
    assert ok(docker("rmi", f"{images.repo()}:a")) == f"Untagged: {images.repo()}:a\n"
    out = ok(docker("rmi", f"{images.repo()}:b"))
    assert lines(out)[:2] == [f"Untagged: {images.repo()}:b", f"Deleted: {image.id}"]
    assert all(line.startswith("Deleted: sha256:") for line in lines(out)[1:])
    assert docker("image", "inspect", image.id).rc == 1


def test_rmi_by_id_with_several_tags_conflicts(docker, images):
    image = images.load(tags=[f"{images.repo()}:a", f"{images.repo()}:b"])
    res = docker("rmi", image.id)
    assert res.rc == 1
    assert res.stderr == (
        f"Error response from daemon: conflict: unable to delete {image.short_id} (must be forced)"
        " - image is referenced in multiple repositories\n"
    )
    res = docker("rmi", image.short_id)
    assert res.rc == 1 and "image is referenced in multiple repositories" in res.stderr


def test_rmi_force_by_id(docker, images):
    image = images.load(tags=[f"{images.repo()}:a", f"{images.repo()}:b"])
    out = ok(docker("rmi", "-f", image.id))
    assert lines(out)[:3] == [
        f"Untagged: {images.repo()}:a",
        f"Untagged: {images.repo()}:b",
        f"Deleted: {image.id}",
    ]


def test_rmi_single_tag_by_id_deletes(docker, images):
    image = images.load()
    out = ok(docker("rmi", image.short_id))
    assert lines(out)[:2] == [f"Untagged: {image.tags[0]}", f"Deleted: {image.id}"]


def test_rmi_missing(docker):
    res = docker("rmi", "nope")
    assert (res.rc, res.stdout, res.stderr) == (1, "", NO_SUCH)


def test_rmi_several_with_one_missing(docker, images):
    image = images.load()
    res = docker("rmi", image.tags[0], "nope")
    assert res.rc == 1
    assert lines(res.stdout)[:2] == [f"Untagged: {image.tags[0]}", f"Deleted: {image.id}"]
    assert res.stderr == NO_SUCH


# --- history --------------------------------------------------------------------------------------


def test_history_table(docker, images):
    image = images.load()
    out = ok(docker("history", image.tags[0]))
    header, top, base = lines(out)
    assert re.match(r"^IMAGE\s+CREATED\s+CREATED BY\s+SIZE\s+COMMENT$", header)
    assert top.startswith(f"{image.short_id}   ")
    assert '/bin/sh -c #(nop)  CMD ["sh"]' in top
    assert re.search(r"\s0B\s*$", top)
    assert base.startswith("<missing>   ")
    assert "1.98MB" in base
    assert "…" in base  # CREATED BY is truncated to 45 characters


def test_history_no_trunc_and_format(docker, images):
    image = images.load()
    out = ok(docker("history", "--no-trunc", image.tags[0]))
    assert lines(out)[1].startswith(f"{image.id}   ")
    assert "/bin/sh -c #(nop) ADD file:busybox-rootfs in / " in out
    fmt = "{{.ID}}|{{.CreatedBy}}|{{.Size}}|{{.Comment}}"
    out = ok(docker("history", "--no-trunc", "--format", fmt, image.tags[0]))
    assert out == (
        f'{image.id}|/bin/sh -c #(nop)  CMD ["sh"]|0B|\n'
        "<missing>|/bin/sh -c #(nop) ADD file:busybox-rootfs in / |1.98MB|\n"
    )
    assert ok(docker("history", "-q", image.tags[0])) == f"{image.short_id}\n<missing>\n"


def test_history_missing(docker):
    res = docker("history", "nope")
    assert (res.rc, res.stdout, res.stderr) == (1, "", NO_SUCH)


# --- image inspect --------------------------------------------------------------------------------


def test_image_inspect_fields(docker, images, rootfs_tar):
    image = images.load(labels={"com.example.role": "web"})
    data = inspect(docker, image.tags[0])
    assert {
        "Id", "RepoTags", "RepoDigests", "Parent", "Comment", "Created", "Author", "Config",
        "Architecture", "Os", "Size", "RootFS", "Metadata",
    } <= set(data)  # fmt: skip
    assert data["Id"] == image.id
    assert data["RepoTags"] == [image.tags[0]]
    assert data["RepoDigests"] == []
    assert data["Parent"] == ""
    assert data["Created"] == "2023-11-14T22:13:20Z"
    assert data["Os"] == "linux"
    assert data["Config"]["Cmd"] == ["sh"]
    assert data["Config"]["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert data["Config"]["Labels"]["com.example.role"] == "web"
    assert data["RootFS"] == {"Type": "layers", "Layers": [inspect_layer_of(rootfs_tar)]}
    assert data["Size"] == expected_size(rootfs_tar)
    assert data["Metadata"]["LastTagTime"]


def test_image_inspect_templates(docker, images):
    image = images.load()
    ref = image.tags[0]
    assert ok(docker("image", "inspect", "--format", "{{.Id}}", ref)) == f"{image.id}\n"
    assert ok(docker("image", "inspect", "-f", "{{json .Config.Cmd}}", ref)) == '["sh"]\n'
    assert (
        ok(docker("image", "inspect", "-f", "{{.RootFS.Type}} {{len .RootFS.Layers}}", ref)) == "layers 1\n"
    )
    assert ok(docker("image", "inspect", "-f", "{{index .RepoTags 0}}", ref)) == f"{ref}\n"
    assert ok(docker("inspect", "--type", "image", "-f", "{{.Os}}", ref)) == "linux\n"
    # Untyped inspect falls through to images when no container has that name.
    assert ok(docker("inspect", "-f", "{{.Id}}", ref)) == f"{image.id}\n"


def test_image_inspect_by_id_forms(docker, images):
    image = images.load()
    for ref in (image.id, image.id.removeprefix("sha256:"), image.short_id, image.short_id[:6]):
        assert ok(docker("image", "inspect", "-f", "{{.Id}}", ref)) == f"{image.id}\n", ref


def test_image_inspect_missing(docker, daemon):
    res = docker("image", "inspect", "nope")
    assert res.rc == 1
    assert res.stdout == "[]\n"
    if daemon.is_docker:
        assert res.stderr == "Error response from daemon: no such image: nope: No such image: nope:latest\n"
    else:
        assert res.stderr == NO_SUCH


# --- prune ----------------------------------------------------------------------------------------


def test_image_prune_dangling_only(docker, images):
    tag = f"{images.repo()}:latest"
    old = images.load(tags=[tag])
    new = images.load(tags=[tag])
    res = docker("image", "prune", "-f", "--filter", images.case_filter)
    assert ok(res) == f"Deleted Images:\ndeleted: {old.id}\n\nTotal reclaimed space: 0B\n"
    assert inspect(docker, tag)["Id"] == new.id
    assert ok(docker("image", "prune", "-f", "--filter", images.case_filter)) == "Total reclaimed space: 0B\n"


def test_image_prune_all(docker, images):
    image = images.load(tags=[f"{images.repo()}:a", f"{images.repo()}:b"])
    out = ok(docker("image", "prune", "-a", "-f", "--filter", images.case_filter))
    assert lines(out)[:4] == [
        "Deleted Images:",
        f"untagged: {images.repo()}:a",
        f"untagged: {images.repo()}:b",
        f"deleted: {image.id}",
    ]
    assert lines(out)[-1].startswith("Total reclaimed space: ")
    assert docker("image", "inspect", image.id).rc == 1


def test_image_prune_until_keeps_newer(docker, images):
    old = images.load(tags=[f"{images.repo()}:old"], epoch=1600000000)
    new = images.load(tags=[f"{images.repo()}:new"], epoch=1700000000)
    out = ok(
        docker(
            "image", "prune", "-af", "--filter", images.case_filter, "--filter", "until=2022-01-01T00:00:00Z"
        )
    )
    assert f"deleted: {old.id}" in out
    assert f"deleted: {new.id}" not in out
    assert inspect(docker, new.id)["Id"] == new.id


def test_image_prune_unfiltered(docker, daemon, images):
    if daemon.shared:
        pytest.skip("never prune a shared daemon without a label filter")
    tag = f"{images.repo()}:latest"
    old = images.load(tags=[tag])
    images.load(tags=[tag])
    out = ok(docker("image", "prune", "-f"))
    assert f"deleted: {old.id}" in out
    assert ok(docker("images", "-q", "--filter", "dangling=true")) == ""
