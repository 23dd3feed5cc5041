"""`runc delete` of a stopped container without a runc process.

For a container whose init has exited, `runc delete` (runc 1.1, libcontainer ``destroy``) removes
its cgroup in every hierarchy (``cgroup_paths`` of its ``state.json``; rmdir, retried while the
kernel still counts exiting tasks), its intel RDT group, its state directory, and runs poststop
hooks; with a shared PID namespace it first SIGKILLs whatever is left in the cgroup. That is a
Go start-up and 10-18 ms of every `docker stop` here.

``delete_stopped`` does the same for the case skiff's containers are in: own PID namespace (the
kernel killed the rest with the init), no hooks, no RDT group. It declines (``False``, nothing
removed but possibly empty cgroups) whenever its state says otherwise or a cgroup stays busy,
and then `runc delete` runs after all.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
CGROUP_ROOT = "/sys/fs/cgroup/"
# runc's RemovePaths: five tries, the delay doubling from 10 ms.
RMDIR_TRIES = 5
RMDIR_FIRST_DELAY = 0.01


def delete_stopped(state_dir: Path) -> bool:
    """Remove what `runc delete` removes for the stopped container at ``state_dir`` (blocking:
    run it in a thread). True when done; False when it is left to runc."""
    try:
        with open(state_dir / STATE_FILE, "rb") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or not _plain(state):
        return False
    paths = [p for p in (state.get("cgroup_paths") or {}).values() if isinstance(p, str) and p]
    if not all(_rmdir_when_empty(Path(p)) for p in paths):
        return False
    shutil.rmtree(state_dir, ignore_errors=True)
    return not state_dir.exists()


def _plain(state: dict[str, Any]) -> bool:
    """No poststop hook, no RDT group, its own PID namespace, cgroups under /sys/fs/cgroup."""
    config = state.get("config")
    if not isinstance(config, dict):
        return False
    if any((config.get("Hooks") or {}).values()) or state.get("intel_rdt_path"):
        return False
    namespaces = config.get("namespaces") or []
    if not any(ns.get("type") == "NEWPID" and not ns.get("path") for ns in namespaces):
        return False
    paths = state.get("cgroup_paths")
    return isinstance(paths, dict) and all(
        isinstance(p, str) and p.startswith(CGROUP_ROOT) and "/../" not in p for p in paths.values()
    )


def _rmdir_when_empty(path: Path) -> bool:
    delay = RMDIR_FIRST_DELAY
    for attempt in range(RMDIR_TRIES):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as err:
            # EBUSY: tasks the kernel is still killing. Anything else is runc's to report.
            if err.errno != errno.EBUSY or attempt == RMDIR_TRIES - 1:
                return False
        time.sleep(delay)
        delay *= 2
    return False
