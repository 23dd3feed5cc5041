"""Sandboxes: real network namespaces under a temp exec root (root only)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from engine import errdefs
from network.sandbox import SandboxManager, is_netns, run_in_netns
from network.tests.nettools import Tag, in_netns

pytestmark = pytest.mark.privileged


def netns_inode(path: Path | str) -> int:
    return os.stat(path).st_ino


def test_create_run_inside_delete(host_guard: Path, tag: Tag):
    sandboxes = SandboxManager(host_guard)
    path = sandboxes.create(f"{tag.hex}-a")
    try:
        assert path == host_guard / f"{tag.hex}-a"
        assert is_netns(path) and sandboxes.exists(f"{tag.hex}-a")
        assert netns_inode(path) != netns_inode("/proc/self/ns/net")

        def state(ipr: IPRoute) -> object:
            return [(link.get("ifname"), link.get("state")) for link in ipr.get_links()]

        assert in_netns(path, state) == [("lo", "up")]
        # The caller's thread, and the process, stay where they were.
        assert run_in_netns(path, lambda: netns_inode("/proc/thread-self/ns/net")) == netns_inode(path)
        assert netns_inode("/proc/thread-self/ns/net") == netns_inode("/proc/self/ns/net")

        # A socket made inside keeps living there: loopback of the sandbox, not of the host.
        server = run_in_netns(path, lambda: socket.create_server(("127.0.0.1", 0)))
        with server:
            port = server.getsockname()[1]
            inside = run_in_netns(path, lambda: socket.create_connection(("127.0.0.1", port), timeout=2))
            inside.close()
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()

        with pytest.raises(errdefs.Conflict):
            sandboxes.create(f"{tag.hex}-a")
        assert sandboxes.list() == [f"{tag.hex}-a"]
    finally:
        sandboxes.delete(f"{tag.hex}-a")
    assert not path.exists()
    sandboxes.delete(f"{tag.hex}-a")  # idempotent
    assert sandboxes.list() == []


def test_exceptions_inside_come_back(host_guard: Path, tag: Tag):
    sandboxes = SandboxManager(host_guard)
    path = sandboxes.create(f"{tag.hex}-b")
    try:

        def boom() -> None:
            raise KeyError("inside")

        with pytest.raises(KeyError, match="inside"):
            run_in_netns(path, boom)
    finally:
        sandboxes.delete(f"{tag.hex}-b")


def test_stale_placeholder_is_listed_and_deleted(host_guard: Path):
    sandboxes = SandboxManager(host_guard)
    host_guard.mkdir(parents=True)
    (host_guard / "stale").touch()  # what a crash between create and mount leaves
    assert sandboxes.list() == ["stale"]
    assert not sandboxes.exists("stale")
    sandboxes.delete("stale")
    assert sandboxes.list() == []


def test_bad_ids_are_refused(tmp_path: Path):
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(errdefs.InvalidParameter):
            SandboxManager(tmp_path).path(bad)
