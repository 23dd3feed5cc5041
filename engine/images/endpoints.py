"""Where a registry is reached: the endpoints dockerd would try for a registry host.

docker.io means ``https://registry-1.docker.io``, preceded for pulls by any ``--registry-mirror``.
Plain HTTP is allowed only for loopback hosts (127.0.0.0/8, ::1, ``localhost``) and
``--insecure-registry`` entries (``host:port`` or a CIDR), and only after HTTPS (unverified, as
for every insecure registry) failed, as dockerd does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import urllib.parse
from dataclasses import dataclass

from engine import errdefs
from engine.images.reference import DEFAULT_DOMAIN
from engine.images.regerrors import is_loopback, split_host

__all__ = ["Endpoint", "RegistryOptions", "endpoints", "is_insecure", "is_loopback", "registry_host"]

OFFICIAL_HOST = "registry-1.docker.io"
INDEX_NAMES = {DEFAULT_DOMAIN, "index.docker.io", "registry-1.docker.io"}


@dataclass(frozen=True)
class RegistryOptions:
    insecure_registries: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """One registry location; ``urls`` are tried in order at the ping (HTTPS, then HTTP if allowed)."""

    urls: tuple[str, ...]
    verify: bool = True
    mirror: bool = False


def is_insecure(hostport: str, options: RegistryOptions) -> bool:
    if is_loopback(hostport):
        return True
    host = split_host(hostport)
    for entry in options.insecure_registries:
        if entry == hostport:  # "host:port" as given; a port-less entry matches the port-less name only
            return True
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
    return False


def registry_host(server_address: str) -> str:
    """dockerd's parseRegistryHostName for ``POST /auth``: a host[:port]; docker.io when empty."""
    if not server_address:
        return DEFAULT_DOMAIN
    text = server_address if "://" in server_address else "https://" + server_address
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise errdefs.InvalidParameter(
            f'invalid server address "{text}": unsupported URL scheme "{parts.scheme}": '
            'must be "http" or "https"'
        )
    host = parts.netloc
    return DEFAULT_DOMAIN if host in INDEX_NAMES else host


def endpoints(domain: str, options: RegistryOptions, *, mirrors: bool) -> list[Endpoint]:
    if domain in INDEX_NAMES:
        out = [Endpoint((m.rstrip("/"),), True, True) for m in options.mirrors] if mirrors else []
        return [*out, Endpoint((f"https://{OFFICIAL_HOST}",))]
    if is_insecure(domain, options):
        return [Endpoint((f"https://{domain}", f"http://{domain}"), verify=False)]
    return [Endpoint((f"https://{domain}",))]
