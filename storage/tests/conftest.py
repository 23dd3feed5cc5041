"""Shared fixtures for storage tests: mount bookkeeping that always unmounts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.mount import Mount, is_mounted, mount_all, unmount

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


class MountTracker:
    """Mounts made by a test; the fixture unmounts them all even when the test fails."""

    def __init__(self) -> None:
        self.targets: list[Path] = []

    def mount(self, mounts: list[Mount], target: Path) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        self.targets.append(target)
        mount_all(mounts, target)
        return target

    def cleanup(self) -> None:
        for target in reversed(self.targets):
            unmount(target)
            assert not is_mounted(target)


@pytest.fixture
def mounts() -> Iterator[MountTracker]:
    tracker = MountTracker()
    try:
        yield tracker
    finally:
        tracker.cleanup()
