"""Render container records as dockerd renders them: inspect, list summaries, Status text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.containers.model import Container, parse_time


def human_duration(seconds: float) -> str:
    """Go's docker/go-units HumanDuration, which `docker ps` Status text is made of."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def _since(ts: str, now: datetime) -> str:
    t = parse_time(ts)
    return human_duration((now - t).total_seconds()) if t else "Less than a second"


def status_text(c: Container, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    st = c.state
    if st.status == "removing":
        return "Removal In Progress"
    if st.dead:
        return "Dead"
    if st.restarting:
        return f"Restarting ({st.exit_code}) {_since(st.finished_at, now)} ago"
    if st.running:
        text = "Up " + _since(st.started_at, now)
        if st.paused:
            return text + " (Paused)"
        if st.health is not None:
            h = st.health.status
            text += " (health: starting)" if h == "starting" else f" ({h})"
        return text
    if st.status == "created" or not st.has_been_started:
        return "Created"
    return f"Exited ({st.exit_code}) {_since(st.finished_at, now)} ago"


def command_text(c: Container) -> str:
    """The ps ``Command``: Path and Args, an argument with a space in single quotes (as dockerd)."""
    if not c.args:
        return c.path
    args = [f"'{a}'" if " " in a else a for a in c.args]
    return f"{c.path} {' '.join(args)}"


def ports_summary(c: Container) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ports = (c.network_settings or {}).get("Ports") or {}
    for key, bindings in ports.items():
        port, _, proto = key.partition("/")
        if not bindings:
            out.append({"PrivatePort": int(port), "Type": proto or "tcp"})
            continue
        for b in bindings:
            item: dict[str, Any] = {"PrivatePort": int(port), "Type": proto or "tcp"}
            if b.get("HostPort"):
                item["PublicPort"] = int(b["HostPort"])
            item["IP"] = b.get("HostIp") or "0.0.0.0"
            out.append(item)
    return out


def summary(c: Container, image_ref: str, size: tuple[int, int] | None = None) -> dict[str, Any]:
    networks = (c.network_settings or {}).get("Networks") or {}
    created = parse_time(c.created)
    out: dict[str, Any] = {
        "Id": c.id,
        "Names": [c.name],
        "Image": image_ref,
        "ImageID": c.image_id,
        "Command": command_text(c),
        "Created": int(created.timestamp()) if created else 0,
        "Ports": ports_summary(c),
        "Labels": c.labels,
        "State": c.state.status,
        "Status": status_text(c),
        "HostConfig": {"NetworkMode": c.host_config.get("NetworkMode") or "default"},
        "NetworkSettings": {"Networks": networks},
        "Mounts": [_mount_summary(m) for m in c.mount_points],
    }
    if size is not None:
        # omitempty in the list shape: a zero size is left out.
        for key, value in zip(("SizeRw", "SizeRootFs"), size, strict=True):
            if value:
                out[key] = value
    return out


def _mount_summary(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k in _MOUNT_KEYS}


_MOUNT_KEYS = ("Type", "Name", "Source", "Destination", "Driver", "Mode", "RW", "Propagation")


def network_settings(c: Container) -> dict[str, Any]:
    ns = dict(c.network_settings or {})
    networks = ns.get("Networks") or {}
    # dockerd fills the deprecated top-level fields from the default bridge network only.
    primary: dict[str, Any] = networks.get("bridge") or {}
    base: dict[str, Any] = {
        "Bridge": "",
        "SandboxID": ns.get("SandboxID", ""),
        "SandboxKey": ns.get("SandboxKey", ""),
        "Ports": ns.get("Ports") or {},
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": primary.get("EndpointID", ""),
        "Gateway": primary.get("Gateway", ""),
        "GlobalIPv6Address": primary.get("GlobalIPv6Address", ""),
        "GlobalIPv6PrefixLen": primary.get("GlobalIPv6PrefixLen", 0),
        "IPAddress": primary.get("IPAddress", ""),
        "IPPrefixLen": primary.get("IPPrefixLen", 0),
        "IPv6Gateway": primary.get("IPv6Gateway", ""),
        "MacAddress": primary.get("MacAddress", ""),
        "Networks": networks,
    }
    return base


def inspect(
    c: Container,
    *,
    graph_driver: dict[str, Any],
    exec_ids: list[str] | None = None,
    size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Id": c.id,
        "Created": c.created,
        "Path": c.path,
        "Args": c.args,
        "State": c.state.to_docker(),
        "Image": c.image_id,
        "ResolvConfPath": c.resolv_conf_path,
        "HostnamePath": c.hostname_path,
        "HostsPath": c.hosts_path,
        "LogPath": c.log_path,
        "Name": c.name,
        "RestartCount": c.restart_count,
        "Driver": "overlay2",
        "Platform": c.platform,
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": exec_ids or None,
        "HostConfig": c.host_config,
        "GraphDriver": graph_driver,
    }
    if size is not None:
        # Present (even when zero) only when asked for, between GraphDriver and Mounts as dockerd orders them.
        out["SizeRw"], out["SizeRootFs"] = size
    out["Mounts"] = [_mount_summary(m) for m in c.mount_points]
    out["Config"] = c.config
    out["NetworkSettings"] = network_settings(c)
    return out
