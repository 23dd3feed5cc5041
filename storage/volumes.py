"""Local volumes on disk: ``volumes/<name>/_data`` (the data) and ``volumes/<name>/meta.json``.

``meta.json`` holds what dockerd keeps in its metadata db and ``opts.json``: driver, labels, driver
options and the creation time (schema 1). The in-memory index is derived by scanning at start-up.

A volume appears atomically: it is built under a hidden ``.tmp-*`` directory and renamed into
place. Removal renames it to a hidden ``.trash-*`` directory first, so a crash never leaves a
half-deleted volume listed; leftovers are cleared at the next start. Nothing is ever deleted
through a mount: a volume whose data directory (or anything below it) is a mount point is refused,
because a bind-type volume's ``_data`` is a host directory. Knows nothing of containers or of
Docker's naming rules (the engine validates names); only refuses names that would leave the root.
Synchronous: the engine calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import errdefs
from storage.jsonfile import atomic_write_json, read_json
from storage.mount import mount_points
from storage.snapshots import disk_usage

SCHEMA = 1
DATA_DIR = "_data"
META_FILE = "meta.json"
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"


@dataclass(frozen=True)
class VolumeRecord:
    name: str
    driver: str
    created_ns: int  # unix nanoseconds
    labels: dict[str, str] | None  # None and {} are kept apart: inspect shows null or {}
    options: dict[str, str] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "name": self.name,
            "driver": self.driver,
            "created_ns": self.created_ns,
            "labels": self.labels,
            "options": self.options,
        }


def _str_map(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("not a map")
    return {str(k): str(v) for k, v in value.items()}


def _record_from_json(obj: Any, name: str) -> VolumeRecord:
    if not isinstance(obj, dict) or obj.get("schema") != SCHEMA or obj.get("name") != name:
        raise ValueError("bad volume metadata")
    return VolumeRecord(
        name=name,
        driver=str(obj.get("driver") or "local"),
        created_ns=int(obj.get("created_ns") or 0),
        labels=_str_map(obj.get("labels")),
        options=_str_map(obj.get("options")),
    )


def _safe_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\0" in name:
        raise errdefs.InvalidParameter(f"invalid volume name: {name!r}")


class VolumeStore:
    """The ``local`` driver's directory tree under ``root`` (normally ``<data-root>/volumes``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # dockerd's 0701: others may traverse to a volume's data (bind sources) but not list volumes.
        root.mkdir(mode=0o701, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._index: dict[str, VolumeRecord] = {}
        self._load()

    def _load(self) -> None:
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
                self._discard(entry)
                continue
            if entry.name.startswith(".") or not entry.is_dir() or not (entry / DATA_DIR).is_dir():
                continue
            try:
                record = _record_from_json(read_json(entry / META_FILE), entry.name)
            except (OSError, ValueError):
                # No (readable) metadata: keep the data, as dockerd keeps volumes it has no db entry for.
                created = int(entry.stat().st_ctime_ns)
                record = VolumeRecord(entry.name, "local", created, None, None)
            self._index[entry.name] = record

    def _mounted_below(self, path: Path) -> bool:
        prefix = os.path.realpath(path)
        return any(p == prefix or p.startswith(prefix + "/") for p in mount_points())

    def _discard(self, path: Path) -> None:
        if self._mounted_below(path):
            return  # never delete through a mount; a later start retries
        shutil.rmtree(path, ignore_errors=True)

    # -- queries -------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.root / name

    def data_path(self, name: str) -> Path:
        return self.root / name / DATA_DIR

    def get(self, name: str) -> VolumeRecord | None:
        with self._lock:
            return self._index.get(name)

    def list(self) -> list[VolumeRecord]:
        with self._lock:
            return sorted(self._index.values(), key=lambda r: r.name)

    def size(self, name: str) -> int:
        """Apparent bytes under the volume's data (hard links once), as dockerd's directory.Size."""
        return disk_usage(self.data_path(name)).size

    def is_empty(self, name: str) -> bool:
        with os.scandir(self.data_path(name)) as it:
            return next(it, None) is None

    # -- changes -------------------------------------------------------------------

    def create(
        self,
        name: str,
        driver: str = "local",
        labels: dict[str, str] | None = None,
        options: dict[str, str] | None = None,
    ) -> tuple[VolumeRecord, bool]:
        """The volume ``name``, made if missing; the bool says whether this call made it.

        An existing volume is returned unchanged (labels and options are not merged), as dockerd does.
        """
        _safe_name(name)
        with self._lock:
            existing = self._index.get(name)
            if existing is not None:
                return existing, False
            record = VolumeRecord(
                name, driver, time.time_ns(), dict(labels) if labels is not None else None,
                dict(options) if options is not None else None,
            )  # fmt: skip
            tmp = self.root / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
            try:
                tmp.mkdir(mode=0o701)
                (tmp / DATA_DIR).mkdir(mode=0o755)
                os.chmod(tmp / DATA_DIR, 0o755)  # not narrowed by the daemon's umask
                atomic_write_json(tmp / META_FILE, record.to_json())
                try:
                    os.rename(tmp, self.root / name)
                except OSError as exc:
                    raise errdefs.Internal(f"volume already exists under {self.root / name}") from exc
                self._fsync_root()
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._index[name] = record
            return record, True

    def remove(self, name: str) -> None:
        """Delete the volume and its data; a missing volume is not an error."""
        with self._lock:
            if name not in self._index:
                return
            if self._mounted_below(self.path(name)):
                raise errdefs.Conflict(f"remove {name}: volume data is still mounted")
            trash = self.root / f"{_TRASH_PREFIX}{secrets.token_hex(8)}"
            os.rename(self.path(name), trash)
            del self._index[name]
            with contextlib.suppress(OSError):
                self._fsync_root()
        shutil.rmtree(trash, ignore_errors=True)

    def _fsync_root(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
