"""Parsing and validation of a container's mount requests, with dockerd's rules and texts.

Three spellings reach the daemon: ``HostConfig.Binds`` strings (``src:dst[:mode]``, where an
absolute ``src`` is a host path and anything else a volume name), ``HostConfig.Mounts`` objects
(``type=volume|bind|tmpfs`` with their options) and ``HostConfig.VolumesFrom`` (``ctr[:ro|rw]``).
Each becomes a ``MountPoint``: what ``Container.mount_points`` stores, Docker-shaped (the keys
``docker inspect`` shows under ``Mounts``) plus the request it came from (``Spec``) and dockerd's
two flags (``CopyData``, ``SkipMountpointCreation``).

Pure functions (moby's volume/mounts linux parser), except the bind-source existence check of
``parse_mount``, which stats the host path as dockerd does.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine import errdefs

RW_MODES = frozenset({"rw", "ro"})
LABEL_MODES = frozenset({"z", "Z"})
PROPAGATION_MODES = ("private", "rprivate", "slave", "rslave", "shared", "rshared")
CONSISTENCY_MODES = frozenset({"consistent", "cached", "delegated"})
DEFAULT_PROPAGATION = "rprivate"
_TMPFS_OPTIONS = frozenset({"exec", "noexec"})


@dataclass
class MountPoint:
    type: str  # "volume" | "bind" | "tmpfs"
    destination: str
    rw: bool = True
    name: str = ""  # the volume's name
    source: str = ""  # the host path: a bind's source, a volume's data directory
    driver: str = ""
    mode: str = ""  # the mode text as given (``ro,rshared``), "z" for named volumes
    propagation: str = ""
    spec: dict[str, Any] = field(default_factory=dict)  # the mount.Mount it came from (Docker's names)
    copy_data: bool = False  # fill an empty volume with the image's content at create
    skip_mountpoint_creation: bool = False  # --mount type=bind: a missing source is an error

    @property
    def anonymous(self) -> bool:
        """What ``docker rm -v`` removes: a volume the request did not name (dockerd: Spec.Source == "")."""
        return self.type == "volume" and not self.spec.get("Source")

    def to_record(self) -> dict[str, Any]:
        """Docker's ``MountPoint`` order (Name/Driver omitted when empty, as inspect omits them)."""
        record: dict[str, Any] = {"Type": self.type}
        if self.name:
            record["Name"] = self.name
        record["Source"] = self.source
        record["Destination"] = self.destination
        if self.driver:
            record["Driver"] = self.driver
        record["Mode"] = self.mode
        record["RW"] = self.rw
        record["Propagation"] = self.propagation
        record["Spec"] = self.spec
        record["CopyData"] = self.copy_data
        record["SkipMountpointCreation"] = self.skip_mountpoint_creation
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> MountPoint:
        return cls(
            type=str(record.get("Type") or ""),
            destination=str(record.get("Destination") or ""),
            rw=bool(record.get("RW")),
            name=str(record.get("Name") or ""),
            source=str(record.get("Source") or ""),
            driver=str(record.get("Driver") or ""),
            mode=str(record.get("Mode") or ""),
            propagation=str(record.get("Propagation") or ""),
            spec=dict(record.get("Spec") or {}),
            copy_data=bool(record.get("CopyData")),
            skip_mountpoint_creation=bool(record.get("SkipMountpointCreation")),
        )


# -- modes ---------------------------------------------------------------------------


def valid_mode(mode: str) -> bool:
    """linuxValidMountMode: comma-separated, at most one of each kind."""
    if not mode:
        return True
    counts = [0, 0, 0, 0, 0]
    for option in mode.split(","):
        if option in RW_MODES:
            counts[0] += 1
        elif option in LABEL_MODES:
            counts[1] += 1
        elif option in PROPAGATION_MODES:
            counts[2] += 1
        elif option == "nocopy":
            counts[3] += 1
        elif option in CONSISTENCY_MODES:
            counts[4] += 1
        else:
            return False
    return max(counts) <= 1


def read_write(mode: str) -> bool:
    return valid_mode(mode) and "ro" not in mode.split(",")


def _propagation(mode: str) -> str | None:
    return next((o for o in mode.split(",") if o in PROPAGATION_MODES), None)


