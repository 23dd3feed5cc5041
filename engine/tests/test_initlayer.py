"""The init-layer entries written into a new container's upper dir (dockerd's daemon/initlayer)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from engine.containers import fsdiff, initlayer


def _tree(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
            out[rel] = f"{kind}{stat.S_IMODE(st.st_mode):o}"
    return out


def test_populate_on_an_image_with_etc_and_proc(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True, mode=0o750)
    os.chmod(lower / "etc", 0o750)
    (lower / "etc" / "hosts").write_text("127.0.0.1 image\n")
    (lower / "proc").mkdir()
    upper.mkdir()
    initlayer.populate(upper, [lower])
    assert _tree(upper) == {
        ".dockerenv": "f755",
        "dev": "d755",
        "dev/console": "f755",
        "dev/pts": "d755",
        "dev/shm": "d755",
        "etc": "d750",  # the image's mode, as after a copy-up
        "etc/hostname": "f755",
        "etc/hosts": "f755",  # the image's file is shadowed by an empty one, as dockerd unlinks it
        "etc/mtab": "l777",
        "etc/resolv.conf": "f755",
        "sys": "d755",
    }
    assert (upper / "etc" / "hosts").read_bytes() == b""
    assert os.readlink(upper / "etc" / "mtab") == "/proc/mounts"
    # none of it is a change, nor counted in SizeRw
    assert fsdiff.changes(upper, [lower]) == []
    assert initlayer.artifact_bytes(upper) == len("/proc/mounts")


def test_a_directory_in_the_image_is_kept(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / ".dockerenv").mkdir(parents=True)
    upper.mkdir()
    initlayer.populate(upper, [lower])
    assert not (upper / ".dockerenv").exists()
    assert initlayer.artifact_bytes(tmp_path / "missing") == 0
