"""engine.containers.spec: the OCI config.json builder, user lookup, caps, devices (no root needed,
except the runc smoke test marked privileged)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import errdefs
from engine.containers import caps, devices, security, specmounts, userlookup
from engine.containers.devices import DeviceSpec
from engine.containers.resources import parse_device_cgroup_rule
from engine.containers.spec import (
    ResolvedUser,
    build_spec,
    daemon_environment,
    exec_process_spec,
    parse_process_args,
    replace_or_append_env,
    resolve_user,
)

ROOT = ResolvedUser(0, 0, (0,))
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def spec(config: dict[str, Any] | None = None, hc: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    cfg = {"Cmd": ["sh"], **(config or {})}
    host = {"CgroupnsMode": "host", **(hc or {})}
    kw.setdefault("rootfs", "/rootfs")
    kw.setdefault("user", ROOT)
    kw.setdefault("hostname", "abc123")
    kw.setdefault("cgroups_path", "/skiff/abc")
    result = build_spec(cfg, host, **kw)
    json.dumps(result)  # always serialisable as config.json
    return result


def mounts_by_dest(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["destination"]: m for m in s["mounts"]}


def ns_types(s: dict[str, Any]) -> list[str]:
    return [n["type"] for n in s["linux"]["namespaces"]]


# --- process: args, env, cwd, tty -------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"Cmd": ["echo", "hi"]}, ["echo", "hi"]),
        ({"Entrypoint": ["/ep"], "Cmd": ["a", "b"]}, ["/ep", "a", "b"]),
        ({"Entrypoint": ["/ep", "-x"], "Cmd": None}, ["/ep", "-x"]),
        ({"Entrypoint": [], "Cmd": ["sh"]}, ["sh"]),
        ({"Entrypoint": "/ep", "Cmd": "arg"}, ["/ep", "arg"]),
    ],
)
def test_parse_process_args(config: dict[str, Any], expected: list[str]) -> None:
    assert parse_process_args(config) == expected


def test_parse_process_args_empty_is_invalid() -> None:
    with pytest.raises(errdefs.InvalidParameter, match=r"^No command specified$"):
        parse_process_args({"Entrypoint": None, "Cmd": []})


@pytest.mark.parametrize(
    ("env", "tty", "expected"),
    [
        ([], False, [DEFAULT_PATH, "HOSTNAME=h"]),
        ([], True, [DEFAULT_PATH, "HOSTNAME=h", "TERM=xterm"]),
        (["PATH=/bin", "A=1"], False, ["PATH=/bin", "HOSTNAME=h", "A=1"]),
        (["TERM=vt100"], True, [DEFAULT_PATH, "HOSTNAME=h", "TERM=vt100"]),
        (["HOSTNAME"], False, [DEFAULT_PATH]),  # a bare key unsets
        (["A=1", "A=2"], False, [DEFAULT_PATH, "HOSTNAME=h", "A=1", "A=2"]),
    ],
)
def test_daemon_environment(env: list[str], tty: bool, expected: list[str]) -> None:
    assert daemon_environment({"Env": env}, "h", tty) == expected


@given(st.lists(st.from_regex(r"[A-Z]{1,3}=[a-z]{0,3}", fullmatch=True), max_size=8))
def test_replace_or_append_env_keeps_last_value_per_default_key(overrides: list[str]) -> None:
    defaults = ["A=0", "B=0"]
    out = replace_or_append_env(defaults, overrides)
    for key in ("A", "B"):
        last = [o for o in overrides if o.partition("=")[0] == key]
        expected = last[-1] if last else f"{key}=0"
        assert [e for e in out if e.partition("=")[0] == key][:1] == [expected]
    assert out[:2] == [e for e in out if e.partition("=")[0] in ("A", "B")][:2]


def test_process_defaults() -> None:
    s = spec({"Cmd": ["sh", "-c", "true"]})
    p = s["process"]
    assert s["ociVersion"] == "1.0.2"
    assert p["args"] == ["sh", "-c", "true"]
    assert p["cwd"] == "/"
    assert p["env"] == [DEFAULT_PATH, "HOSTNAME=abc123"]
    assert p["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert p["oomScoreAdj"] == 0
    assert "terminal" not in p and "rlimits" not in p and "noNewPrivileges" not in p
    assert s["hostname"] == "abc123"
    assert s["root"] == {"path": "/rootfs"}
    assert s["linux"]["cgroupsPath"] == "/skiff/abc"
    assert "seccomp" not in s["linux"]  # known gap, see spec.py docstring


def test_tty_workdir_console_size_oom_score() -> None:
    s = spec({"Tty": True, "WorkingDir": "/work"}, {"ConsoleSize": [24, 80], "OomScoreAdj": -500})
    p = s["process"]
    assert p["terminal"] is True
    assert p["consoleSize"] == {"height": 24, "width": 80}
    assert p["cwd"] == "/work"
    assert p["env"][-1] == "TERM=xterm"
    assert p["oomScoreAdj"] == -500
    assert "consoleSize" not in spec({"Tty": True}, {"ConsoleSize": [0, 0]})["process"]
    assert "consoleSize" not in spec({"Tty": False}, {"ConsoleSize": [24, 80]})["process"]


def test_user_and_domainname() -> None:
    s = spec({"Domainname": "example.com"}, user=ResolvedUser(1000, 50, (50, 65534)))
    assert s["process"]["user"] == {"uid": 1000, "gid": 50, "additionalGids": [50, 65534]}
    assert s["linux"]["sysctl"]["kernel.domainname"] == "example.com"
    assert "additionalGids" not in spec(user=ResolvedUser(5, 5))["process"]["user"]


# --- capabilities -------------------------------------------------------------------------------

AVAILABLE = list(caps.KNOWN_CAPABILITIES)


@pytest.mark.parametrize(
    ("adds", "drops", "expected"),
    [
        (None, None, list(caps.DEFAULT_CAPABILITIES)),
        (["net_admin"], None, [*caps.DEFAULT_CAPABILITIES, "CAP_NET_ADMIN"]),
        (["CAP_SYS_TIME", "Sys_Nice"], None, [*caps.DEFAULT_CAPABILITIES, "CAP_SYS_TIME", "CAP_SYS_NICE"]),
        (
            None,
            ["chown", "CAP_MKNOD"],
            [c for c in caps.DEFAULT_CAPABILITIES if c not in ("CAP_CHOWN", "CAP_MKNOD")],
        ),
        (["net_admin"], ["all"], ["CAP_NET_ADMIN"]),
        (None, ["ALL"], []),
        (["ALL"], ["sys_admin"], [c for c in AVAILABLE if c != "CAP_SYS_ADMIN"]),
        (["ALL"], None, AVAILABLE),
    ],
)
def test_tweak_capabilities(adds: list[str] | None, drops: list[str] | None, expected: list[str]) -> None:
    got = caps.tweak_capabilities(caps.DEFAULT_CAPABILITIES, adds, drops, False, available=AVAILABLE)
    assert got == expected


def test_tweak_capabilities_privileged_is_everything_available() -> None:
    assert caps.tweak_capabilities(caps.DEFAULT_CAPABILITIES, ["x"], ["y"], True, available=["CAP_KILL"]) == [
        "CAP_KILL"
    ]


@pytest.mark.parametrize(
    ("adds", "message"),
    [
        (["foo"], 'unknown capability: "CAP_FOO"'),
        (["CAP_NOPE"], 'unknown capability: "CAP_NOPE"'),
        (
            ["sys_admin"],
            "capability not supported by your kernel or not available in the current environment: "
            '"CAP_SYS_ADMIN"',
        ),
    ],
)
def test_normalize_capabilities_errors(adds: list[str], message: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        caps.normalize_capabilities(adds, available=["CAP_CHOWN"])
    assert exc.value.message == message


def test_validate_capabilities_wraps_with_field_name() -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        caps.validate_capabilities(["foo"], None)
    assert exc.value.message == 'invalid CapAdd: unknown capability: "CAP_FOO"'
    with pytest.raises(errdefs.InvalidParameter) as exc:
        caps.validate_capabilities(None, ["bar"])
    assert exc.value.message == 'invalid CapDrop: unknown capability: "CAP_BAR"'
    caps.validate_capabilities(["chown", "ALL"], ["all"])


def test_cap_eff_parsing() -> None:
    status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\n"
    assert caps.capabilities_from_mask(caps.parse_cap_eff(status) or 0) == tuple(
        sorted(caps.DEFAULT_CAPABILITIES, key=caps.KNOWN_CAPABILITIES.index)
    )
    assert caps.parse_cap_eff("CapEff:\tzz\n") is None
    assert set(caps.current_capabilities()) <= set(caps.KNOWN_CAPABILITIES)


def test_capabilities_in_spec_root_and_non_root() -> None:
    root = spec(hc={"CapDrop": ["ALL"], "CapAdd": ["chown"]})["process"]["capabilities"]
    assert root == {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]}
    # execve() as non-root clears effective/permitted, so dockerd sets only the bounding set.
    other = spec(user=ResolvedUser(1000, 1000, (1000,)))["process"]["capabilities"]
    assert other == {"bounding": list(caps.DEFAULT_CAPABILITIES)}


def test_unknown_capability_at_start_is_internal() -> None:
    with pytest.raises(errdefs.Internal, match='unknown capability: "CAP_FOO"'):
        spec(hc={"CapAdd": ["foo"]})


# --- privileged, read-only, masked paths -------------------------------------------------------


def test_default_masked_and_readonly_paths_and_devices() -> None:
    s = spec()
    lin = s["linux"]
    assert lin["maskedPaths"][:3] == ["/proc/acpi", "/proc/asound", "/proc/interrupts"]
    assert "/sys/firmware" in lin["maskedPaths"] and "/proc/kcore" in lin["maskedPaths"]
    assert lin["readonlyPaths"] == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    assert "devices" not in lin
    rules = lin["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert [(r["major"], r["minor"], r["allow"]) for r in rules[1:]] == [
        (1, 5, True), (1, 3, True), (1, 9, True), (1, 8, True), (5, 0, True), (5, 1, True), (10, 229, False),
    ]  # fmt: skip


def test_privileged() -> None:
    host_devs = [DeviceSpec("/dev/sda", "b", 8, 0, 0o660, 0, 6)]
    s = spec(hc={"Privileged": True, "CapDrop": ["ALL"]}, devices=host_devs)
    lin = s["linux"]
    assert s["process"]["capabilities"]["effective"] == list(caps.current_capabilities())
    assert "maskedPaths" not in lin and "readonlyPaths" not in lin
    assert lin["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert lin["devices"] == [
        {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0, "fileMode": 0o660, "uid": 0, "gid": 6}
    ]
    m = mounts_by_dest(s)
    assert "ro" not in m["/sys"]["options"]
    assert "ro" not in m["/sys/fs/cgroup"]["options"]


def test_masked_paths_from_host_config_win() -> None:
    s = spec(hc={"MaskedPaths": ["/proc/x"], "ReadonlyPaths": []})
    assert s["linux"]["maskedPaths"] == ["/proc/x"]
    assert "readonlyPaths" not in s["linux"]


def test_read_only_rootfs() -> None:
    user_bind = {"destination": "/data", "type": "bind", "source": "/v", "options": ["rbind", "rprivate"]}
    s = spec(
        hc={"ReadonlyRootfs": True, "Init": True}, init_path="/usr/bin/tini-static", extra_mounts=[user_bind]
    )
    assert s["root"] == {"path": "/rootfs", "readonly": True}
    m = mounts_by_dest(s)
    for dest in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"):
        assert "ro" not in m[dest]["options"], dest
    for dest in ("/sys", "/sys/fs/cgroup", "/sbin/docker-init"):
        assert m[dest]["options"].count("ro") == 1, dest
    assert "ro" not in m["/data"]["options"]  # user mounts keep their own mode
    priv = mounts_by_dest(spec(hc={"ReadonlyRootfs": True, "Privileged": True}))
    assert "ro" not in priv["/sys"]["options"]


def test_writable_cgroups_security_opt() -> None:
    m = mounts_by_dest(spec(hc={"SecurityOpt": ["writable-cgroups=true"]}))
    assert "ro" not in m["/sys/fs/cgroup"]["options"]
    assert "ro" in m["/sys"]["options"]


# --- mounts: defaults, tmpfs, shm, replacement ---------------------------------------------------


def test_default_mounts_exact() -> None:
    assert spec()["mounts"] == [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["ro", "nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
        },
    ]


@pytest.mark.parametrize(
    ("hc", "shm"),
    [
        ({}, "size=67108864"),
        ({"ShmSize": 1 << 30}, "size=1073741824"),
        ({"IpcMode": "shareable", "ShmSize": 1024}, "size=1024"),
    ],
)
def test_shm_size(hc: dict[str, Any], shm: str) -> None:
    assert mounts_by_dest(spec(hc=hc))["/dev/shm"]["options"][-1] == shm


def test_ipc_none_and_host() -> None:
    assert "/dev/shm" not in mounts_by_dest(spec(hc={"IpcMode": "none"}))
    host = spec(hc={"IpcMode": "host"})
    assert mounts_by_dest(host)["/dev/shm"] == {
        "destination": "/dev/shm",
        "type": "bind",
        "source": "/dev/shm",
        "options": ["rbind", "rprivate"],
    }
    assert "ipc" not in ns_types(host)


@pytest.mark.parametrize(
    ("data", "options"),
    [
        ("", ["noexec", "nosuid", "nodev", "rprivate"]),
        ("size=1m,mode=700,exec", ["nosuid", "nodev", "rprivate", "size=1m", "mode=700", "exec"]),
        ("rw,size=1m,size=2m,suid", ["noexec", "nodev", "rprivate", "rw", "size=2m", "suid"]),
        ("shared,defaults", ["noexec", "nosuid", "nodev", "shared"]),
    ],
)
def test_tmpfs_options(data: str, options: list[str]) -> None:
    m = mounts_by_dest(spec(hc={"Tmpfs": {"/run": data}}))["/run"]
    assert m == {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": options}


@pytest.mark.parametrize(
    ("data", "message"), [("foo", 'invalid tmpfs option ["foo"]'), ("x=1", 'invalid tmpfs option ["x" "1"]')]
)
def test_tmpfs_invalid_option(data: str, message: str) -> None:
    with pytest.raises(errdefs.Internal) as exc:
        spec(hc={"Tmpfs": {"/run": data}})
    assert exc.value.message == message


def test_tmpfs_on_dev_shm_replaces_default_and_sorting_by_depth() -> None:
    extra = [
        {"destination": "/etc/hosts", "type": "bind", "source": "/h", "options": ["rbind", "rprivate"]},
        {"destination": "/data/sub", "type": "bind", "source": "/s", "options": ["rbind"]},
        {"destination": "/data", "type": "bind", "source": "/d", "options": ["rbind"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": "/r", "options": ["rbind"]},
    ]
    s = spec(hc={"Tmpfs": {"/dev/shm": "size=1m", "/run": ""}}, extra_mounts=extra)
    dests = [m["destination"] for m in s["mounts"]]
    assert dests == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/mqueue",
        "/run",
        "/data",
        "/dev/shm",
        "/etc/hosts",
        "/data/sub",
        "/etc/resolv.conf",
    ]  # fmt: skip (stable by depth: equal depths keep tmpfs-then-engine order)
    assert mounts_by_dest(s)["/dev/shm"]["options"] == ["noexec", "nosuid", "nodev", "rprivate", "size=1m"]


def test_extra_mount_replaces_default_on_same_destination() -> None:
    proc = {"destination": "/proc", "type": "bind", "source": "/myproc", "options": ["rbind"]}
    s = spec(extra_mounts=[proc])
    procs = [m for m in s["mounts"] if m["destination"] == "/proc"]
    assert procs == [proc]
    assert s["mounts"][-1] == proc  # user mounts come after the defaults


def test_user_dev_mount_drops_every_default_under_dev() -> None:
    dev = {"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"]}
    dests = [m["destination"] for m in spec(extra_mounts=[dev])["mounts"]]
    assert dests == ["/proc", "/sys", "/sys/fs/cgroup", "/dev"]


def test_extra_mounts_are_not_mutated_and_propagation() -> None:
    extra = [{"destination": "/x", "type": "bind", "source": "/x", "options": ["rbind", "rslave"]}]
    snapshot = json.dumps(extra)
    s = spec(hc={"ReadonlyRootfs": True}, extra_mounts=extra)
    assert json.dumps(extra) == snapshot
    assert s["linux"]["rootfsPropagation"] == "rslave"
    assert "rootfsPropagation" not in spec()["linux"]


def test_merge_tmpfs_options_last_wins() -> None:
    assert specmounts.merge_tmpfs_options(["noexec", "exec", "rprivate", "shared", "mode=1", "mode=2"]) == [
        "exec",
        "shared",
        "mode=2",
    ]


# --- init -----------------------------------------------------------------------------------------


def test_init() -> None:
    s = spec({"Entrypoint": ["/ep"], "Cmd": ["x"]}, {"Init": True}, init_path="/usr/bin/tini-static")
    assert s["process"]["args"] == ["/sbin/docker-init", "--", "/ep", "x"]
    assert mounts_by_dest(s)["/sbin/docker-init"] == {
        "destination": "/sbin/docker-init",
        "type": "bind",
        "source": "/usr/bin/tini-static",
        "options": ["bind", "ro"],
    }
    # The init mount belongs to the defaults: it precedes user mounts.
    dests = [m["destination"] for m in spec(hc={"Init": True, "Tmpfs": {"/a": ""}}, init_path="/i")["mounts"]]
    assert dests.index("/sbin/docker-init") < dests.index("/a")


def test_no_init_without_flag_or_with_host_pid() -> None:
    assert spec(init_path="/i")["process"]["args"] == ["sh"]
    s = spec(hc={"Init": True, "PidMode": "host"}, init_path="/i")
    assert s["process"]["args"] == ["sh"]
    assert "/sbin/docker-init" not in mounts_by_dest(s)


def test_init_requested_without_binary() -> None:
    with pytest.raises(errdefs.Internal, match='exec: "docker-init": executable file not found'):
        spec(hc={"Init": True})


# --- rlimits, security opts --------------------------------------------------------------------


def test_ulimits() -> None:
    s = spec(
        hc={
            "Ulimits": [
                {"Name": "nofile", "Soft": 1024, "Hard": 2048},
                {"Name": "core", "Soft": -1, "Hard": -1},
            ]
        }
    )
    assert s["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024},
        {"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 2**64 - 1},
    ]


@pytest.mark.parametrize(
    ("opts", "nnp"),
    [
        (["no-new-privileges"], True),
        (["no-new-privileges:true"], True),
        (["no-new-privileges=1"], True),
        (["no-new-privileges=false"], False),
        (["label=disable", "apparmor=unconfined", "seccomp=unconfined"], False),
    ],
)
def test_no_new_privileges(opts: list[str], nnp: bool) -> None:
    assert spec(hc={"SecurityOpt": opts})["process"].get("noNewPrivileges", False) is nnp


@pytest.mark.parametrize(
    ("opt", "message"),
    [
        ("no-new-privileges:bogus", 'invalid --security-opt 2: "no-new-privileges:bogus"'),
        ("foo", 'invalid --security-opt 1: "foo"'),
        ("foo=bar", 'invalid --security-opt 2: "foo=bar"'),
    ],
)
def test_security_opt_errors(opt: str, message: str) -> None:
    with pytest.raises(errdefs.Internal) as exc:
        security.parse_security_opt([opt])
    assert exc.value.message == message


# --- sysctls ------------------------------------------------------------------------------------

RUNC = (
    "failed to create task for container: failed to create shim task: "
    "OCI runtime create failed: runc create failed: "
)


def test_sysctls_defaults_and_overrides() -> None:
    s = spec(
        hc={
            "Sysctls": {
                "net.ipv4.ip_forward": "1",
                "kernel.msgmax": "65536",
                "net.ipv4.ping_group_range": "1 1",
            }
        }
    )
    assert s["linux"]["sysctl"] == {
        "kernel.msgmax": "65536",
        "net.ipv4.ip_forward": "1",
        "net.ipv4.ip_unprivileged_port_start": "0",
        "net.ipv4.ping_group_range": "1 1",
    }
    assert list(s["linux"]["sysctl"]) == sorted(s["linux"]["sysctl"])


@pytest.mark.parametrize(
    ("hc", "netns"),
    [({"NetworkMode": "host"}, "host"), ({"NetworkMode": "container:abc"}, "/proc/1/ns/net")],
)
def test_no_default_sysctls_when_sharing_a_network_namespace(hc: dict[str, Any], netns: str) -> None:
    assert "sysctl" not in spec(hc=hc, netns_path=netns)["linux"]


@pytest.mark.parametrize(
    ("hc", "netns", "reason"),
    [
        (
            {"Sysctls": {"net.ipv4.ip_forward": "1"}},
            "host",
            'sysctl "net.ipv4.ip_forward" not allowed in host network namespace',
        ),
        (
            {"Sysctls": {"vm.swappiness": "1"}},
            None,
            'sysctl "vm.swappiness" is not in a separate kernel namespace',
        ),
        ({"Sysctls": {"kernel.foo": "1"}}, None, 'sysctl "kernel.foo" is not in a separate kernel namespace'),
        (
            {"Sysctls": {"kernel.hostname": "x"}},
            None,
            'sysctl "kernel.hostname" is not allowed as it conflicts with the OCI "hostname" field',
        ),
        (
            {"Sysctls": {"fs.mqueue.msg_max": "5"}, "IpcMode": "host"},
            None,
            'sysctl "fs.mqueue.msg_max" is not allowed in the hosts ipc namespace',
        ),
    ],
)
def test_sysctl_refusals(hc: dict[str, Any], netns: str | None, reason: str) -> None:
    with pytest.raises(errdefs.Internal) as exc:
        spec(hc=hc, netns_path=netns)
    assert exc.value.message == RUNC + reason + ": unknown"


def test_sysctls_allowed_in_own_namespaces() -> None:
    s = spec(
        hc={
            "Sysctls": {"net.core.somaxconn": "1024", "fs.mqueue.msg_max": "5", "kernel.shm_rmid_forced": "1"}
        },
        netns_path="/run/skiff/netns/abc",
    )
    assert s["linux"]["sysctl"]["net.core.somaxconn"] == "1024"


# --- namespaces --------------------------------------------------------------------------------


def test_namespaces() -> None:
    assert spec()["linux"]["namespaces"] == [
        {"type": "mount"}, {"type": "network"}, {"type": "uts"}, {"type": "pid"}, {"type": "ipc"},
    ]  # fmt: skip
    joined = spec(netns_path="/run/skiff/netns/x")["linux"]["namespaces"]
    assert joined[1] == {"type": "network", "path": "/run/skiff/netns/x"}
    assert ns_types(spec(netns_path="host")) == ["mount", "uts", "pid", "ipc"]
    assert ns_types(spec(hc={"PidMode": "host"})) == ["mount", "network", "uts", "ipc"]
    assert ns_types(spec(hc={"CgroupnsMode": "private"}))[-1] == "cgroup"
    uts_host = spec(hc={"UTSMode": "host"})
    assert "uts" not in ns_types(uts_host) and "hostname" not in uts_host


@pytest.mark.parametrize(
    ("hc", "error"),
    [
        ({"PidMode": "container:abc"}, errdefs.NotImplemented_),
        ({"IpcMode": "bogus"}, errdefs.Internal),
        ({"UTSMode": "bogus"}, errdefs.Internal),
        ({"CgroupnsMode": "bogus"}, errdefs.Internal),
    ],
)
def test_namespace_mode_errors(hc: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        spec(hc=hc)


# --- resources ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hc", "key", "expected"),
    [
        ({"NanoCpus": 1_500_000_000}, "cpu", {"quota": 150000, "period": 100000}),
        ({"NanoCpus": 10_000_000}, "cpu", {"quota": 1000, "period": 100000}),
        ({"CpuQuota": 50000, "CpuPeriod": 200000}, "cpu", {"quota": 50000, "period": 200000}),
        (
            {"CpuShares": 512, "CpusetCpus": "0-1", "CpusetMems": "0"},
            "cpu",
            {"shares": 512, "cpus": "0-1", "mems": "0"},
        ),
        ({"Memory": 64 << 20}, "memory", {"limit": 64 << 20, "swap": 128 << 20}),
        ({"Memory": 64 << 20, "MemorySwap": -1}, "memory", {"limit": 64 << 20}),
        ({"Memory": 64 << 20, "MemorySwap": 100 << 20}, "memory", {"limit": 64 << 20, "swap": 100 << 20}),
        (
            {"MemoryReservation": 32 << 20, "OomKillDisable": False},
            "memory",
            {"reservation": 32 << 20, "disableOOMKiller": False},
        ),
        ({"MemorySwappiness": 10}, "memory", {"swappiness": 10}),
        ({"PidsLimit": 50}, "pids", {"limit": 50}),
        ({"PidsLimit": 0}, "pids", {"limit": -1}),
        ({"PidsLimit": -5}, "pids", {"limit": -1}),
        ({"BlkioWeight": 300}, "blockIO", {"weight": 300}),
    ],
)
def test_resources(hc: dict[str, Any], key: str, expected: dict[str, Any]) -> None:
    assert spec(hc=hc)["linux"]["resources"][key] == expected


def test_resources_defaults_omit_empty_parts() -> None:
    res = spec(hc={"MemorySwappiness": -1, "PidsLimit": None})["linux"]["resources"]
    assert set(res) == {"devices", "blockIO"}
    assert res["blockIO"] == {"weight": 0}


def test_negative_cpu_shares() -> None:
    with pytest.raises(
        errdefs.Internal, match=r"^invalid CPU shares \(-2\): value must be a positive integer$"
    ):
        spec(hc={"CpuShares": -2})


def test_devices_and_cgroup_rules() -> None:
    fuse = DeviceSpec("/dev/myfuse", "c", 10, 229, 0o600, 0, 0, "rw")
    s = spec(hc={"DeviceCgroupRules": ["c 42:* rmw", "a"]}, devices=[fuse])
    assert s["linux"]["devices"] == [
        {"path": "/dev/myfuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o600, "uid": 0, "gid": 0}
    ]
    assert s["linux"]["resources"]["devices"][-3:] == [
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"},
        {"allow": True, "type": "c", "major": 42, "minor": -1, "access": "rmw"},
        {"allow": True, "type": "a", "major": -1, "minor": -1, "access": "rwm"},
    ]
    with pytest.raises(errdefs.Internal, match=r"^invalid device cgroup rule format: 'c 1:3'$"):
        parse_device_cgroup_rule("c 1:3")


def test_annotations() -> None:
    assert spec(hc={"Annotations": {"a": "b"}})["annotations"] == {"a": "b"}
    assert "annotations" not in spec()


# --- exec ---------------------------------------------------------------------------------------


def test_exec_process_spec() -> None:
    config = {"Cmd": ["sh"], "Env": ["A=1", "B=2"], "WorkingDir": "/srv", "Hostname": "abc123", "Tty": True}
    base = spec(
        config, {"Ulimits": [{"Name": "nofile", "Soft": 1, "Hard": 2}], "SecurityOpt": ["no-new-privileges"]}
    )
    before = json.dumps(base)
    p = exec_process_spec(base, cmd=["ls", "-l"], env=["B=3", "C=4"], config=config)
    assert json.dumps(base) == before
    assert p["args"] == ["ls", "-l"]
    assert p["env"] == [DEFAULT_PATH, "HOSTNAME=abc123", "A=1", "B=3", "C=4"]  # TERM only with an exec tty
    assert p["cwd"] == "/srv"
    assert "terminal" not in p
    assert p["user"] == base["process"]["user"]
    assert p["capabilities"] == base["process"]["capabilities"]
    assert p["rlimits"] == base["process"]["rlimits"] and p["noNewPrivileges"] is True


def test_exec_process_spec_tty_user_privileged_workdir() -> None:
    base = spec()
    p = exec_process_spec(
        base,
        cmd=["id"],
        user=ResolvedUser(1000, 1000, (1000, 10)),
        workdir="/tmp",
        tty=True,
        privileged=True,
        config={"Cmd": ["sh"]},
        console_size=[30, 100],
    )
    assert p["terminal"] is True and p["consoleSize"] == {"height": 30, "width": 100}
    assert p["env"] == [DEFAULT_PATH, "HOSTNAME=abc123", "TERM=xterm"]
    assert p["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 10]}
    assert p["cwd"] == "/tmp"
    every = list(caps.current_capabilities())
    assert p["capabilities"] == {"bounding": every, "effective": every, "permitted": every}
    assert exec_process_spec(base, cmd=["x"], config={})["cwd"] == "/"
    with pytest.raises(errdefs.InvalidParameter):
        exec_process_spec(base, cmd=[], config={})


# --- user resolution ---------------------------------------------------------------------------

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
  alice:x:1000:1000::/home/alice:/bin/sh

bob:x:1001:bad::/home/bob:/bin/sh
# a comment
"""
GROUP = """root:x:0:
wheel:x:10:root,alice
staff:x:50:alice
alice:x:1000:
nogroup:x:65534:
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


@pytest.mark.parametrize(
    ("user", "group_add", "expected"),
    [
        ("", (), ResolvedUser(0, 0, (0, 10))),
        ("root", (), ResolvedUser(0, 0, (0, 10))),
        ("alice", (), ResolvedUser(1000, 1000, (1000, 10, 50))),
        ("1000", (), ResolvedUser(1000, 1000, (1000, 10, 50))),
        ("alice:staff", (), ResolvedUser(1000, 50, (50,))),  # explicit group: no supplementary groups
        ("alice:7", (), ResolvedUser(1000, 7, (7,))),
        ("1234", (), ResolvedUser(1234, 0, (0,))),  # numeric uid needs no entry
        ("1234:5678", ("77",), ResolvedUser(1234, 5678, (5678, 77))),
        ("bob", (), ResolvedUser(1001, 0, (0,))),  # Go ignores a bad number and uses 0
        ("daemon", ("staff", "nogroup", "50", "99"), ResolvedUser(1, 1, (1, 50, 65534, 99))),
    ],
)
def test_resolve_user(rootfs: Path, user: str, group_add: tuple[str, ...], expected: ResolvedUser) -> None:
    assert resolve_user(user, rootfs, group_add) == expected


@pytest.mark.parametrize(
    ("user", "group_add", "message"),
    [
        ("nope", (), "unable to find user nope: no matching entries in passwd file"),
        ("alice:nogrp", (), "unable to find group nogrp: no matching entries in group file"),
        ("1234:nogrp", (), "unable to find group nogrp: no matching entries in group file"),
        ("1234", ("nogrp",), "Unable to find group nogrp: no matching entries in group file"),
        ("1234", ("staff", "staff"), "Unable to find group staff: no matching entries in group file"),
        ("-1", (), "uids and gids must be in range 0-2147483647"),
        ("1:2147483648", (), "uids and gids must be in range 0-2147483647"),
    ],
)
def test_resolve_user_errors(rootfs: Path, user: str, group_add: tuple[str, ...], message: str) -> None:
    # Internal (500): dockerd resolves the user in createSpec, whose errors are all "system" errors.
    with pytest.raises(errdefs.Internal) as exc:
        resolve_user(user, rootfs, group_add)
    assert exc.value.message == message


def test_resolve_user_without_passwd_or_group(tmp_path: Path) -> None:
    assert resolve_user("", tmp_path) == ResolvedUser(0, 0, (0,))
    assert resolve_user("5:6", tmp_path, ["7"]) == ResolvedUser(5, 6, (6, 7))
    with pytest.raises(errdefs.Internal, match="unable to find user app"):
        resolve_user("app", tmp_path)
    assert resolve_user("", tmp_path / "missing") == ResolvedUser(0, 0, (0,))


def test_resolve_user_follows_symlinks_inside_rootfs(rootfs: Path) -> None:
    # An absolute link means the container's /etc/shadow, never the host's.
    (rootfs / "etc" / "shadow").write_text("shadowy:x:7:8::/:/bin/sh\n")
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to("/etc/shadow")
    assert resolve_user("shadowy", rootfs) == ResolvedUser(7, 8, (8,))
    # A relative link through a directory link, both within the rootfs.
    (rootfs / "real").mkdir()
    (rootfs / "real" / "group").write_text("grp:x:99:\n")
    (rootfs / "etc" / "group").unlink()
    (rootfs / "etc" / "group").symlink_to("../lnk/group")
    (rootfs / "lnk").symlink_to("/real")
    assert resolve_user("7:grp", rootfs) == ResolvedUser(7, 99, (99,))


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A rootfs whose databases point outside it; the outside holds a tempting user."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("evil:x:4242:4242::/:/bin/sh\n")
    (outside / "group").write_text("evilgrp:x:4343:evil\n")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    return root


@pytest.mark.parametrize(
    "link",
    [
        "../../outside/passwd",  # relative escape: ".." stops at the rootfs
        "../../../../../../../../{outside}/passwd",
        "{outside}/passwd",  # an absolute host path is read relative to the rootfs
    ],
)
def test_hostile_passwd_link_never_leaves_rootfs(hostile: Path, link: str) -> None:
    outside = hostile.parent / "outside"
    (hostile / "etc" / "passwd").symlink_to(link.format(outside=str(outside).lstrip("/")))
    assert userlookup.read_file_in_root(hostile, "etc/passwd") is None
    with pytest.raises(
        errdefs.Internal, match=r"^unable to find user evil: no matching entries in passwd file$"
    ):
        resolve_user("evil", hostile)


def test_hostile_etc_directory_link(hostile: Path) -> None:
    outside = hostile.parent / "outside"
    (hostile / "etc").rmdir()
    (hostile / "etc").symlink_to(outside)  # absolute: means <rootfs><outside>, which does not exist
    assert userlookup.read_file_in_root(hostile, "etc/passwd") is None
    assert resolve_user("", hostile, ["4343"]) == ResolvedUser(0, 0, (0, 4343))


def test_hostile_link_to_host_etc_passwd_loops(hostile: Path) -> None:
    # /etc/passwd -> ../../../etc/passwd resolves to itself inside the rootfs: a loop, not the host file.
    (hostile / "etc" / "passwd").symlink_to("../../../../../../../etc/passwd")
    with pytest.raises(errdefs.Internal, match="too many links"):
        resolve_user("daemon", hostile)


def test_hostile_non_regular_databases(hostile: Path) -> None:
    os.mkfifo(hostile / "etc" / "passwd")  # must not block
    (hostile / "etc" / "group").mkdir()
    assert userlookup.read_file_in_root(hostile, "etc/passwd") is None
    assert userlookup.read_file_in_root(hostile, "etc/group") is None
    assert userlookup.read_file_in_root(hostile, "etc/group/x") is None
    assert resolve_user("12:34", hostile) == ResolvedUser(12, 34, (34,))


# --- devices -----------------------------------------------------------------------------------


def test_device_from_path() -> None:
    [null] = devices.device_from_path("/dev/null", "/dev/null2", "rwm")
    assert (null.path, null.type, null.major, null.minor) == ("/dev/null2", "c", 1, 3)
    assert null.file_mode == 0o666


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/dev/nope-skiff", "no such file or directory"), ("/etc/passwd", "not a device node")],
)
def test_device_from_path_errors(path: str, reason: str) -> None:
    with pytest.raises(errdefs.Internal) as exc:
        devices.device_from_path(path, path, "rwm")
    assert (
        exc.value.message
        == f'error gathering device information while adding custom device "{path}": {reason}'
    )


def test_host_devices_skips_fifos_files_and_links(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_text("x")
    (tmp_path / "null").symlink_to("/dev/null")
    (tmp_path / "pts").mkdir()
    assert devices.host_devices(str(tmp_path)) == []


def test_resolve_devices() -> None:
    hc = {"Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/n", "CgroupPermissions": "rw"}]}
    [dev] = devices.resolve_devices(hc)
    assert dev.path == "/dev/n" and dev.permissions == "rw"


# --- runc smoke test ----------------------------------------------------------------------------


@pytest.fixture
def runc_bundle() -> Iterator[tuple[Path, Path, str]]:
    """A bundle dir with a busybox-static rootfs, a private runc --root, and a unique id."""
    if os.geteuid() != 0 or not shutil.which("runc") or not os.path.exists("/usr/bin/busybox"):
        pytest.skip("needs root, runc and busybox-static")
    tmp = Path(tempfile.mkdtemp(prefix="skiff-spec-"))
    state = tmp / "state"
    container_id = f"skiff-spec-{uuid.uuid4().hex[:12]}"
    try:
        (tmp / "bundle" / "rootfs" / "bin").mkdir(parents=True)
        shutil.copy2("/usr/bin/busybox", tmp / "bundle" / "rootfs" / "bin" / "busybox")
        (tmp / "bundle" / "rootfs" / "bin" / "sh").symlink_to("busybox")
        yield tmp / "bundle", state, container_id
    finally:
        subprocess.run(
            ["runc", "--root", str(state), "delete", "--force", container_id],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.privileged
@pytest.mark.parametrize(
    ("hc", "init", "expected_caps"),
    [
        ({}, False, "00000000a80425fb"),  # exactly Docker's 14 default capabilities
        (
            {"Init": True, "ReadonlyRootfs": True, "CapDrop": ["ALL"], "Tmpfs": {"/run": ""}},
            True,
            "0000000000000000",
        ),
    ],
)
def test_runc_runs_generated_spec(
    runc_bundle: tuple[Path, Path, str], hc: dict[str, Any], init: bool, expected_caps: str
) -> None:
    bundle, state, container_id = runc_bundle
    init_path = shutil.which("tini-static") if init else None
    if init and not init_path:
        pytest.skip("needs tini-static")
    script = (
        "echo ok; /bin/busybox hostname; /bin/busybox grep CapEff /proc/self/status; /bin/busybox ps -o comm"
    )
    s = build_spec(
        {"Cmd": ["/bin/sh", "-c", script]},
        {"CgroupnsMode": "host", **hc},
        rootfs=str(bundle / "rootfs"),
        user=ROOT,
        hostname="skiffbox",
        cgroups_path=f"/{container_id}",
        init_path=init_path,
    )
    (bundle / "config.json").write_text(json.dumps(s))
    proc = subprocess.run(
        ["runc", "--root", str(state), "run", "--bundle", str(bundle), container_id],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["ok", "skiffbox"]
    assert lines[2].split() == ["CapEff:", expected_caps]
    assert ("docker-init" in lines[3:]) is init
