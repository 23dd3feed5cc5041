"""Pure OCI runtime-spec (config.json) builder that reproduces what dockerd 28 hands to runc.

Inputs are the container's Docker Config and HostConfig (already merged with image defaults)
plus facts the engine resolved beforehand (rootfs path, user, hostname, netns, cgroup path,
host devices, extra mounts), so nothing here touches the host except two cached facts that
dockerd also reads from it: the daemon's own capability set and whether cgroup v2 is in use.

Deliberate differences from dockerd, all kernel-neutral:
- no seccomp profile: dockerd embeds its ~400-syscall default profile; runc applies none when
  the field is absent, so containers here are less confined than under dockerd (known gap);
- no AppArmor/SELinux labels (the hosts skiff targets run without them), no libnetwork hook
  (the engine prepares the network namespace before `runc create`);
- NIS domainname goes through the ``kernel.domainname`` sysctl, as dockerd does, because the
  runc packaged here predates the spec's ``domainname`` field.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine import errdefs
from engine.containers import caps, security, specmounts
from engine.containers.devices import DeviceSpec
from engine.containers.resources import linux_resources
from engine.containers.userlookup import ResolvedUser, resolve_user

__all__ = [
    "OCI_VERSION",
    "DeviceSpec",
    "ResolvedUser",
    "build_spec",
    "daemon_environment",
    "exec_process_spec",
    "parse_process_args",
    "replace_or_append_env",
    "resolve_user",
]

OCI_VERSION = "1.0.2"
DEFAULT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_U64 = (1 << 64) - 1


def _str_slice(value: Any) -> list[str]:
    # The API's StrSlice accepts a bare string as a one-element list.
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def parse_process_args(config: Mapping[str, Any]) -> list[str]:
    """Entrypoint + Cmd: a non-empty Entrypoint runs with Cmd as its arguments, else Cmd alone."""
    args = _str_slice(config.get("Entrypoint")) + _str_slice(config.get("Cmd"))
    if not args:
        raise errdefs.InvalidParameter("No command specified")
    return args


def replace_or_append_env(defaults: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """Moby's ReplaceOrAppendEnvValues: same key replaces in place, bare ``KEY`` unsets, rest appends."""
    env: list[str | None] = list(defaults)
    index = {e.partition("=")[0]: i for i, e in enumerate(defaults)}
    for value in overrides:
        key, eq, _ = value.partition("=")
        if not eq:
            if key in index:
                env[index[key]] = None
            continue
        if key in index:
            env[index[key]] = value
        else:
            env.append(value)
    return [e for e in env if e]


def daemon_environment(config: Mapping[str, Any], hostname: str, tty: bool) -> list[str]:
    """PATH (Docker's default), HOSTNAME, TERM=xterm with a tty, then Config.Env over them."""
    defaults = [f"PATH={DEFAULT_PATH_ENV}", f"HOSTNAME={hostname}"] + (["TERM=xterm"] if tty else [])
    return replace_or_append_env(defaults, _str_slice(config.get("Env")))


@functools.cache
def _cgroup_v2() -> bool:
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def _mode(host_config: Mapping[str, Any], key: str) -> str:
    return str(host_config.get(key) or "")


def _namespaces(hc: Mapping[str, Any], netns_path: str | None) -> list[dict[str, str]]:
    ns: list[dict[str, str]] = [{"type": "mount"}]
    if netns_path != "host":
        ns.append({"type": "network", "path": netns_path} if netns_path else {"type": "network"})
    uts, pid, ipc = _mode(hc, "UTSMode"), _mode(hc, "PidMode"), _mode(hc, "IpcMode")
    if uts not in ("", "host"):
        raise errdefs.Internal(f"invalid UTS mode: {uts}")
    if uts != "host":
        ns.append({"type": "uts"})
    for kind, mode, private in (("pid", pid, ("",)), ("ipc", ipc, ("", "private", "shareable", "none"))):
        if mode.startswith("container:"):
            raise errdefs.NotImplemented_(
                f"sharing the {kind.upper()} namespace of another container is not supported"
            )
        if mode not in (*private, "host"):
            raise errdefs.Internal(f"invalid {kind.upper()} mode: {mode}")
        if mode != "host":
            ns.append({"type": kind})
    cgroupns = _mode(hc, "CgroupnsMode")
    if cgroupns not in ("", "host", "private"):
        raise errdefs.Internal(f"invalid cgroup namespace mode: {cgroupns}")
    if not cgroupns:
        # dockerd's default (normally stored at create): private on cgroup v2, host on v1.
        cgroupns = "private" if _cgroup_v2() else "host"
    if cgroupns == "private":
        ns.append({"type": "cgroup"})
    return ns


