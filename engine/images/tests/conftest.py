"""An ImageService on real storage in a temp dir, with an event recorder and a fake usage checker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine.images.service import ImageService
from storage.content import ContentStore
from storage.images import ImageStore
from storage.layers import LayerStore
from storage.snapshots import OverlaySnapshotter

T = TypeVar("T")


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, dict[str, str]]] = []

    def publish(
        self, type: str, action: str, actor_id: str, attributes: dict[str, str] | None = None
    ) -> None:
        self.events.append((type, action, actor_id, dict(attributes or {})))

    def actions(self) -> list[str]:
        return [action for _, action, _, _ in self.events]


@dataclass
class Env:
    root: Path
    content: ContentStore
    layers: LayerStore
    store: ImageStore
    events: Recorder
    service: ImageService
    usage: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)

    def snapshots(self) -> list[str]:
        return sorted(info.name for info in self.layers.snapshotter.walk())

    def blobs(self) -> list[str]:
        return list(self.content.walk())

    def reopen(self) -> ImageService:
        self.content = ContentStore(self.root / "content")
        self.layers = LayerStore(self.content, OverlaySnapshotter(self.root / "overlay"))
        self.store = ImageStore(self.root / "image", self.content)
        self.service = ImageService(self.store, self.layers, self.content, self.events)  # type: ignore[arg-type]
        self.service.set_usage_checker(lambda image_id: self.usage.get(image_id, []))
        return self.service


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path, None, None, None, Recorder(), None)  # type: ignore[arg-type]
    e.reopen()
    yield e


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _chunks(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def load(service: ImageService, data: bytes, quiet: bool = True) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        return [m async for m in await service.load(_chunks(data), quiet=quiet)]

    return run(go())


def save(service: ImageService, names: list[str]) -> bytes:
    async def go() -> bytes:
        return b"".join([c async for c in await service.export(names)])

    return run(go())


def import_(service: ImageService, data: bytes, **kwargs: Any) -> str:
    kwargs.setdefault("src", "-")
    return run(service.import_image(_chunks(data), **kwargs))
