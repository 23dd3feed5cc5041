"""``docker system df`` with the real CLI: the summary table, ``-v`` and ``--format``.

Expectations were checked against the reference dockerd (SKIFF_TEST_DOCKER_HOST=...). A shared
daemon holds other objects, so only this test's own volume, container and the busybox image are
asserted on; all of them are removed afterwards, also when the test fails.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Run, ok

_counter = itertools.count()
TYPES = ["Images", "Containers", "Local Volumes", "Build Cache"]


@pytest.fixture(scope="module", autouse=True)
def busybox(docker: Callable[..., Run], busybox_tar: Path) -> None:
    ok(docker("load", "-i", busybox_tar))


@pytest.fixture
def names(session_token: str, docker: Callable[..., Run]) -> Iterator[tuple[str, str]]:
    prefix = f"skdf-{session_token}-{next(_counter)}"
    container, volume = f"{prefix}-c", f"{prefix}-v"
    yield container, volume
    docker("rm", "-f", "-v", container)
    docker("volume", "rm", "-f", volume)


def test_system_df(docker: Callable[..., Run], names: tuple[str, str]) -> None:
    container, volume = names
    ok(docker("volume", "create", volume))
    # 1000 bytes into the volume, 5 bytes into the container's writable layer; the container stays.
    script = "head -c 1000 /dev/zero > /data/blob && printf hello > /rw"
    ok(docker("run", "--name", container, "-v", f"{volume}:/data", "busybox", "sh", "-c", script))

    table = ok(docker("system", "df")).splitlines()
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [line.split("  ")[0].strip() for line in table[1:]] == TYPES

    rows = [json.loads(line) for line in ok(docker("system", "df", "--format", "{{json .}}")).splitlines()]
    assert [r["Type"] for r in rows] == TYPES
    by_type = {r["Type"]: r for r in rows}
    assert int(by_type["Images"]["TotalCount"]) >= 1 and int(by_type["Containers"]["TotalCount"]) >= 1
    assert int(by_type["Local Volumes"]["TotalCount"]) >= 1
    assert by_type["Build Cache"]["Size"] == "0B"

    verbose = ok(docker("system", "df", "-v"))
    for heading in ("Images space usage:", "Containers space usage:", "Local Volumes space usage:"):
        assert heading in verbose
    vol_line = next(line for line in verbose.splitlines() if line.startswith(volume + " "))
    assert vol_line.split() == [volume, "1", "1kB"]  # LINKS counts the stopped container too

    detail: dict[str, Any] = json.loads(ok(docker("system", "df", "-v", "--format", "json")))
    assert set(detail) == {"Images", "Containers", "Volumes", "BuildCache"}
    (vol,) = [v for v in detail["Volumes"] if v["Name"] == volume]
    assert vol["Links"] == "1" and vol["Size"] == "1kB" and vol["Driver"] == "local"
    (row,) = [c for c in detail["Containers"] if c["Names"] == container]
    assert row["Size"] == "5B" and row["LocalVolumes"] == "1" and row["Image"] == "busybox"
    (image,) = [i for i in detail["Images"] if i["Repository"] == "busybox" and i["Tag"] == "latest"]
    assert int(image["Containers"]) >= 1
    assert detail["BuildCache"] == []
