"""The default bridge network as the daemon's -b and --bip flags shape it (NetworkService over fakes)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from engine.events import EventBus
from engine.networks.service import NetworkService
from engine.networks.store import NetworkStore
from network.fake import FakeDriver
from network.ipam import Ipam

PREDEFINED = {"bridge": "b" * 64, "host": "c" * 64, "none": "d" * 64}


def service(root: Path, **kwargs: Any) -> NetworkService:
    drivers = {"bridge": FakeDriver(), "host": FakeDriver("host"), "null": FakeDriver("null")}
    return NetworkService(
        NetworkStore(root), drivers, Ipam(), EventBus(), predefined_ids=PREDEFINED, **kwargs
    )


async def bridge_view(svc: NetworkService) -> tuple[str, list[dict[str, Any]]]:
    view = await svc.inspect("bridge")
    return view["Options"]["com.docker.network.bridge.name"], view["IPAM"]["Config"]


def test_bip_and_bridge_name_and_their_changes_across_restarts(tmp_path: Path) -> None:
    async def body() -> None:
        svc = service(
            tmp_path, default_bridge_subnet="172.30.0.0/16", default_bridge_address="172.30.0.5",
            default_bridge_name="skiffx",
        )  # fmt: skip
        await svc.start()
        assert await bridge_view(svc) == ("skiffx", [{"Subnet": "172.30.0.0/16", "Gateway": "172.30.0.5"}])

        # Same flags: the stored record is kept as it was.
        again = service(
            tmp_path, default_bridge_subnet="172.30.0.0/16", default_bridge_address="172.30.0.5",
            default_bridge_name="skiffx",
        )  # fmt: skip
        await again.start()
        assert (await again.inspect("bridge"))["Created"] == (await svc.inspect("bridge"))["Created"]

        # A new --bip wins over the stored record, as dockerd re-makes its bridge at each start.
        moved = service(
            tmp_path, default_bridge_subnet="10.99.0.0/24", default_bridge_address="10.99.0.1",
            default_bridge_name="skiffx",
        )  # fmt: skip
        await moved.start()
        assert await bridge_view(moved) == ("skiffx", [{"Subnet": "10.99.0.0/24", "Gateway": "10.99.0.1"}])

        # No --bip and the default name: an automatic subnet on skiff0; then kept across a restart.
        plain = service(tmp_path)
        await plain.start()
        name, config = await bridge_view(plain)
        assert name == "skiff0" and config[0]["Subnet"] == "172.17.0.0/16"
        plain2 = service(tmp_path)
        await plain2.start()
        assert await bridge_view(plain2) == ("skiff0", config)

    asyncio.run(asyncio.wait_for(body(), 30))


def test_bridge_none_has_no_default_bridge(tmp_path: Path) -> None:
    async def body() -> None:
        svc = service(tmp_path, default_bridge_name=None)
        await svc.start()
        assert sorted(n["Name"] for n in await svc.list()) == ["host", "none"]
        # A later start with a bridge gets it back under the same ID.
        back = service(tmp_path)
        await back.start()
        assert (await back.inspect("bridge"))["Id"] == PREDEFINED["bridge"]

    asyncio.run(asyncio.wait_for(body(), 30))
