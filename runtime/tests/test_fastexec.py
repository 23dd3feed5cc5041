"""The exec helper's pure parts: which execs it takes, cgroup files, Go's LookPath and texts."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from runtime import cgroups, exec_helper, fastexec
from runtime.types import IOSpec

PROCESS = {
    "args": ["true"],
    "user": {"uid": 0, "gid": 0, "additionalGids": [0]},
    "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"]},
    "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2}],
}


def test_eligible_execs() -> None:
    assert fastexec.eligible(PROCESS, IOSpec())
    assert fastexec.eligible(PROCESS, IOSpec(stdin=True))
    assert not fastexec.eligible(PROCESS, IOSpec(tty=True))  # runc's console socket makes the pty
    assert not fastexec.eligible({**PROCESS, "apparmorProfile": "docker-default"}, IOSpec())
    assert not fastexec.eligible({**PROCESS, "capabilities": {"bounding": ["CAP_FUTURE"]}}, IOSpec())
    assert not fastexec.eligible({**PROCESS, "rlimits": [{"type": "RLIMIT_NOPE"}]}, IOSpec())
    assert not fastexec.eligible({**PROCESS, "user": {"uid": 0, "gid": 0, "umask": 18}}, IOSpec())
    assert not fastexec.eligible({**PROCESS, "args": []}, IOSpec())


def test_container_allows() -> None:
    spec = {"process": {}, "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}}
    assert fastexec.container_allows(spec)
    assert not fastexec.container_allows({**spec, "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}}})
    assert not fastexec.container_allows({**spec, "linux": {"namespaces": [{"type": "user"}]}})
    assert not fastexec.container_allows({**spec, "process": {"apparmorProfile": "x"}})


def test_cgroup_procs_of_a_hybrid_layout(tmp_path: Path) -> None:
    cpu, memory, named, unified = (tmp_path / n for n in ("cpu", "memory", "systemd", "unified"))
    layout = cgroups.CgroupLayout(
        v1={"cpu": cpu, "cpuacct": cpu, "memory": memory, "name=systemd": named}, unified=unified
    )
    for mount in (cpu, memory, named, unified):
        (mount / "skiff" / "c1").mkdir(parents=True)
        (mount / "skiff" / "c1" / "cgroup.procs").touch()
    text = (
        "9:name=systemd:/skiff/c1\n4:memory:/skiff/c1\n2:cpu,cpuacct:/skiff/c1\n7:blkio:/skiff/c1\n"
        "0::/skiff/c1\n"
    )
    assert fastexec.cgroup_procs(layout, text) == [
        f"{named}/skiff/c1/cgroup.procs",
        f"{memory}/skiff/c1/cgroup.procs",
        f"{cpu}/skiff/c1/cgroup.procs",
        f"{unified}/skiff/c1/cgroup.procs",
    ]  # blkio is not mounted here: skipped


def test_look_path_is_gos(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (bin_dir / "plain").write_text("x")
    env = {"PATH": f"/nonexistent:{bin_dir}"}
    assert exec_helper.look_path("tool", env) == str(tool)
    assert exec_helper.look_path(str(tool), env) == str(tool)
    with pytest.raises(
        exec_helper.ExecFailure, match=r'^exec: "plain": executable file not found in \$PATH$'
    ):
        exec_helper.look_path("plain", env)
    with pytest.raises(
        exec_helper.ExecFailure, match=r'^exec: "/x/y": stat /x/y: no such file or directory$'
    ):
        exec_helper.look_path("/x/y", env)
    with pytest.raises(exec_helper.ExecFailure, match=f'^exec: "{bin_dir}": permission denied$'):
        exec_helper.look_path(str(bin_dir), env)


def test_texts_and_masks() -> None:
    assert exec_helper.go_error(OSError(errno.ENOENT, "x")) == "no such file or directory"
    assert exec_helper.go_error(OSError(errno.ENOTDIR, "x")) == "not a directory"
    assert exec_helper.cap_mask(["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]) == 0x421
    assert exec_helper.cap_mask(None) == 0
    assert exec_helper.CAP_NUMBERS["CAP_CHECKPOINT_RESTORE"] == 40


def test_join_cgroups_uses_tasks_for_v1_and_returns_the_v2_dir(tmp_path: Path) -> None:
    v1, v1_old, v2 = tmp_path / "memory" / "c1", tmp_path / "old" / "c1", tmp_path / "unified" / "c1"
    for d in (v1, v1_old, v2):
        d.mkdir(parents=True)
        (d / "cgroup.procs").write_text("")
    (v1 / "tasks").write_text("")
    (v2 / "cgroup.controllers").write_text("")
    fd = exec_helper.join_cgroups([str(d / "cgroup.procs") for d in (v1, v1_old, v2)])
    try:
        assert fd is not None and os.path.samestat(os.fstat(fd), os.stat(v2))
    finally:
        if fd is not None:
            os.close(fd)
    # the current thread only (no global lock), or cgroup.procs where there is no tasks file
    assert (v1 / "tasks").read_text() == "0" and (v1 / "cgroup.procs").read_text() == ""
    assert (v1_old / "cgroup.procs").read_text() == "0"
    assert (v2 / "cgroup.procs").read_text() == ""  # joined by clone3(CLONE_INTO_CGROUP) instead
