"""`docker system prune` (-a, --volumes, --filter) with the real CLI, and `docker builder prune`.

The CLI calls POST /containers/prune, /networks/prune, [/volumes/prune], /images/prune and
/build/prune, then prints what each deleted and the total reclaimed space. Other test modules
share this daemon, so every prune here carries this test's own label filter, and every object the
test makes carries that label.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Daemon, Images, Run, ok


def sections(text: str) -> dict[str, list[str]]:
    """ "Deleted Containers:\\nid\\n\\nTotal reclaimed space: 3kB" → {heading: lines}."""
    out: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(("deleted:", "untagged:")):
            current = out.setdefault(line[:-1], [])
        elif line.startswith("Total reclaimed space: "):
            out["Total reclaimed space"] = [line.split(": ", 1)[1]]
        elif line.strip():
            current.append(line)
    return out


class Made:
    def __init__(self, docker: Callable[..., Run], label: str) -> None:
        self.docker = docker
        self.label = label
        self.containers: list[str] = []
        self.networks: list[str] = []
        self.volumes: list[str] = []

    def cleanup(self) -> None:
        for name in self.containers:
            self.docker("rm", "-f", name)
        for name in self.networks:
            self.docker("network", "rm", name)
        for name in self.volumes:
            self.docker("volume", "rm", "-f", name)


@pytest.fixture
def made(docker: Callable[..., Run], images: Images, busybox_tar: Path) -> Iterator[Made]:
    ok(docker("load", "-i", busybox_tar))
    m = Made(docker, f"org.skiff.test.prune={images.case}")
    yield m
    m.cleanup()


def test_system_prune_with_a_label_filter(
    docker: Callable[..., Run], made: Made, images: Images, daemon: Daemon
) -> None:
    label = made.label
    prefix = f"skifftest-prune-{images.case}"
    stopped, running = f"{prefix}-stopped", f"{prefix}-running"
    made.containers += [stopped, running]
    ok(docker("run", "--name", stopped, "--label", label, "--network", "none", "busybox", "sh", "-c",
              "head -c 3000 /dev/zero > /blob"))  # fmt: skip
    ok(
        docker(
            "run", "-d", "--name", running, "--label", label, "--network", "none", "busybox", "sleep", "600"
        )
    )
    net, other_net = f"{prefix}-net", f"{prefix}-other"
    made.networks += [net, other_net]
    ok(docker("network", "create", "--label", label, net))
    ok(docker("network", "create", other_net))  # unlabelled: the filter keeps it
    anon = ok(docker("volume", "create", "--label", label, "--label", "com.docker.volume.anonymous=")).strip()
    named = f"{prefix}-vol"
    made.volumes += [anon, named]
    ok(docker("volume", "create", "--label", label, named))
    ok(docker("run", "--rm", "-v", f"{anon}:/d", "--network", "none", "busybox", "sh", "-c",
              "head -c 1000 /dev/zero > /d/f"))  # fmt: skip
    # Two builds under one tag: the first becomes dangling when the second takes the tag.
    tag = f"{images.repo()}:latest"
    old = images.load(tags=[tag], labels={"org.skiff.test.prune": images.case})
    new = images.load(tags=[tag], labels={"org.skiff.test.prune": images.case})
    assert old.id != new.id

    out = ok(docker("system", "prune", "-f", "--volumes", "--filter", f"label={label}"))
    got = sections(out)
    cid = ok(docker("inspect", "-f", "{{.Id}}", running)).strip()
    assert got.get("Deleted Containers") and len(got["Deleted Containers"]) == 1
    assert got["Deleted Containers"][0] != cid
    assert docker("inspect", stopped).rc == 1 and docker("inspect", running).rc == 0
    assert got["Deleted Networks"] == [net]
    assert docker("network", "inspect", other_net).rc == 0
    # API 1.42+ prunes only anonymous volumes unless asked for all; dockerd 20.10 (1.41) prunes both.
    expected_volumes = [anon] if daemon.api_version >= "1.42" else sorted([anon, named])
    assert sorted(got["Deleted Volumes"]) == expected_volumes
    assert got["Deleted Images"] == [f"deleted: {old.id}"]
    assert ok(docker("image", "inspect", "-f", "{{.Id}}", tag)).strip() == new.id
    # 3000 bytes of container layer + 1000 in the volume; the old image shared all its layers.
    assert got["Total reclaimed space"] == ["4kB"], out

    # -a also removes unused tagged images; nothing else is left to prune.
    out = ok(docker("system", "prune", "-a", "-f", "--filter", f"label={label}"))
    got = sections(out)
    assert "Deleted Containers" not in got and "Deleted Networks" not in got
    assert got["Deleted Images"] == [f"untagged: {tag}", f"deleted: {new.id}"]
    assert re.fullmatch(r"[0-9.]+(B|kB|MB)", got["Total reclaimed space"][0])
    assert docker("image", "inspect", tag).rc == 1
    assert ok(docker("system", "prune", "-f", "--filter", f"label={label}")) == "Total reclaimed space: 0B\n"


def test_builder_prune(docker: Callable[..., Run], made: Made, daemon: Daemon) -> None:
    out = ok(docker("builder", "prune", "-f", "--filter", f"label={made.label}"))
    assert out == "Total reclaimed space: 0B\n"
    res = docker("builder", "prune", "-f", "--filter", "dangling=true")
    invalid = "Invalid" if daemon.is_docker else "invalid"  # dockerd 28 lower-cased it
    # The CLI prints a legacy-builder notice first when buildx is not installed.
    assert res.rc == 1 and res.stderr.splitlines()[-1] == (
        f"Error response from daemon: failed to prune build cache: {invalid} filter 'dangling'"
    )
