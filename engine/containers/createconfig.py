"""Turn a create request into the record dockerd would store: validation and image defaults.

Pure functions; dockerd's texts for every refusal (daemon/create.go, runconfig, container
HostConfig validation) because the CLI prints them verbatim.
"""

from __future__ import annotations

from typing import Any

from engine import errdefs
from engine.containers.security import READONLY_PATHS, default_masked_paths
from engine.containers.spec import replace_or_append_env

RESTART_POLICIES = ("", "no", "always", "unless-stopped", "on-failure")
DEFAULT_ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HEALTHCHECK_FIELDS = ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")


def validate_host_config(hc: dict[str, Any]) -> None:
    policy = hc.get("RestartPolicy") or {}
    name = policy.get("Name") or ""
    count = policy.get("MaximumRetryCount") or 0
    if name not in RESTART_POLICIES:
        raise errdefs.InvalidParameter(
            f"invalid restart policy: unknown policy '{name}'; use one of "
            "'no', 'always', 'on-failure', or 'unless-stopped'"
        )
    if count < 0:
        raise errdefs.InvalidParameter(
            "invalid restart policy: maximum retry count must be a positive number"
        )
    if count and name != "on-failure":
        raise errdefs.InvalidParameter(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'"
        )
    if hc.get("AutoRemove") and name not in ("", "no"):
        raise errdefs.InvalidParameter("can't create 'AutoRemove' container with restart policy")
    for key in ("Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares", "PidsLimit"):
        value = hc.get(key)
        if value is not None and not isinstance(value, int):
            raise errdefs.InvalidParameter(f"invalid {key}: {value!r}")
    memory, swap = hc.get("Memory") or 0, hc.get("MemorySwap") or 0
    if memory and memory < 6 * 1024 * 1024:
        raise errdefs.InvalidParameter("Minimum memory limit allowed is 6MB")
    if swap > 0 and memory and swap < memory:
        raise errdefs.InvalidParameter(
            "Minimum memoryswap limit should be larger than memory limit, see usage"
        )
    if swap > 0 and not memory:
        raise errdefs.InvalidParameter(
            "You should always set the Memory limit when using Memoryswap limit, see usage"
        )
    if hc.get("NanoCpus") and (hc.get("CpuQuota") or hc.get("CpuPeriod")):
        raise errdefs.InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")


def merge_image_config(config: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """dockerd's merge (daemon/commit.go merge): unset container fields take the image's value."""
    out = dict(config)
    out["Env"] = replace_or_append_env(list(image.get("Env") or []), list(config.get("Env") or []))
    if not out["Env"]:
        out["Env"] = [DEFAULT_ENV_PATH]
    if not config.get("Entrypoint"):
        out["Entrypoint"] = image.get("Entrypoint")
        if not config.get("Cmd"):
            out["Cmd"] = image.get("Cmd")
    for key in ("WorkingDir", "User", "StopSignal", "Healthcheck", "OnBuild", "Shell"):
        if not config.get(key) and image.get(key):
            out[key] = image[key]
    if image.get("Healthcheck") and config.get("Healthcheck"):
        merged = dict(image["Healthcheck"])
        merged.update({k: v for k, v in config["Healthcheck"].items() if v})
        out["Healthcheck"] = merged
    healthcheck = out.get("Healthcheck")
    if isinstance(healthcheck, dict):
        # Go's HealthConfig: its own fields only, each omitempty (a raw API client may send zeros).
        out["Healthcheck"] = {k: healthcheck[k] for k in HEALTHCHECK_FIELDS if healthcheck.get(k)}
    for key in ("ExposedPorts", "Volumes"):
        combined = dict(image.get(key) or {})
        combined.update(config.get(key) or {})
        out[key] = combined or None
    if not out["ExposedPorts"]:
        del out["ExposedPorts"]  # omitempty in Go's container.Config; Volumes is not
    labels = dict(image.get("Labels") or {})
    labels.update(config.get("Labels") or {})
    out["Labels"] = labels
    return out


def fill_defaults(config: dict[str, Any], host_config: dict[str, Any], *, cgroup_v2: bool = False) -> None:
    """The keys dockerd always has in inspect output even when the client omitted them."""
    config.setdefault("Hostname", "")
    config.setdefault("Domainname", "")
    config.setdefault("User", "")
    for key in ("AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin", "StdinOnce"):
        config[key] = bool(config.get(key))
    config.setdefault("WorkingDir", "")
    config.setdefault("Labels", {})
    host_config.setdefault("NetworkMode", "bridge")
    if host_config.get("NetworkMode") == "default":
        host_config["NetworkMode"] = "bridge"
    host_config.setdefault("RestartPolicy", {"Name": "no", "MaximumRetryCount": 0})
    if not host_config["RestartPolicy"].get("Name"):
        host_config["RestartPolicy"] = {"Name": "no", "MaximumRetryCount": 0}
    host_config.setdefault("LogConfig", {"Type": "json-file", "Config": {}})
    if not host_config["LogConfig"].get("Type"):
        log_opts = host_config["LogConfig"].get("Config") or {}
        host_config["LogConfig"] = {"Type": "json-file", "Config": log_opts}
    host_config["AutoRemove"] = bool(host_config.get("AutoRemove"))
    host_config["Privileged"] = bool(host_config.get("Privileged"))
    host_config["ReadonlyRootfs"] = bool(host_config.get("ReadonlyRootfs"))
    host_config.setdefault("ShmSize", 64 * 1024 * 1024)
    if not host_config["ShmSize"]:
        host_config["ShmSize"] = 64 * 1024 * 1024
    host_config.setdefault("Runtime", "runc")
    if not host_config.get("Runtime"):
        host_config["Runtime"] = "runc"
    # dockerd records its daemon-wide defaults at create, so inspect shows them.
    if not host_config.get("IpcMode"):
        host_config["IpcMode"] = "private"
    if not host_config.get("CgroupnsMode"):
        host_config["CgroupnsMode"] = "private" if cgroup_v2 else "host"
    if host_config.get("MemorySwappiness") == -1:
        host_config["MemorySwappiness"] = None  # -1 is the CLI's "unset"
    if not host_config["Privileged"]:
        if host_config.get("MaskedPaths") is None:
            host_config["MaskedPaths"] = list(default_masked_paths())
        if host_config.get("ReadonlyPaths") is None:
            host_config["ReadonlyPaths"] = list(READONLY_PATHS)
