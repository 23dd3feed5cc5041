"""wiring.shutdown: the order of the steps, and that a failing step does not skip the others."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from engine import errdefs, wiring


class Recorder:
    """Each service records its calls in one shared list, so the order across services shows."""

    def __init__(self, name: str, calls: list[str], fails: str | None = None) -> None:
        self.name, self.calls, self.fails = name, calls, fails

    def _call(self, verb: str) -> None:
        self.calls.append(f"{self.name}.{verb}")
        if verb == self.fails:
            raise errdefs.Internal(f"{self.name} {verb} broke")

    def begin_shutdown(self) -> None:
        self._call("begin_shutdown")

    def close(self) -> None:
        self._call("close")

    async def shutdown(self) -> None:
        self._call("shutdown")

    async def aclose(self) -> None:
        self._call("aclose")


def services(calls: list[str], **fails: str) -> wiring.Services:
    def rec(name: str) -> Any:
        return Recorder(name, calls, fails.get(name))

    return wiring.Services(
        config=cast(Any, None),
        events=rec("events"),
        system=cast(Any, None),
        images=rec("images"),
        containers=rec("containers"),
        execs=cast(Any, None),
        volumes=cast(Any, None),
        networks=rec("networks"),
    )


ORDER = [
    "containers.shutdown",
    "containers.begin_shutdown",
    "events.close",
    "images.begin_shutdown",
    "images.aclose",
    "networks.shutdown",
]


def test_shutdown_order() -> None:
    calls: list[str] = []
    asyncio.run(wiring.shutdown(services(calls)))
    assert calls == ORDER


def test_a_failing_step_does_not_skip_the_rest() -> None:
    calls: list[str] = []
    with pytest.raises(errdefs.Internal, match="containers shutdown broke"):
        asyncio.run(wiring.shutdown(services(calls, containers="shutdown", images="aclose")))
    # The bridges and rules still go away although the containers and the registry client failed.
    assert calls == ORDER
