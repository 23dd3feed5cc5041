"""pyroute2 plumbing: thread helpers, and read-only questions about the host's own network.

pyroute2 0.9's synchronous ``IPRoute`` drives a private asyncio loop, so it cannot be used in a
thread whose event loop is running (``This event loop is already running``). Kernel work is done
in worker threads anyway; ``off_loop`` lets the read-only helpers here be called from anywhere
(they then block the caller for one netlink dump, a few milliseconds).

``host_networks`` is the IPAM's view of what is already in use on the host: every IPv4 route
(main table, default route excluded) and every interface address. That covers another engine's
bridges (a docker0 on 172.17.0.0/16, the reference dockerd's 10.213/10.214 ranges), VPNs and the
LAN, so automatic subnets never shadow them.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
from collections.abc import Callable
from ipaddress import IPv4Network
from typing import ParamSpec, TypeVar

from pyroute2 import IPRoute

T = TypeVar("T")
P = ParamSpec("P")


def run_in_thread(fn: Callable[[], T], name: str) -> T:
    """Run ``fn`` in a new thread that dies afterwards; its exception is re-raised here."""
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def off_loop(fn: Callable[P, T]) -> Callable[P, T]:
    """Run ``fn`` in a helper thread when called from a thread with a running event loop."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return fn(*args, **kwargs)
        return run_in_thread(lambda: fn(*args, **kwargs), f"netlink:{fn.__name__}")

    return wrapper


@off_loop
def host_networks() -> list[IPv4Network]:
    found: set[IPv4Network] = set()
    with IPRoute() as ipr:
        for route in ipr.get_routes(family=socket.AF_INET, table=254):
            dst, length = route.get("dst"), route["dst_len"]
            if dst and length:
                found.add(IPv4Network(f"{dst}/{length}", strict=False))
        for addr in ipr.get_addr(family=socket.AF_INET):
            address = addr.get("address")
            if address and not address.startswith("127."):
                found.add(IPv4Network(f"{address}/{addr['prefixlen']}", strict=False))
    return sorted(found)


@off_loop
def default_route_ifname() -> str | None:
    """The interface of the IPv4 default route: "the outside" for tests' REJECT rules."""
    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=socket.AF_INET):
            index = route.get("oif")
            if index:
                links = ipr.get_links(index)
                if links:
                    name = links[0].get("ifname")
                    return str(name) if name else None
    return None
