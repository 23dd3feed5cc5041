"""Composition root: the only module that names concrete stores and drivers.

``build(config)`` creates the data-root and exec-root directories and every service, each
receiving only the collaborators it needs; ``Services`` is a plain frozen record with no
behaviour (no god object). ``begin_shutdown`` is called first thing when the server starts
shutting down, so long streams end before uvicorn waits for connections; ``shutdown`` releases
the rest once the server has stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import TYPE_CHECKING

from engine.config import DaemonConfig
from engine.events import EventBus
from engine.system import SystemService

if TYPE_CHECKING:
    from engine.containers.exec import ExecService
    from engine.containers.service import ContainerService
    from engine.images.service import ImageService
    from engine.networks.service import NetworkService
    from engine.volumes.service import VolumeService
    from network.driver import NetworkDriver

log = logging.getLogger("skiff.daemon")


@dataclass(frozen=True)
class Services:
    config: DaemonConfig
    events: EventBus
    system: SystemService
    images: ImageService
    containers: ContainerService
    execs: ExecService
    volumes: VolumeService
    networks: NetworkService


def prepare_roots(config: DaemonConfig) -> None:
    # The data root is traversable but not listable by others (dockerd's 0711/0710); the exec
    # root holds runtime state and sockets and stays private.
    config.data_root.mkdir(mode=0o711, parents=True, exist_ok=True)
    config.exec_root.mkdir(mode=0o700, parents=True, exist_ok=True)


def _bridge_driver(config: DaemonConfig) -> NetworkDriver:
    from network.bridge import BridgeDriver
    from network.firewall import Firewall
    from network.reconcile import daemon_marks

    marks = daemon_marks(config.bridge, config.data_root)
    firewall = Firewall(
        chains=marks.chains, enabled=config.iptables, outbound_reject=config.outbound_reject_interface
    )
    return BridgeDriver(firewall, ip_forward=config.ip_forward, link_alias=marks.link_alias)


def _host_networks() -> list[IPv4Network]:
    from network.netlink import host_networks

    return host_networks()


def build(config: DaemonConfig) -> Services:
    # Imported here: the stores are written by other areas and only the daemon needs them all.
    import shutil

    from engine import networkids
    from engine.containers.exec import ExecService
    from engine.containers.service import ContainerService
    from engine.containers.store import ContainerStore
    from engine.images.endpoints import RegistryOptions
    from engine.images.service import ImageService
    from engine.networks.attach import ContainerNetworking
    from engine.networks.lazydriver import LazyDriver, LazySandboxes
    from engine.networks.service import NetworkService
    from engine.networks.store import NetworkStore
    from engine.volumes.service import VolumeService
    from network.host import HostDriver
    from network.ipam import DEFAULT_ADDRESS_POOLS, Ipam
    from network.null import NullDriver
    from runtime.runc import OciRuntime
    from storage.content import ContentStore
    from storage.images import ImageStore
    from storage.layers import LayerStore
    from storage.snapshots import OverlaySnapshotter
    from storage.volumes import VolumeStore

    prepare_roots(config)
    events = EventBus()
    content = ContentStore(config.data_root / "content")
    snapshotter = OverlaySnapshotter(config.data_root / "overlay")
    layers = LayerStore(content, snapshotter)
    image_store = ImageStore(config.data_root / "image", content)
    registry = RegistryOptions(config.insecure_registries, config.registry_mirrors)
    images = ImageService(image_store, layers, content, events, registry=registry)
    system = SystemService(config, images=images, events=events)
    volumes = VolumeService(VolumeStore(config.data_root / "volumes"), events)
    network_ids = networkids.load_or_create(config.data_root / "network" / "predefined.json")
    # pyroute2 (bridge driver, host routes) is imported only when a bridge network is first used.
    drivers: dict[str, NetworkDriver] = {
        "bridge": LazyDriver("bridge", lambda: _bridge_driver(config)),
        "host": HostDriver(),
        "null": NullDriver(),
    }
    networks = NetworkService(
        NetworkStore(config.data_root / "network" / "networks"),
        drivers,
        Ipam(config.default_address_pools or DEFAULT_ADDRESS_POOLS, host_networks=_host_networks),
        events,
        predefined_ids=network_ids,
        default_bridge_subnet=str(config.bip.network) if config.bip else None,
        default_bridge_address=str(config.bip.ip) if config.bip else None,
        default_bridge_name=config.bridge,
    )
    networking = ContainerNetworking(
        networks, LazySandboxes(config.exec_root / "netns"), events, daemon_dns=list(config.dns)
    )
    containers = ContainerService(
        store=ContainerStore(config.data_root / "containers"),
        images=images,
        layers=layers,
        runtime=OciRuntime(root=config.exec_root / "runc"),
        events=events,
        exec_root=config.exec_root,
        init_path=shutil.which("tini-static"),
        dns=list(config.dns),
        network_ids=network_ids,
        volumes=volumes,
        networking=networking,
    )
    volumes.set_usage_checker(containers.mounts.volume_users)
    system.container_counts = containers.counts
    images.set_usage_checker(containers.image_usage)
    execs = ExecService(containers, events)
    from engine.containers.health import ExecProbes, HealthMonitor, kill_process_tree

    # Health checks run as execs and follow each container's runs through the state hooks.
    health = HealthMonitor(
        ExecProbes(execs, kill_process_tree),
        publish=containers.publish,
        save=containers.save,
        spawn=containers.spawn,
    )
    containers.state_hooks.append(health.update)
    networks.set_containers(containers, networking)
    return Services(
        config=config,
        events=events,
        system=system,
        images=images,
        containers=containers,
        execs=execs,
        volumes=volumes,
        networks=networks,
    )


async def start(services: Services) -> None:
    """Work that needs the running loop before the API serves: container state reconciliation."""
    from engine.containers.restore import restore
    from network.reconcile import daemon_marks, reconcile

    await reconcile(daemon_marks(services.config.bridge, services.config.data_root))
    await services.networks.start()
    if services.containers.networking is not None:
        await services.containers.networking.start()
    await restore(services.containers)


def begin_shutdown(services: Services) -> None:
    """Ends ``/events`` streams and wakes every ``events.wait_closed()`` waiter (logs -f, wait).

    Containers start stopping now, while uvicorn drains connections, so that pending ``/wait``
    calls answer with the real exit codes as they do under dockerd.
    """
    services.containers.begin_shutdown()
    services.events.close()
    services.images.begin_shutdown()


async def shutdown(services: Services) -> None:
    """Every step runs even when an earlier one failed (a container that would not stop must not
    leave bridges and firewall rules behind); the first failure is raised at the end."""
    errors: list[Exception] = []

    async def step(name: str, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as exc:
            log.error("shutdown of %s failed: %s", name, exc)
            errors.append(exc)

    # Containers first: their stop publishes die/stop events while the bus still exists.
    await step("containers", services.containers.shutdown())
    begin_shutdown(services)
    await step("images", services.images.aclose())
    # After the containers: closing the drivers removes every bridge, veth and rule skiff made.
    await step("networks", services.networks.shutdown())
    if errors:
        raise errors[0]
