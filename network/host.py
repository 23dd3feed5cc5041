"""HostDriver: the ``host`` network. Containers share the daemon's network namespace, so the engine
gives them no sandbox of their own; the driver has nothing to build and publishes no ports."""

from __future__ import annotations

from network.null import NullDriver


class HostDriver(NullDriver):
    name = "host"
