"""`docker cp` with the real CLI: files, directories and symlinks both ways, -L, -a, stdin/stdout
archives, stopped containers, volumes, and dockerd's errors.

Checked against the reference dockerd too (SKIFF_TEST_DOCKER_HOST=...). dockerd 20.10 runs its tar
extraction in a child process and prefixes those errors with "Error processing tar file(exit
status 1): ", which dockerd 28 (skiff's model) no longer does: the tests accept both.
"""

from __future__ import annotations

import io
import itertools
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import CASE_LABEL, Daemon, Run, ok

_names = itertools.count()


def failed(res: Run) -> str:
    """The error line (the CLI may log tar-writer noise before it when it gives up early)."""
    assert res.rc != 0, f"unexpected success:\nstdout={res.stdout}\nstderr={res.stderr}"
    return res.stderr.strip().splitlines()[-1]


class Boxes:
    """Names, runs and (at the end) removes this module's containers and volumes."""

    def __init__(self, docker: Callable[..., Run], token: str) -> None:
        self.docker = docker
        self.case = f"cp-{token}"
        self.volumes: list[str] = []

    def name(self, hint: str) -> str:
        return f"skifftest-{hint}-{self.case}-{next(_names)}"

    def run(self, hint: str, *args: str) -> str:
        name = self.name(hint)
        ok(
            self.docker(
                "run",
                "-d",
                "--name",
                name,
                "--label",
                f"{CASE_LABEL}={self.case}",
                *args,
                "busybox",
                "sleep",
                "600",
            )
        )
        return name

    def create(self, hint: str, *args: str) -> str:
        name = self.name(hint)
        ok(
            self.docker(
                "create", "--name", name, "--label", f"{CASE_LABEL}={self.case}", *args, "busybox", "true"
            )
        )
        return name

    def sh(self, name: str, script: str) -> str:
        return ok(self.docker("exec", name, "sh", "-c", script))

    def cleanup(self) -> None:
        listed = self.docker("ps", "-aq", "--no-trunc", "--filter", f"label={CASE_LABEL}={self.case}")
        for cid in listed.stdout.split():
            self.docker("rm", "-f", cid)
        for volume in self.volumes:
            self.docker("volume", "rm", "-f", volume)


@pytest.fixture(scope="module")
def boxes(docker: Callable[..., Run], busybox: str, session_token: str) -> Iterator[Boxes]:
    made = Boxes(docker, session_token)
    yield made
    made.cleanup()


@pytest.fixture(scope="module")
def box(boxes: Boxes) -> str:
    """A running container with a small tree, links included."""
    name = boxes.run("cp")
    boxes.sh(
        name,
        "mkdir -p /src/sub /dst && echo hello > /src/file && echo deep > /src/sub/deep"
        " && ln -s file /src/link && ln -s /src /srclink && chmod 0751 /src/sub"
        " && mkdir -p /clash/thing && echo f > /clash/plain",
    )
    return name


def test_copy_a_file_both_ways(docker: Callable[..., Run], box: str, boxes: Boxes, tmp_path: Path) -> None:
    src = tmp_path / "up.txt"
    src.write_text("from the host\n")
    src.chmod(0o640)
    ok(docker("cp", src, f"{box}:/dst/"))
    assert boxes.sh(box, "cat /dst/up.txt; stat -c %a /dst/up.txt") == "from the host\n640\n"
    ok(docker("cp", src, f"{box}:/dst/renamed.txt"))  # a new name in an existing directory
    assert boxes.sh(box, "cat /dst/renamed.txt") == "from the host\n"
    ok(docker("cp", f"{box}:/src/file", tmp_path / "down.txt"))
    assert (tmp_path / "down.txt").read_text() == "hello\n"


def test_copy_a_directory_both_ways(
    docker: Callable[..., Run], box: str, boxes: Boxes, tmp_path: Path
) -> None:
    ok(docker("cp", f"{box}:/src", tmp_path / "out"))
    out = tmp_path / "out"
    assert (out / "file").read_text() == "hello\n" and (out / "sub" / "deep").read_text() == "deep\n"
    assert os.readlink(out / "link") == "file"
    assert oct((out / "sub").stat().st_mode & 0o777) == oct(0o751)
    ok(docker("cp", out, f"{box}:/dst/tree"))
    assert boxes.sh(box, "cat /dst/tree/sub/deep; readlink /dst/tree/link") == "deep\nfile\n"
    ok(docker("cp", f"{out}/.", f"{box}:/dst/contents"))  # "dir/." copies the contents
    assert boxes.sh(box, "ls /dst/contents") == "file\nlink\nsub\n"


def test_symlinks_and_follow_link(docker: Callable[..., Run], box: str, tmp_path: Path) -> None:
    ok(docker("cp", f"{box}:/srclink", tmp_path / "asis"))
    assert os.readlink(tmp_path / "asis") == "/src"
    ok(docker("cp", "-L", f"{box}:/srclink", tmp_path / "followed"))
    assert (tmp_path / "followed" / "file").read_text() == "hello\n"
    ok(docker("cp", "-L", f"{box}:/src/link", tmp_path / "followed-file"))
    assert (tmp_path / "followed-file").read_text() == "hello\n"
    (tmp_path / "hostlink").symlink_to("somewhere")
    ok(docker("cp", tmp_path / "hostlink", f"{box}:/dst/"))


