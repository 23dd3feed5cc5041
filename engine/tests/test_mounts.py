"""Parsing of Binds / Mounts / VolumesFrom and the pure helpers of engine.containers.mounts.

Error texts and status classes are the reference dockerd's (Binds errors are untyped there: 500).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from engine import errdefs
from engine.containers.mounts import (
    ContainerMounts,
    bind_spec,
    check_propagation,
    parse_mountinfo_propagation,
    with_network_files,
)
from engine.events import EventBus
from engine.volumes.mountspec import (
    MountPoint,
    convert_tmpfs_options,
    parse_bind,
    parse_mount,
    parse_volumes_from,
    read_write,
    tmpfs_data,
    valid_mode,
)
from engine.volumes.service import VolumeService
from storage.volumes import VolumeStore

# -- Binds ---------------------------------------------------------------------------


def test_bind_of_a_host_path() -> None:
    mp = parse_bind("/tmp:/a")
    assert (mp.type, mp.source, mp.destination, mp.rw, mp.mode, mp.propagation) == (
        "bind", "/tmp", "/a", True, "", "rprivate",
    )  # fmt: skip
    assert not mp.copy_data and not mp.skip_mountpoint_creation


def test_bind_with_mode_and_propagation() -> None:
    mp = parse_bind("/host//dir/:/in/../x:ro,rshared")
    assert mp.source == "/host/dir" and mp.destination == "/x"
    assert not mp.rw and mp.mode == "ro,rshared" and mp.propagation == "rshared"
    assert mp.spec == {
        "Type": "bind", "Source": "/host//dir/", "Target": "/in/../x", "ReadOnly": True,
        "BindOptions": {"Propagation": "rshared"},
    }  # fmt: skip


def test_named_and_anonymous_volumes() -> None:
    named = parse_bind("data:/data:ro,nocopy")
    assert named.type == "volume" and named.name == "data" and not named.rw
    assert not named.copy_data and not named.anonymous
    anon = parse_bind("/only-dest")
    assert anon.type == "volume" and anon.name == "" and anon.anonymous and anon.copy_data
    driver = parse_bind("v1:/x", volume_driver="local")
    assert driver.driver == "local"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("/tmp:rw", "invalid volume specification: '/tmp:rw'"),
        ("/tmp:/a:xx", "invalid mode: xx"),
        ("/tmp:/a:ro,rw", "invalid mode: ro,rw"),
        ("/tmp:/a:b:c", "invalid volume specification: '/tmp:/a:b:c'"),
        (":/a", "invalid volume specification: ':/a'"),
        ("", "invalid volume specification: ''"),
        (
            "/tmp:/",
            "invalid volume specification: '/tmp:/': invalid mount config for type \"bind\": "
            "invalid specification: destination can't be '/'",
        ),
        (
            "/tmp:rel",
            "invalid volume specification: '/tmp:rel': invalid mount config for type \"bind\": "
            "invalid mount path: 'rel' mount path must be absolute",
        ),
        (
            "/tmp:/a:nocopy",
            "invalid volume specification: '/tmp:/a:nocopy': invalid mount config for type \"bind\": "
            "field VolumeOptions must not be specified",
        ),
    ],
)
def test_bad_binds_are_dockerds_500s(raw: str, message: str) -> None:
    with pytest.raises(errdefs.Internal) as info:
        parse_bind(raw)
    assert info.value.message == message


def test_modes() -> None:
    assert valid_mode("") and valid_mode("ro") and valid_mode("rw,z,rslave,nocopy,cached")
    assert not valid_mode("ro,rw") and not valid_mode("z,Z") and not valid_mode("bogus")
    assert read_write("") and read_write("z") and not read_write("ro,z") and not read_write("bogus")


# -- Mounts --------------------------------------------------------------------------


def test_mount_volume_with_options() -> None:
    cfg = {
        "Type": "volume", "Source": "v1", "Target": "/data/",
        "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"}, "DriverConfig": {"Name": "local"}},
    }  # fmt: skip
    mp = parse_mount(cfg)
    assert (mp.type, mp.name, mp.destination, mp.driver, mp.rw) == ("volume", "v1", "/data", "local", True)
    assert not mp.copy_data and mp.spec == cfg


def test_mount_bind_skips_creation_unless_asked(tmp_path: Path) -> None:
    mp = parse_mount({"Type": "bind", "Source": str(tmp_path), "Target": "/x", "ReadOnly": True})
    assert mp.skip_mountpoint_creation and not mp.rw and mp.propagation == "rprivate"
    missing = tmp_path / "missing"
    created = parse_mount(
        {"Type": "bind", "Source": str(missing), "Target": "/x", "BindOptions": {"CreateMountpoint": True}}
    )
    assert not created.skip_mountpoint_creation


def test_mount_tmpfs_options() -> None:
    mp = parse_mount({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o700}})
    assert mp.type == "tmpfs" and mp.source == ""
    assert tmpfs_data(mp) == "mode=700,size=1m"
    assert convert_tmpfs_options({"SizeBytes": 3 << 30}, True) == "ro,size=3g"
    assert convert_tmpfs_options({"SizeBytes": 1000, "Options": [["exec"]]}, False) == "size=1000,exec"


_TMP = {"Source": "/tmp", "Target": "/a"}
_ABS = "mount path must be absolute"


@pytest.mark.parametrize(
    ("cfg", "reason"),
    [
        ({"Type": "bind", "Source": "/nonexistent-skiff-test", "Target": "/a"},
         "bind source path does not exist: /nonexistent-skiff-test"),
        ({"Type": "bind", "Source": "rel", "Target": "/a"}, f"invalid mount path: 'rel' {_ABS}"),
        ({"Type": "bind", "Target": "/a"}, "field Source must not be empty"),
        ({"Type": "bind", "Source": "/tmp"}, "field Target must not be empty"),
        ({"Type": "bind", "Source": "/tmp", "Target": "/"},
         "invalid specification: destination can't be '/'"),
        ({"Type": "bind", "Source": "/tmp", "Target": "rel"}, f"invalid mount path: 'rel' {_ABS}"),
        ({"Type": "bind", **_TMP, "BindOptions": {"Propagation": "foo"}}, "invalid propagation mode: foo"),
        ({"Type": "bind", **_TMP, "VolumeOptions": {}}, "field VolumeOptions must not be specified"),
        ({"Type": "volume", "Target": "/a", "ReadOnly": True},
         "must not set ReadOnly mode when using anonymous volumes"),
        ({"Type": "volume", "Source": "v", "Target": "/a", "BindOptions": {}},
         "field BindOptions must not be specified"),
        ({"Type": "volume", "Target": "/a", "VolumeOptions": {"Subpath": "x"}},
         "must not set Subpath when using anonymous volumes"),
        ({"Type": "volume", "Source": "v", "Target": "/a", "VolumeOptions": {"Subpath": "../x"}},
         "subpath must be a relative path within the volume"),
        ({"Type": "tmpfs", "Source": "x", "Target": "/a"}, "field Source must not be specified"),
        ({"Type": "tmpfs", "Target": "/a", "TmpfsOptions": {"Options": [["size", "1"]]}},
         "invalid option: size"),
        ({"Type": "foo", "Target": "/a"}, "mount type unknown"),
        ({"Type": "", "Target": "/a"}, "mount type unknown"),
    ],
)  # fmt: skip
def test_bad_mounts_are_dockerds_400s(cfg: dict[str, object], reason: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as info:
        parse_mount(cfg)
    assert info.value.message == f'invalid mount config for type "{cfg.get("Type")}": {reason}'


# -- VolumesFrom ---------------------------------------------------------------------


def test_volumes_from() -> None:
    assert parse_volumes_from("web") == ("web", "rw")
    assert parse_volumes_from("web:ro") == ("web", "ro")
    for bad in ("web:rshared", "web:xx", "web:nocopy"):
        with pytest.raises(errdefs.InvalidParameter, match=f"^invalid mode: {bad.split(':')[1]}$"):
            parse_volumes_from(bad)
    with pytest.raises(errdefs.InvalidParameter, match="cannot be an empty string"):
        parse_volumes_from("")


# -- records and OCI mounts ----------------------------------------------------------


def test_record_has_dockers_shape_and_round_trips() -> None:
    bind = parse_bind("/tmp:/a:ro")
    record = bind.to_record()
    assert list(record)[:6] == [
        "Type",
        "Source",
        "Destination",
        "Mode",
        "RW",
        "Propagation",
    ]  # no Name/Driver
    vol = MountPoint("volume", "/d", name="v", source="/vols/v/_data", driver="local", mode="z")
    assert list(vol.to_record())[:8] == [
        "Type",
        "Name",
        "Source",
        "Destination",
        "Driver",
        "Mode",
        "RW",
        "Propagation",
    ]
    assert MountPoint.from_record(vol.to_record()) == vol
    assert MountPoint.from_record(record) == bind


def test_bind_spec_options_follow_dockerd() -> None:
    assert bind_spec("/d", "/s", True, "") == {
        "destination": "/d",
        "type": "bind",
        "source": "/s",
        "options": ["rbind"],
    }
    assert bind_spec("/d", "/s", False, "rprivate")["options"] == ["rbind", "ro", "rprivate"]
    assert bind_spec("/d", "/s", True, "rslave", recursive=False)["options"] == ["bind", "rslave"]


def test_user_mounts_replace_network_files() -> None:
    files = [{"destination": d} for d in ("/etc/resolv.conf", "/etc/hostname", "/etc/hosts")]
    user = [{"destination": "/etc/hosts", "source": "/mine"}]
    merged = with_network_files(user, files)
    assert [m["destination"] for m in merged] == ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"]
    assert merged[0]["source"] == "/mine"


MOUNTINFO = (
    "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "30 22 0:40 / /srv rw,relatime - tmpfs tmpfs rw\n"
    "31 22 0:41 / /mnt/slave rw master:7 - tmpfs tmpfs rw\n"
    "32 22 0:42 / /with\\040space rw shared:9 - tmpfs tmpfs rw\n"
)


def test_propagation_of_the_mount_holding_a_path() -> None:
    assert parse_mountinfo_propagation(MOUNTINFO, "/srv/data") == ("/srv", set())
    assert parse_mountinfo_propagation(MOUNTINFO, "/home/x") == ("/", {"shared"})
    assert parse_mountinfo_propagation(MOUNTINFO, "/with space/x") == ("/with space", {"shared"})
    check_propagation("/home/x", "rshared", MOUNTINFO)
    check_propagation("/mnt/slave/x", "rslave", MOUNTINFO)
    check_propagation("/srv/x", "rprivate", MOUNTINFO)
    with pytest.raises(errdefs.Internal) as info:
        check_propagation("/srv/data", "shared", MOUNTINFO)
    assert info.value.message == "path /srv/data is mounted on /srv but it is not a shared mount"
    with pytest.raises(errdefs.Internal, match="is not a shared or slave mount"):
        check_propagation("/srv/data", "rslave", MOUNTINFO)


# -- docker cp's volume events --------------------------------------------------------


def test_container_view_announces_each_volume_as_dockerd(tmp_path: Path) -> None:
    bus = EventBus()
    volumes = VolumeService(VolumeStore(tmp_path / "volumes"), bus)
    mounts = ContainerMounts(volumes, store=cast(Any, None), layers=cast(Any, None), scratch=tmp_path)
    c = cast(
        Any,
        SimpleNamespace(
            id="c" * 64,
            mount_points=[
                MountPoint("volume", "/data", rw=False, name="v1", propagation="").to_record(),
                MountPoint("bind", "/b", source=str(tmp_path)).to_record(),
                MountPoint("volume", "/w", name="v2").to_record(),
            ],
        ),
    )
    mounts.announce_view(c)
    mounts.announce_view_closed(c)
    seen = [(e.action, e.actor_id, dict(e.attributes)) for e in bus._ring]
    assert seen == [
        (
            "mount",
            "v1",
            {
                "driver": "local",
                "container": c.id,
                "destination": "/data",
                "propagation": "",
                "read/write": "false",
            },
        ),
        (
            "mount",
            "v2",
            {
                "driver": "local",
                "container": c.id,
                "destination": "/w",
                "propagation": "",
                "read/write": "true",
            },
        ),
        ("unmount", "v1", {"driver": "local", "container": c.id}),
        ("unmount", "v2", {"driver": "local", "container": c.id}),
    ]
    ContainerMounts(None, store=cast(Any, None), layers=cast(Any, None), scratch=tmp_path).announce_view(c)
