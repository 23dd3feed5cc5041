"""What pulls and pushes share: the ``Distribution`` context, blob download, and dockerd's retries.

``download_blob`` streams a blob into the content store through an ingest writer that verifies
size and digest on commit, so nothing unverified ever lands there; progress is dockerd's
``Downloading`` / ``Verifying Checksum`` / ``Download complete``. ``retrying`` repeats a transfer
as dockerd's transfer manager does (5 attempts, ``Retrying in N seconds``) unless the failure is a
refusal that another attempt cannot change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from engine import errdefs
from engine.images import manifest as mf
from engine.images import progress
from engine.images.progress import Message, ProgressMeter
from engine.images.regerrors import RegistryError, TransportError, UnexpectedResponse, transport_error
from engine.images.registry import RegistryClient, Repository
from engine.images.repo import ImageRepo
from engine.images.sources import BlobSources
from engine.images.transfers import TransferManager
from storage.content import IngestWriter

log = logging.getLogger("skiff.images")
T = TypeVar("T")
Emit = Callable[[Message], None]

MAX_CONCURRENT_DOWNLOADS = 3
_FLUSH = 1 << 20
_NO_RETRY = {"UNAUTHORIZED", "UNSUPPORTED", "DENIED", "TOOMANYREQUESTS", "NAME_UNKNOWN", "BLOB_UNKNOWN"}


@dataclass
class Distribution:
    """What pulls and pushes share: the image graph, the registry client, transfers, blob sources."""

    repo: ImageRepo
    registry: RegistryClient
    downloads: TransferManager[None]
    sources: BlobSources
    publish: Callable[[str, str, str | None], None]  # (action, event actor, image id for labels)
    max_attempts: int = 5
    retry_unit: float = 5.0


def short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


async def download_blob(dist: Distribution, repository: Repository, layer: mf.Descriptor, emit: Emit) -> None:
    """Fetch a blob into the content store, verified before it lands there; retried like dockerd."""
    await retrying(dist, short(layer.digest), emit, lambda: _download_once(dist, repository, layer, emit))


async def retrying(
    dist: Distribution, layer_id: str, emit: Emit, attempt_once: Callable[[], Awaitable[T]]
) -> T:
    """dockerd's transfer retries: 5 attempts, waiting 5 s more each time (``Retrying in N seconds``).

    Refusals (auth, unknown blob, a digest mismatch) are final at once.
    """
    attempt = 1
    while True:
        try:
            return await attempt_once()
        except (TransportError, UnexpectedResponse) as e:
            if isinstance(e, TransportError) and e.auth_failure:
                raise
            err: Exception = e
        except RegistryError as e:
            if e.code in _NO_RETRY:
                raise
            err = e
        if attempt >= dist.max_attempts:
            raise err
        log.info("transfer of %s failed, retrying (%d/%d): %s", layer_id, attempt, dist.max_attempts, err)
        delay = attempt * 5
        attempt += 1
        while delay > 0:
            emit(progress.update(layer_id, f"Retrying in {delay} second{'s' if delay != 1 else ''}"))
            await asyncio.sleep(dist.retry_unit / 5)
            delay -= 1


async def _body(resp: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.aiter_bytes():
            yield chunk
    except httpx.TransportError as e:
        raise TransportError("", "", transport_error("GET", resp.request.url, e).reason) from None


def _abort_opened(opening: asyncio.Future[IngestWriter]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().abort()


async def _download_once(
    dist: Distribution, repository: Repository, layer: mf.Descriptor, emit: Emit
) -> None:
    content = dist.repo.content
    layer_id = short(layer.digest)
    opening = asyncio.ensure_future(
        asyncio.to_thread(content.writer, f"pull-{layer.digest}", layer.digest, layer.size or None)
    )
    try:
        writer = await asyncio.shield(opening)
    except asyncio.CancelledError:
        # Cancelled (a sibling layer failed) while the worker thread was creating the ingest:
        # the thread still finishes it, so abort it then, or it stays behind in ingest/.
        opening.add_done_callback(_abort_opened)
        raise
    try:
        async with repository.blob(layer.digest) as (length, resp):
            meter = ProgressMeter(layer_id, "Downloading", layer.size or length)
            buf = bytearray()
            async for chunk in _body(resp):
                buf += chunk
                message = meter.advance(len(chunk))
                if message is not None:
                    emit(message)
                if len(buf) >= _FLUSH:
                    await asyncio.to_thread(writer.write, bytes(buf))
                    buf.clear()
            if buf:
                await asyncio.to_thread(writer.write, bytes(buf))
            final = meter.done()
            if final is not None:
                emit(final)
        emit(progress.update(layer_id, "Verifying Checksum"))
        try:
            await asyncio.to_thread(writer.commit)
        except errdefs.InvalidParameter:
            raise errdefs.InvalidParameter(
                f"filesystem layer verification failed for digest {layer.digest}"
            ) from None
        emit(progress.update(layer_id, "Download complete"))
    finally:
        await asyncio.shield(asyncio.to_thread(writer.abort))
