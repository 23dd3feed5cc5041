"""The per-container files dockerd bind-mounts: /etc/hostname, /etc/hosts, /etc/resolv.conf.

Written into the container's own directory so that a container can never touch the host's
copies; the networking code rewrites hosts/resolv.conf when endpoints change.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from storage.jsonfile import atomic_write_bytes

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def container_hostname(cid: str, config: dict[str, Any], host_config: dict[str, Any]) -> str:
    if host_config.get("NetworkMode") == "host" and not config.get("Hostname"):
        return socket.gethostname()
    return str(config.get("Hostname") or cid[:12])


HOST_GATEWAY = "host-gateway"


def hosts_content(
    hostname: str,
    ip: str | None,
    extra_hosts: list[str] | None,
    *,
    domainname: str = "",
    host_gateway: str | None = None,
) -> str:
    """dockerd's /etc/hosts: the fixed header, ``--add-host`` entries (``host-gateway`` standing for the
    default bridge's address), then the container's own address with its names."""
    lines = [HOSTS_HEADER]
    for entry in extra_hosts or []:
        # --add-host arrives as "name:ip" (or "name=ip" from newer clients).
        sep = "=" if "=" in entry else ":"
        name, _, addr = entry.partition(sep)
        if addr == HOST_GATEWAY and host_gateway:
            addr = host_gateway
        lines.append(f"{addr}\t{name}\n")
    if ip:
        names = f"{hostname}.{domainname} {hostname}" if domainname else hostname
        lines.append(f"{ip}\t{names}\n")
    return "".join(lines)


def resolv_conf_content(
    host_resolv: str, dns: list[str], search: list[str], options: list[str], *, embedded: str | None = None
) -> str:
    """dockerd's rules: explicit --dns wins; host loopback nameservers are dropped (unreachable
    from the container's namespace), and with none left there is no nameserver line at all,
    so nothing is ever sent to a resolver we did not choose. With the embedded DNS server
    (``embedded``, its address), it is the only nameserver and ``ndots:0`` is added unless the
    container sets ndots itself; the --dns servers become its upstreams instead."""
    if embedded:
        dns = []
    nameservers = list(dns)
    host_search: list[str] = []
    host_options: list[str] = []
    for line in host_resolv.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        if fields[0] == "nameserver" and len(fields) > 1 and not dns:
            if not fields[1].startswith("127.") and fields[1] != "::1":
                nameservers.append(fields[1])
        elif fields[0] == "search":
            host_search = fields[1:]
        elif fields[0] == "options":
            host_options = fields[1:]
    if embedded:
        nameservers = [embedded]
    chosen_options = list(options or host_options)
    if embedded and not any(o.startswith("ndots:") for o in chosen_options):
        chosen_options.append("ndots:0")
    out = [f"nameserver {ns}\n" for ns in nameservers]
    if search or host_search:
        out.append("search " + " ".join(search or host_search) + "\n")
    if chosen_options:
        out.append("options " + " ".join(chosen_options) + "\n")
    return "".join(out)


def write_container_files(
    cdir: Path,
    hostname: str,
    host_config: dict[str, Any],
    daemon_dns: list[str],
    *,
    ip: str | None = None,
    domainname: str = "",
    embedded_dns: str | None = None,
    host_gateway: str | None = None,
    in_place: bool = False,
) -> tuple[Path, Path, Path]:
    """``in_place``: rewrite the existing files of a running container instead of replacing them;
    they are bind-mounted, so a renamed-over file would never be seen inside."""
    hostname_path, hosts_path, resolv_path = cdir / "hostname", cdir / "hosts", cdir / "resolv.conf"
    write = _write_in_place if in_place else atomic_write_bytes
    write(hostname_path, f"{hostname}\n".encode(), 0o644)
    if host_config.get("NetworkMode") == "host":
        hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else HOSTS_HEADER
    else:
        hosts = hosts_content(
            hostname, ip, host_config.get("ExtraHosts"), domainname=domainname, host_gateway=host_gateway
        )
    write(hosts_path, hosts.encode(), 0o644)
    try:
        host_resolv = Path("/etc/resolv.conf").read_text()
    except OSError:
        host_resolv = ""
    resolv = resolv_conf_content(
        host_resolv,
        list(host_config.get("Dns") or daemon_dns),
        list(host_config.get("DnsSearch") or []),
        list(host_config.get("DnsOptions") or []),
        embedded=embedded_dns,
    )
    write(resolv_path, resolv.encode(), 0o644)
    return hostname_path, hosts_path, resolv_path


def _write_in_place(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def bind_mounts(
    hostname_path: Path, hosts_path: Path, resolv_path: Path, readonly: bool
) -> list[dict[str, Any]]:
    opts = ["rbind", "rprivate"] + (["ro"] if readonly else [])
    return [
        {"destination": "/etc/resolv.conf", "type": "bind", "source": str(resolv_path), "options": opts},
        {"destination": "/etc/hostname", "type": "bind", "source": str(hostname_path), "options": opts},
        {"destination": "/etc/hosts", "type": "bind", "source": str(hosts_path), "options": opts},
    ]
