"""IDs of the pre-defined networks (``bridge``, ``host``, ``none``), stable for a data root.

dockerd gives each of them a random 64-hex ID when it first starts and keeps it; containers show
it as ``NetworkSettings.Networks.<name>.NetworkID`` once they have started, and ``docker ps
--filter network=<id prefix>`` matches it. Until networks are objects of their own, skiff keeps
the three IDs in one JSON file under the data root.
"""

from __future__ import annotations

from pathlib import Path

from engine import ids
from storage.jsonfile import atomic_write_json, read_json

PREDEFINED = ("bridge", "host", "none")


def load_or_create(path: Path) -> dict[str, str]:
    """The IDs recorded in ``path``, made (and written) for any pre-defined network missing there."""
    try:
        recorded = read_json(path)
    except (FileNotFoundError, ValueError):
        recorded = None
    known = recorded.get("networks") if isinstance(recorded, dict) else None
    networks = {k: v for k, v in (known or {}).items() if k in PREDEFINED and isinstance(v, str)}
    if all(name in networks for name in PREDEFINED):
        return networks
    for name in PREDEFINED:
        networks.setdefault(name, ids.new_id())
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write_json(path, {"schema": 1, "networks": networks})
    return networks