def _copy_mode(mode: str) -> bool | None:
    """getCopyMode: False for ``nocopy``, None when the mode does not say."""
    return False if "nocopy" in mode.split(",") else None


def go_clean(path: str) -> str:
    """Go's ``path.Clean`` (``posixpath.normpath`` keeps a leading ``//``)."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


# -- validation ------------------------------------------------------------------------


class _MountConfigError(Exception):
    pass


def _config_error(cfg: Mapping[str, Any], reason: str) -> str:
    return f'invalid mount config for type "{cfg.get("Type") or ""}": {reason}'


def _absolute(path: str) -> None:
    if not path.replace("\\", "/").startswith("/"):
        raise _MountConfigError(f"invalid mount path: '{path}' mount path must be absolute")


def _source_exists(path: str) -> bool:
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False
    return True


def _check(cfg: Mapping[str, Any], check_source: Callable[[str], bool] | None) -> None:
    target = str(cfg.get("Target") or "")
    if not target:
        raise _MountConfigError("field Target must not be empty")
    if go_clean(target.replace("\\", "/")) == "/":
        raise _MountConfigError("invalid specification: destination can't be '/'")
    _absolute(target)
    kind = cfg.get("Type") or ""
    source = str(cfg.get("Source") or "")
    bind_opts, vol_opts, tmpfs_opts = (
        cfg.get("BindOptions"),
        cfg.get("VolumeOptions"),
        cfg.get("TmpfsOptions"),
    )
    if kind == "bind":
        if not source:
            raise _MountConfigError("field Source must not be empty")
        propagation = (bind_opts or {}).get("Propagation") or ""
        if propagation and propagation not in PROPAGATION_MODES:
            raise _MountConfigError(f"invalid propagation mode: {propagation}")
        if vol_opts is not None:
            raise _MountConfigError("field VolumeOptions must not be specified")
        _absolute(source)
        create = bool((bind_opts or {}).get("CreateMountpoint"))
        if check_source is not None and not create and not check_source(source):
            raise _MountConfigError(f"bind source path does not exist: {source}")
    elif kind == "volume":
        if bind_opts is not None:
            raise _MountConfigError("field BindOptions must not be specified")
        subpath = str((vol_opts or {}).get("Subpath") or "")
        if subpath:
            if not source:
                raise _MountConfigError("must not set Subpath when using anonymous volumes")
            if subpath.startswith("/") or go_clean(subpath).split("/")[0] == "..":
                raise _MountConfigError("subpath must be a relative path within the volume")
        if cfg.get("ReadOnly") and not source:
            raise _MountConfigError("must not set ReadOnly mode when using anonymous volumes")
    elif kind == "tmpfs":
        if bind_opts is not None:
            raise _MountConfigError("field BindOptions must not be specified")
        if source:
            raise _MountConfigError("field Source must not be specified")
        convert_tmpfs_options(tmpfs_opts, bool(cfg.get("ReadOnly")))
    else:
        raise _MountConfigError("mount type unknown")


def validate_mount_config(cfg: Mapping[str, Any]) -> None:
    """ValidateMountConfig for one ``HostConfig.Mounts`` entry (400 with dockerd's text)."""
    try:
        _check(cfg, _source_exists)
    except _MountConfigError as err:
        raise errdefs.InvalidParameter(_config_error(cfg, str(err))) from None


def convert_tmpfs_options(opts: Mapping[str, Any] | None, read_only: bool) -> str:
    """ConvertTmpfsOptions: ``ro``, ``mode=<octal>``, ``size=<n>[kmg]``, then the exec/noexec options."""
    raw: list[str] = ["ro"] if read_only else []
    opts = opts or {}
    mode = int(opts.get("Mode") or 0)
    if mode:
        raw.append(f"mode={mode:o}")
    size = int(opts.get("SizeBytes") or 0)
    if size:
        suffix = ""
        for letter, divisor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % divisor == 0:
                size, suffix = size // divisor, letter
                break
        raw.append(f"size={size}{suffix}")
    for option in opts.get("Options") or ():
        if not isinstance(option, list | tuple) or not 1 <= len(option) <= 2:
            raise _MountConfigError("invalid option array length")
        if option[0] not in _TMPFS_OPTIONS:
            raise _MountConfigError(f"invalid option: {option[0]}")
        raw.append(str(option[0]) if len(option) == 1 else f"{option[0]}={option[1]}")
    return ",".join(raw)


def tmpfs_data(mp: MountPoint) -> str:
    """The tmpfs options of a ``--mount type=tmpfs`` mount point (validated at create)."""
    return convert_tmpfs_options(mp.spec.get("TmpfsOptions"), bool(mp.spec.get("ReadOnly")))


# -- parsing ---------------------------------------------------------------------------


def _mount_point(cfg: dict[str, Any]) -> MountPoint:
    """parseMountSpec after validation."""
    kind = str(cfg.get("Type"))
    mp = MountPoint(kind, go_clean(str(cfg["Target"])), rw=not cfg.get("ReadOnly"), spec=cfg)
    if kind == "volume":
        mp.name = str(cfg.get("Source") or "")
        vol_opts = cfg.get("VolumeOptions") or {}
        mp.driver = str((vol_opts.get("DriverConfig") or {}).get("Name") or "")
        mp.copy_data = not vol_opts.get("NoCopy")
    elif kind == "bind":
        mp.source = go_clean(str(cfg["Source"]))
        mp.propagation = str((cfg.get("BindOptions") or {}).get("Propagation") or "") or DEFAULT_PROPAGATION
    return mp


def parse_mount(
    cfg: Mapping[str, Any], check_source: Callable[[str], bool] | None = _source_exists
) -> MountPoint:
    """ParseMountSpec for one ``HostConfig.Mounts`` entry; errors are 400s."""
    spec = dict(cfg)
    try:
        _check(spec, check_source)
    except _MountConfigError as err:
        raise errdefs.InvalidParameter(_config_error(spec, str(err))) from None
    mp = _mount_point(spec)
    if mp.type == "bind" and not (spec.get("BindOptions") or {}).get("CreateMountpoint"):
        mp.skip_mountpoint_creation = True
    return mp


def parse_bind(raw: str, volume_driver: str = "") -> MountPoint:
    """ParseMountRaw for one ``HostConfig.Binds`` string. dockerd returns these errors untyped (500)."""
    invalid = f"invalid volume specification: '{raw}'"
    parts = raw.split(":", 3)
    if not parts[0]:
        raise errdefs.Internal(invalid)
    spec: dict[str, Any] = {}
    mode = ""
    if len(parts) == 1:
        spec["Target"] = parts[0]
    elif len(parts) == 2:
        if valid_mode(parts[1]):
            raise errdefs.Internal(invalid)  # "/foo:rw": a mode where the destination should be
        spec["Source"], spec["Target"] = parts
    elif len(parts) == 3:
        spec["Source"], spec["Target"], mode = parts
    else:
        raise errdefs.Internal(invalid)
    if not valid_mode(mode):
        raise errdefs.Internal(f"invalid mode: {mode}")
    spec["Type"] = "bind" if str(spec.get("Source", "")).startswith("/") else "volume"
    if not read_write(mode):
        spec["ReadOnly"] = True
    if volume_driver and spec["Type"] == "volume":
        spec["VolumeOptions"] = {"DriverConfig": {"Name": volume_driver}}
    if _copy_mode(mode) is not None:
        spec.setdefault("VolumeOptions", {})["NoCopy"] = True
    propagation = _propagation(mode)
    if propagation:
        spec["BindOptions"] = {"Propagation": propagation}
    spec = {
        k: spec[k]
        for k in ("Type", "Source", "Target", "ReadOnly", "BindOptions", "VolumeOptions")
        if k in spec
    }
    try:
        _check(spec, None)
    except _MountConfigError as err:
        raise errdefs.Internal(f"{invalid}: {_config_error(spec, str(err))}") from None
    mp = _mount_point(spec)
    mp.mode = mode
    return mp


def parse_volumes_from(spec: str) -> tuple[str, str]:
    """ParseVolumesFrom: ``<container>[:mode]`` → (container, mode); errors are 400s."""
    if not spec:
        raise errdefs.InvalidParameter("volumes-from specification cannot be an empty string")
    ref, _, mode = spec.partition(":")
    if not mode:
        return ref, "rw"
    # Propagation and copy modes are refused: the volumes keep the source container's settings.
    if not valid_mode(mode) or _propagation(mode) or _copy_mode(mode) is not None:
        raise errdefs.InvalidParameter(f"invalid mode: {mode}")
    return ref, mode
