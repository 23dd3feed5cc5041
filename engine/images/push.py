"""``docker push``: an image's layers, config and manifest to a registry, reported like dockerd.

``The push refers to repository [<name>]`` first, so everything after is reported in the stream.
Per tag: every layer (top first) is ``Preparing``, then, five at a time across the daemon, either
``Layer already exists`` (HEAD found it), ``Mounted from <repo>`` (cross-repository mount from a
repository this daemon pulled it from or pushed it to) or ``Pushing`` → ``Pushed``. Blobs of up to
1 MiB go in one PUT (monolithic); larger stored blobs in 16 MiB PATCH chunks with Content-Range;
layers kept uncompressed (``docker load``, ``commit``) are gzip-compressed while they stream in a
single PATCH, their digest computed on the way. Then the config, the manifest (Docker schema 2),
``<tag>: digest: sha256:… size: N``, the aux record, and a digest reference for RepoDigests.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from engine import errdefs
from engine.images import manifest as mf
from engine.images import progress
from engine.images.distribution import Distribution, retrying, short
from engine.images.ingest import MT_LAYER_ZSTD, UNCOMPRESSED_TYPES
from engine.images.progress import Message, ProgressMeter
from engine.images.reference import Reference
from engine.images.regauth import AuthConfig
from engine.images.regerrors import TransportError
from engine.images.registry import Repository, Upload
from engine.images.transfers import TransferManager
from storage.images import LayerRecord

Emit = Callable[[Message], None]
MAX_CONCURRENT_UPLOADS = 5
MONOLITHIC_MAX = 1 << 20
CHUNK = 16 << 20
_READ = 1 << 20
GZIP_LEVEL = 1  # speed over ratio: the stream is compressed on the way to the registry


def push_error_text(err: BaseException) -> str:
    """dockerd drops the ``<Method> "<url>":`` wrapper of auth failures in push errors."""
    if isinstance(err, TransportError) and err.auth_failure:
        return err.reason
    if isinstance(err, errdefs.EngineError):
        return err.message
    return str(err)


@dataclass
class Pusher:
    dist: Distribution
    uploads: TransferManager[mf.Descriptor]
    compressed: dict[str, tuple[str, int]]  # uncompressed blob → (gzip digest, size), from earlier pushes
    ref: Reference
    auth: AuthConfig
    _remote: dict[str, mf.Descriptor] = field(default_factory=dict)

    async def run(self, emit: Emit) -> None:
        ref = self.ref
        emit(progress.status(f"The push refers to repository [{ref.name}]"))
        tags = await asyncio.to_thread(self._associations)
        endpoint = self.dist.registry.endpoints(ref.domain, mirrors=False)[0]
        repository = await self.dist.registry.open(endpoint, ref.path, self.auth, ("push", "pull"))
        for tagged, image_id in tags:
            await self._push_tag(repository, tagged, image_id, emit)
        self.dist.publish("push", ref.familiar(), tags[-1][1])

    def _associations(self) -> list[tuple[Reference, str]]:
        repo, ref = self.dist.repo, self.ref
        found: list[tuple[Reference, str]] = []
        for familiar, image_id in repo.store.references_by_name(ref.familiar_name):
            if "@" not in familiar:
                found.append((ref.with_tag(familiar.rsplit(":", 1)[1]), image_id))
        if not found:
            raise errdefs.NotFound(f"An image does not exist locally with the tag: {ref.familiar_name}")
        if ref.tag is not None:
            tagged = repo.get_reference(ref)
            if tagged is None:
                raise errdefs.NotFound(f"tag does not exist: {ref.familiar()}")
            return [(ref, tagged)]
        return found

    async def _push_tag(self, repository: Repository, ref: Reference, image_id: str, emit: Emit) -> None:
        image = await asyncio.to_thread(self.dist.repo.image, image_id)
        records = list(image.meta.layers)
        if [r.diff_id for r in records] != image.diff_ids or any(not r.blob for r in records):
            raise errdefs.Internal(f"image {image_id} has no stored layer data to push")
        for record in reversed(records):
            emit(progress.update(short(record.diff_id), "Preparing"))
        tasks = [asyncio.create_task(self._layer(repository, record, emit)) for record in reversed(records)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        layers = [tasks[len(tasks) - 1 - i].result() for i in range(len(tasks))]
        media_type = (
            mf.MT_OCI_CONFIG
            if any(x.media_type == mf.MT_OCI_LAYER_ZSTD for x in layers)
            else mf.MT_DOCKER_CONFIG
        )
        config = mf.Descriptor(media_type, image.id, len(image.raw))
        if await repository.stat_blob(image.id) is None:
            upload = await repository.start_upload()
            assert upload is not None
            await repository.finish_upload(upload, image.id, image.raw)
        manifest_type, body = mf.build_image_manifest(config, layers)
        assert ref.tag is not None
        digest = await repository.put_manifest(ref.tag, manifest_type, body)
        emit(progress.status(f"{ref.tag}: digest: {digest} size: {len(body)}"))
        await asyncio.to_thread(self._add_digest, ref, digest, image_id)
        emit(progress.aux({"Tag": ref.tag, "Digest": digest, "Size": len(body)}))

    def _add_digest(self, ref: Reference, digest: str, image_id: str) -> None:
        repo = self.dist.repo
        with repo.lock:
            by_digest = Reference(ref.domain, ref.path, None, digest)
            if repo.store.exists(image_id) and repo.get_reference(by_digest) is None:
                repo.add_tag(by_digest, image_id)

    # --- layers ------------------------------------------------------------------------------------

    async def _layer(self, repository: Repository, record: LayerRecord, emit: Emit) -> mf.Descriptor:
        layer_id = short(record.diff_id)
        known = self._remote.get(record.diff_id)
        if known is not None:
            emit(progress.update(layer_id, "Layer already exists"))
            return known

        async def job(watch: Emit) -> mf.Descriptor:
            return await retrying(self.dist, layer_id, watch, lambda: self._upload(repository, record, watch))

        key = f"push:{repository.host}/{repository.path} {record.diff_id}"
        desc = await self.uploads.run(key, layer_id, job, emit)
        self._remote[record.diff_id] = desc
        return desc

    async def _upload(self, repository: Repository, record: LayerRecord, emit: Emit) -> mf.Descriptor:
        layer_id = short(record.diff_id)
        assert record.blob is not None
        plain = record.media_type in UNCOMPRESSED_TYPES or not record.media_type
        if plain:
            digest, size = self.compressed.get(record.blob, ("", 0))
            media_type = mf.MT_DOCKER_LAYER
        else:
            digest, size = record.blob, record.size
            media_type = mf.MT_OCI_LAYER_ZSTD if record.media_type == MT_LAYER_ZSTD else mf.MT_DOCKER_LAYER
        if digest and await repository.stat_blob(digest) is not None:
            emit(progress.update(layer_id, "Layer already exists"))
            return mf.Descriptor(media_type, digest, size)
        upload: Upload | None = None
        for source in (
            self.dist.sources.candidates(digest, repository.host, repository.path)[:3] if digest else []
        ):
            upload = await repository.start_upload(mount=(digest, source))
            if upload is None:
                emit(progress.update(layer_id, f"Mounted from {source}"))
                self.dist.sources.add(digest, repository.host, repository.path)
                return mf.Descriptor(media_type, digest, size)
            await repository.cancel_upload(upload)
            upload = None
        upload = await repository.start_upload()
        assert upload is not None
        try:
            if plain:
                digest, size = await self._send_compressed(repository, upload, record, emit)
                self.compressed[record.blob] = (digest, size)
            else:
                await self._send_stored(repository, upload, record, emit)
        except BaseException:
            await asyncio.shield(repository.cancel_upload(upload))
            raise
        emit(progress.update(layer_id, "Pushed"))
        self.dist.sources.add(digest, repository.host, repository.path)
        return mf.Descriptor(media_type, digest, size)

    async def _send_stored(
        self, repository: Repository, upload: Upload, record: LayerRecord, emit: Emit
    ) -> None:
        assert record.blob is not None
        meter = ProgressMeter(short(record.diff_id), "Pushing", record.size)
        content = self.dist.repo.content
        f = await asyncio.to_thread(content.open, record.blob)
        try:
            if record.size <= MONOLITHIC_MAX:
                data = await asyncio.to_thread(f.read)
                _report(meter, len(data), emit)
                await repository.finish_upload(upload, record.blob, data)
                return
            offset = 0
            while offset < record.size:
                chunk = await asyncio.to_thread(f.read, CHUNK)
                if not chunk:
                    raise errdefs.Internal(f"blob {record.blob} is shorter than recorded")
                await repository.upload_chunk(upload, chunk, offset)
                offset += len(chunk)
                _report(meter, len(chunk), emit)
            await repository.finish_upload(upload, record.blob)
        finally:
            await asyncio.to_thread(f.close)

    async def _send_compressed(
        self, repository: Repository, upload: Upload, record: LayerRecord, emit: Emit
    ) -> tuple[str, int]:
        assert record.blob is not None
        meter = ProgressMeter(short(record.diff_id), "Pushing", record.uncompressed_size or record.size)
        f = await asyncio.to_thread(self.dist.repo.content.open, record.blob)
        gz = _GzipStream(f)
        try:
            resp = await repository.send(
                "PATCH",
                upload.location,
                headers={"Content-Type": "application/octet-stream"},
                content=gz.chunks(lambda n: _report(meter, n, emit)),
            )
            await repository._check(resp, (202, 204))
            upload.location = repository._location(upload.location, resp)
        finally:
            await asyncio.to_thread(f.close)
        digest = "sha256:" + gz.hash.hexdigest()
        await repository.finish_upload(upload, digest)
        return digest, gz.size


def _report(meter: ProgressMeter, n: int, emit: Emit) -> None:
    message = meter.advance(n)
    if message is not None:
        emit(message)


class _GzipStream:
    """A layer tar gzip-compressed piece by piece in worker threads; digest and size on the way."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._zip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        self.hash = hashlib.sha256()
        self.size = 0

    def _step(self) -> tuple[bytes, int, bool]:
        data = self._src.read(_READ)
        out = self._zip.compress(data) if data else self._zip.flush()
        self.hash.update(out)
        self.size += len(out)
        return out, len(data), not data

    async def chunks(self, read: Callable[[int], None]) -> AsyncIterator[bytes]:
        while True:
            out, consumed, last = await asyncio.to_thread(self._step)
            if consumed:
                read(consumed)
            if out:
                yield out
            if last:
                return