def _console_size(size: Sequence[int] | None) -> dict[str, int] | None:
    """HostConfig.ConsoleSize is [height, width]; dockerd sets the box only when one is non-zero."""
    height, width = (*(size or ()), 0, 0)[:2]
    return {"height": int(height), "width": int(width)} if height or width else None


def _rlimits(ulimits: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    # Only what --ulimit asks for; everything else is inherited from the daemon, as with dockerd.
    return [
        {
            "type": "RLIMIT_" + str(u["Name"]).upper(),
            "hard": int(u.get("Hard") or 0) & _U64,
            "soft": int(u.get("Soft") or 0) & _U64,
        }
        for u in ulimits or ()
    ]


def _sysctls(
    config: Mapping[str, Any],
    hc: Mapping[str, Any],
    netns_path: str | None,
    namespaces: Sequence[Mapping[str, str]],
) -> dict[str, str]:
    sysctl: dict[str, str] = {}
    if config.get("Domainname"):
        sysctl["kernel.domainname"] = str(config["Domainname"])
    network_mode = _mode(hc, "NetworkMode")
    if netns_path != "host" and network_mode != "host" and not network_mode.startswith("container:"):
        sysctl.update(security.default_sysctls())
    sysctl.update({str(k): str(v) for k, v in (hc.get("Sysctls") or {}).items()})
    types = {n["type"] for n in namespaces}
    security.validate_sysctls(sysctl, ipc_ns="ipc" in types, net_ns="network" in types, uts_ns="uts" in types)
    return dict(sorted(sysctl.items()))  # Go marshals maps with sorted keys


def build_spec(
    config: dict[str, Any],
    host_config: dict[str, Any],
    *,
    rootfs: str,
    user: ResolvedUser,
    hostname: str,
    extra_mounts: Sequence[dict[str, Any]] = (),
    netns_path: str | None = None,
    cgroups_path: str,
    init_path: str | None = None,
    devices: Sequence[DeviceSpec] = (),
) -> dict[str, Any]:
    """config.json for one container start; raises errdefs.Internal where dockerd's start fails (500).

    ``devices`` is the whole linux.devices list: for --privileged the engine passes every host
    node (devices.resolve_devices does both cases). ``netns_path``: None = new empty namespace,
    "host" = share the host's, else a path to join.
    """
    hc = host_config
    privileged = bool(hc.get("Privileged"))
    tty = bool(config.get("Tty"))
    secopts = security.parse_security_opt(hc.get("SecurityOpt"))
    namespaces = _namespaces(hc, netns_path)

    args = parse_process_args(config)
    use_init = bool(hc.get("Init")) and _mode(hc, "PidMode") == ""  # only as pid 1 of its own namespace
    if use_init:
        if not init_path:
            raise errdefs.Internal('exec: "docker-init": executable file not found in $PATH')
        args = [specmounts.INIT_PATH_IN_CONTAINER, "--", *args]

    try:
        caplist = caps.tweak_capabilities(
            caps.DEFAULT_CAPABILITIES, hc.get("CapAdd"), hc.get("CapDrop"), privileged
        )
    except errdefs.InvalidParameter as err:
        raise errdefs.Internal(err.message) from err  # create validated them; now it is the daemon's fault

    process: dict[str, Any] = {}
    if tty:
        process["terminal"] = True
        box = _console_size(hc.get("ConsoleSize"))
        if box:
            process["consoleSize"] = box
    process["user"] = user.to_oci()
    process["args"] = args
    process["env"] = daemon_environment(config, hostname, tty)
    process["cwd"] = str(config.get("WorkingDir") or "/")
    process["capabilities"] = caps.capability_sets(caplist, user.uid)
    rlimits = _rlimits(hc.get("Ulimits"))
    if rlimits:
        process["rlimits"] = rlimits
    if secopts.no_new_privileges:
        process["noNewPrivileges"] = True
    process["oomScoreAdj"] = int(hc.get("OomScoreAdj") or 0)

    root: dict[str, Any] = {"path": rootfs}
    if hc.get("ReadonlyRootfs"):
        root["readonly"] = True

    user_mounts = [*specmounts.tmpfs_mounts(hc.get("Tmpfs")), *extra_mounts]
    mounts = specmounts.assemble_mounts(
        user_mounts=user_mounts,
        init_path=init_path if use_init else None,
        shm_size=int(hc.get("ShmSize") or 0),
        ipc_mode=_mode(hc, "IpcMode"),
        readonly_root=bool(hc.get("ReadonlyRootfs")),
        privileged=privileged,
        writable_cgroups=bool(secopts.writable_cgroups),
    )

    linux: dict[str, Any] = {}
    sysctl = _sysctls(config, hc, netns_path, namespaces)
    if sysctl:
        linux["sysctl"] = sysctl
    linux["resources"] = linux_resources(hc, devices, privileged)
    linux["cgroupsPath"] = cgroups_path
    linux["namespaces"] = namespaces
    if devices:
        linux["devices"] = [d.to_oci() for d in devices]
    propagation = specmounts.rootfs_propagation(extra_mounts)
    if propagation:
        linux["rootfsPropagation"] = propagation
    masked = (
        list(hc["MaskedPaths"])
        if hc.get("MaskedPaths") is not None
        else ([] if privileged else list(security.default_masked_paths()))
    )
    readonly = (
        list(hc["ReadonlyPaths"])
        if hc.get("ReadonlyPaths") is not None
        else ([] if privileged else list(security.READONLY_PATHS))
    )
    if masked:
        linux["maskedPaths"] = masked
    if readonly:
        linux["readonlyPaths"] = readonly

    spec: dict[str, Any] = {"ociVersion": OCI_VERSION, "process": process, "root": root}
    if "uts" in {n["type"] for n in namespaces}:
        spec["hostname"] = hostname  # runc refuses a hostname without its own UTS namespace
    spec["mounts"] = mounts
    if hc.get("Annotations"):
        spec["annotations"] = {str(k): str(v) for k, v in hc["Annotations"].items()}
    spec["linux"] = linux
    return spec


def exec_process_spec(
    base_spec: Mapping[str, Any],
    *,
    cmd: Sequence[str],
    env: Sequence[str] = (),
    user: ResolvedUser | None = None,
    workdir: str = "",
    tty: bool = False,
    privileged: bool = False,
    config: Mapping[str, Any],
    console_size: Sequence[int] | None = None,
) -> dict[str, Any]:
    """process.json for ``runc exec --process`` with docker exec semantics.

    Starts from the container's process (capabilities, rlimits, noNewPrivileges, oomScoreAdj
    carry over); env is PATH/HOSTNAME/TERM defaults, then the container's Config.Env, then the
    exec's Env; workdir falls back to the container's WorkingDir then "/"; ``user`` None keeps
    the container's user (the engine resolves ``-u`` with resolve_user, GroupAdd included);
    privileged grants every capability in all three sets.
    """
    if not cmd:
        raise errdefs.InvalidParameter("No exec command specified")
    process = copy.deepcopy(dict(base_spec["process"]))
    hostname = str(config.get("Hostname") or base_spec.get("hostname") or "")
    process["args"] = list(cmd)
    process["env"] = replace_or_append_env(daemon_environment(config, hostname, tty), list(env))
    process["cwd"] = workdir or str(config.get("WorkingDir") or "") or "/"
    process.pop("terminal", None)
    process.pop("consoleSize", None)
    if tty:
        process["terminal"] = True
        box = _console_size(console_size)
        if box:
            process["consoleSize"] = box
    if user is not None:
        process["user"] = user.to_oci()
    if privileged:
        every = list(caps.current_capabilities())
        process["capabilities"] = {"bounding": every, "effective": list(every), "permitted": list(every)}
    return process


def resolve_user_for(config: Mapping[str, Any], host_config: Mapping[str, Any], rootfs: Path) -> ResolvedUser:
    """Convenience: the container's own user (Config.User + HostConfig.GroupAdd)."""
    return resolve_user(str(config.get("User") or ""), rootfs, _str_slice(host_config.get("GroupAdd")))