def test_archives_on_stdin_and_stdout(
    docker: Callable[..., Run], box: str, boxes: Boxes, tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("streamed")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    ok(docker("cp", "-", f"{box}:/dst", input=buf.getvalue()))
    assert boxes.sh(box, "cat /dst/streamed") == "abc"
    target = tmp_path / "out.tar"
    ok(docker("cp", f"{box}:/src", "-", stdout_file=target))
    with tarfile.open(target) as tf:
        assert sorted(tf.getnames()) == ["src", "src/file", "src/link", "src/sub", "src/sub/deep"]


def test_stopped_containers(docker: Callable[..., Run], boxes: Boxes, tmp_path: Path) -> None:
    created = boxes.create("created")
    (tmp_path / "in.txt").write_text("before start\n")
    ok(docker("cp", tmp_path / "in.txt", f"{created}:/tmp/"))
    ok(docker("cp", f"{created}:/tmp/in.txt", tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "before start\n"
    exited = boxes.name("exited")
    ok(
        docker(
            "run",
            "--name",
            exited,
            "--label",
            f"{CASE_LABEL}={boxes.case}",
            "busybox",
            "sh",
            "-c",
            "echo made > /made",
        )
    )
    ok(docker("cp", f"{exited}:/made", tmp_path / "made"))
    assert (tmp_path / "made").read_text() == "made\n"
    ok(docker("cp", tmp_path / "in.txt", f"{exited}:/"))
    ok(docker("start", "-a", exited))
    ok(docker("cp", f"{exited}:/in.txt", tmp_path / "again.txt"))
    assert (tmp_path / "again.txt").read_text() == "before start\n"


def test_into_a_volume(docker: Callable[..., Run], boxes: Boxes, tmp_path: Path) -> None:
    volume = f"skifftest-cpvol-{boxes.case}"
    boxes.volumes.append(volume)
    made = docker("volume", "create", volume)
    if made.rc != 0:
        pytest.skip(f"this daemon has no volumes yet: {made.stderr.strip()}")
    name = boxes.run("vol", "-v", f"{volume}:/vol")
    mounts = ok(docker("inspect", "-f", "{{len .Mounts}}", name)).strip()
    if mounts == "0":
        pytest.skip("this daemon does not mount volumes into containers yet")
    (tmp_path / "v.txt").write_text("into the volume\n")
    ok(docker("cp", tmp_path / "v.txt", f"{name}:/vol/"))
    assert boxes.sh(name, "cat /vol/v.txt") == "into the volume\n"
    other = boxes.create("vol2", "-v", f"{volume}:/data")
    ok(docker("cp", f"{other}:/data/v.txt", tmp_path / "from-volume.txt"))
    assert (tmp_path / "from-volume.txt").read_text() == "into the volume\n"
    ro = boxes.run("volro", "-v", f"{volume}:/vol:ro")
    err = failed(docker("cp", tmp_path / "v.txt", f"{ro}:/vol/"))
    assert err == "Error response from daemon: mounted volume is marked read-only"


def test_missing_paths_and_containers(docker: Callable[..., Run], box: str, tmp_path: Path) -> None:
    err = failed(docker("cp", f"{box}:/no/such", tmp_path))
    assert err == f"Error response from daemon: Could not find the file /no/such in container {box}"
    (tmp_path / "f").write_text("x")
    err = failed(docker("cp", tmp_path / "f", "skifftest-no-such-container:/tmp"))
    assert err == "Error response from daemon: No such container: skifftest-no-such-container"
    assert failed(docker("cp", tmp_path / "f", f"{box}:/no/such/dir/")) == "no such directory"


def test_type_clashes(docker: Callable[..., Run], daemon: Daemon, box: str, tmp_path: Path) -> None:
    prefix = "Error response from daemon: "
    if daemon.is_docker:
        prefix += "Error processing tar file(exit status 1): "
    (tmp_path / "thing").write_text("a file named like a directory")
    err = failed(docker("cp", tmp_path / "thing", f"{box}:/clash"))
    assert err == prefix + 'cannot overwrite directory "/clash/thing" with non-directory "/clash"'
    (tmp_path / "plain").mkdir()
    err = failed(docker("cp", tmp_path / "plain", f"{box}:/clash"))
    assert err.startswith(prefix + 'cannot overwrite non-directory "/clash/plain" with directory "/clash"')
    assert failed(docker("cp", tmp_path / "plain", f"{box}:/clash/plain")) == "cannot copy directory"


def test_archive_mode_and_read_only_rootfs(docker: Callable[..., Run], boxes: Boxes, tmp_path: Path) -> None:
    user = boxes.run("user", "-u", "nobody")
    (tmp_path / "owned").write_text("x")
    ok(docker("cp", "-a", tmp_path / "owned", f"{user}:/tmp/"))
    assert boxes.sh(user, "stat -c %u:%g /tmp/owned") == "65534:65534\n"
    ro = boxes.run("ro", "--read-only")
    err = failed(docker("cp", tmp_path / "owned", f"{ro}:/tmp/"))
    assert err == "Error response from daemon: container rootfs is marked read-only"
