"""Persistence of network records: ``<root>/<id>.json``, one atomic JSON file per network (schema 1).

Only the configuration is stored. Pools are re-requested from the IPAM and kernel objects are
re-made by the drivers when the daemon starts, so nothing here describes live kernel state.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from storage.jsonfile import atomic_write_json, read_json

SCHEMA = 1
_ID = re.compile(r"[0-9a-f]{64}")
log = logging.getLogger(__name__)


@dataclass
class NetworkRecord:
    """``ipam_config`` holds dockerd's IPAM.Config entries as the API shows them (Subnet, Gateway,
    IPRange); the automatic subnet of a network is written there once the IPAM has chosen it, so it
    stays the same across restarts."""

    id: str
    name: str
    driver: str
    created: str
    scope: str = "local"
    internal: bool = False
    attachable: bool = False
    enable_ipv6: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    ipam_driver: str = "default"
    ipam_options: dict[str, str] = field(default_factory=dict)
    ipam_config: list[dict[str, Any]] = field(default_factory=list)
    predefined: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkRecord:
        data = dict(data)
        if data.pop("schema", None) != SCHEMA:
            raise ValueError("unsupported network record schema")
        return cls(**data)


class NetworkStore:
    """Synchronous: the service calls it through ``asyncio.to_thread``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, network_id: str) -> Path:
        if not _ID.fullmatch(network_id):
            raise ValueError(f"invalid network id {network_id!r}")
        return self.root / f"{network_id}.json"

    def save(self, record: NetworkRecord) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_json(self._path(record.id), record.to_json())

    def delete(self, network_id: str) -> None:
        self._path(network_id).unlink(missing_ok=True)

    def load_all(self) -> list[NetworkRecord]:
        """Every readable record; a damaged file is logged and skipped, not fatal to the daemon."""
        records: list[NetworkRecord] = []
        if not self.root.is_dir():
            return records
        for path in sorted(self.root.glob("*.json")):
            if not _ID.fullmatch(path.stem):
                continue
            try:
                records.append(NetworkRecord.from_json(read_json(path)))
            except (OSError, ValueError, TypeError) as e:
                log.warning("skipping network record %s: %s", path, e)
        return records
