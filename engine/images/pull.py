"""``docker pull``: a manifest from a registry becomes an image, reported as dockerd's pull stream.

``prepare`` runs before the response starts (so a missing manifest or refused credentials are
ordinary HTTP errors): ping, authenticate, resolve the tag (HEAD, then GET by digest) or the digest.
``run`` then streams: ``Pulling from <path>``, per layer ``Already exists`` or ``Pulling fs layer``
→ ``Waiting`` → ``Downloading`` → ``Verifying Checksum`` → ``Download complete`` → ``Extracting``
→ ``Pull complete``, then ``Digest:`` and ``Status:``. An index picks the manifest for the platform.

The config is fetched first, so layers already present (by chain ID) are known before anything is
downloaded. Layers download in parallel through the daemon-wide transfer manager (3 at a time; a
blob two pulls need is fetched once) into the content store, verified against their digest before
they land there; they are unpacked in order as they arrive. Until the image exists its layers and
blobs are pinned (rmi and garbage collection keep off). On failure the layers this pull created are
removed again, so no half image remains; downloaded blobs are kept, verified, so a retry resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, TypeVar, cast

from engine import errdefs
from engine.images import manifest as mf
from engine.images import progress
from engine.images.distribution import Distribution, download_blob, short
from engine.images.ingest import Ingested, apply_stored_blob
from engine.images.loader import parse_config
from engine.images.platform import Platform, host
from engine.images.progress import Message, ProgressReader
from engine.images.reference import Reference
from engine.images.regauth import AuthConfig
from engine.images.regerrors import RegistryError, TransportError, UnexpectedResponse, translate_pull_error
from engine.images.registry import Repository
from storage.images import LayerRecord
from storage.layers import chain_ids

log = logging.getLogger("skiff.images")
T = TypeVar("T")

Emit = Callable[[Message], None]
MAX_CONFIG_SIZE = 8 << 20


@dataclass
class _Target:
    ref: Reference  # tagged or digested
    manifest: mf.Manifest | None
    digest: str
    image_id: str | None = None  # known locally: nothing to fetch


class Puller:
    def __init__(
        self, dist: Distribution, ref: Reference, platform: Platform | None, auth: AuthConfig
    ) -> None:
        self.dist = dist
        self.ref = ref
        self.platform = platform
        self.auth = auth
        self.repository: Repository | None = None
        self.targets: list[_Target] = []
        self._pending_tags: list[str] = []

    # --- before the stream -----------------------------------------------------------------------

    async def prepare(self) -> None:
        endpoints = self.dist.registry.endpoints(self.ref.domain)
        for i, endpoint in enumerate(endpoints):
            last = i == len(endpoints) - 1
            try:
                repository = await self.dist.registry.open(endpoint, self.ref.path, self.auth, ("pull",))
                if self.ref.is_name_only:
                    tags = await repository.tags()
                    if not tags:
                        raise errdefs.NotFound(f"no tags found for {self.ref.familiar_name}")
                    self._pending_tags = tags[1:]
                    first = self.ref.with_tag(tags[0])
                else:
                    first = self.ref
                self.targets = [await self._resolve(repository, first)]
                self.repository = repository
                return
            except (RegistryError, TransportError, UnexpectedResponse) as e:
                if endpoint.mirror and not last:
                    log.info("pull from mirror %s failed, trying the next endpoint: %s", endpoint.urls[0], e)
                    continue
                raise translate_pull_error(e, self.ref) from None

    async def _resolve(self, repository: Repository, ref: Reference) -> _Target:
        name = str(ref)
        if ref.digest is not None:
            digest = ref.digest
            known = await self._known(ref, digest)
            if known is not None:
                return _Target(ref, None, digest, known)
            found = await repository.manifest(digest, name)
            if found.digest != digest:
                raise errdefs.Internal(f"manifest verification failed for digest {digest}")
            return _Target(ref, found, digest)
        assert ref.tag is not None
        desc = await repository.resolve(ref.tag)
        if desc is not None:
            known = await self._known(ref, desc.digest)
            if known is not None:
                return _Target(ref, None, desc.digest, known)
            found = await repository.manifest(desc.digest, name)
            if found.digest != desc.digest:
                raise errdefs.Internal(f"manifest verification failed for digest {desc.digest}")
        else:
            found = await repository.manifest(ref.tag, name)
        return _Target(ref, found, found.digest)

    async def _known(self, ref: Reference, digest: str) -> str | None:
        """The image already pulled from this manifest digest (only when no platform was asked for:
        an index may have given another platform's image)."""
        if self.platform is not None:
            return None
        repo = self.dist.repo
        image_id = await asyncio.to_thread(repo.get_reference, Reference(ref.domain, ref.path, None, digest))
        return image_id if image_id and repo.store.exists(image_id) else None

    # --- the stream --------------------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        repository = self.repository
        assert repository is not None
        updated = False
        for target in self.targets:
            updated = await self._pull_target(repository, target, emit) or updated
        for tag in self._pending_tags:
            target = await self._resolve(repository, self.ref.with_tag(tag))
            updated = await self._pull_target(repository, target, emit) or updated
        text = "Downloaded newer image" if updated else "Image is up to date"
        emit(progress.status(f"Status: {text} for {self.ref.familiar()}"))
        self.dist.publish("pull", self.ref.familiar(), None)

    async def _pull_target(self, repository: Repository, target: _Target, emit: Emit) -> bool:
        ref = target.ref
        shown = str(ref) if ref.digest is not None else str(ref.tag)
        emit(progress.status(f"Pulling from {ref.path}", shown))
        image_id = target.image_id
        if image_id is None:
            assert target.manifest is not None
            image_id = await self._fetch(repository, target.manifest, str(ref), emit)
        emit(progress.status(f"Digest: {target.digest}"))
        await self._check_platform(ref, image_id, emit)
        return await asyncio.to_thread(self._tag, ref, target.digest, image_id)

    async def _fetch(self, repository: Repository, found: mf.Manifest, name: str, emit: Emit) -> str:
        if not found.is_index:
            return await ImagePull(self.dist, repository, found).run(emit)
        target = self.platform or host()
        for desc in mf.select(found.manifests, target):
            child = await repository.manifest(desc.digest, name)
            if child.digest != desc.digest:
                raise errdefs.Internal(f"manifest verification failed for digest {desc.digest}")
            if child.is_index:
                continue
            return await ImagePull(self.dist, repository, child).run(emit)
        raise mf.no_match_error(target)

    async def _check_platform(self, ref: Reference, image_id: str, emit: Emit) -> None:
        if self.platform is None:
            return
        image = await asyncio.to_thread(self.dist.repo.image, image_id)
        actual = Platform(
            image.os, str(image.config.get("architecture") or ""), str(image.config.get("variant") or "")
        )
        if not self.platform.matches(
            {"os": actual.os, "architecture": actual.architecture, "variant": actual.variant}
        ):
            emit(progress.status(
                f"WARNING: image with reference {ref.familiar()} was found but does not match the specified "
                f"platform: wanted {self.platform}, actual: {actual}"
            ))  # fmt: skip

    def _tag(self, ref: Reference, manifest_digest: str, image_id: str) -> bool:
        """Record the tag and the digest reference; False when the reference already pointed there."""
        repo = self.dist.repo
        with repo.lock:
            by_digest = Reference(ref.domain, ref.path, None, manifest_digest)
            wanted = Reference(ref.domain, ref.path, None, ref.digest) if ref.digest is not None else ref
            old = repo.get_reference(wanted)
            if repo.get_reference(by_digest) is None:
                repo.add_tag(by_digest, image_id)
            if old == image_id:
                return False
            repo.add_tag(wanted, image_id)
            return True


@dataclass
class ImagePull:
    """One image manifest: config, layers, image record."""

    dist: Distribution
    repository: Repository
    manifest: mf.Manifest
    created: list[str] = field(default_factory=list)
    pins: list[str] = field(default_factory=list)
    present: set[str] = field(default_factory=set)  # blobs already in the content store

    async def run(self, emit: Emit) -> str:
        config_desc = self.manifest.config
        mf.check_config_type(config_desc.media_type)
        layers = self.manifest.layers
        for layer in layers:
            mf.check_layer_type(layer.media_type)
        if await asyncio.to_thread(self.dist.repo.store.exists, config_desc.digest):
            return config_desc.digest  # the image is here already: nothing to pull
        config = await self._config(config_desc)
        diff_ids = [str(d) for d in parse_config(config)["rootfs"].get("diff_ids") or []]
        if len(diff_ids) != len(layers):
            raise errdefs.InvalidParameter("layers from manifest don't match image configuration")
        chains = chain_ids(diff_ids)
        existing = await asyncio.to_thread(self._plan, chains, diff_ids, layers)
        ok = False
        try:
            image_id = await self._layers(emit, layers, diff_ids, chains, existing, config)
            ok = True
            return image_id
        finally:
            await self._finish(ok)

    async def _config(self, desc: mf.Descriptor) -> bytes:
        try:
            for attempt in range(3):
                try:
                    data = await self.repository.blob_bytes(desc.digest, MAX_CONFIG_SIZE)
                    break
                except TransportError:
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.25 * 2**attempt)
        except (RegistryError, TransportError, UnexpectedResponse, errdefs.EngineError) as e:
            raise errdefs.Internal(f"error pulling image configuration: {e}") from None
        if mf.sha256_digest(data) != desc.digest:
            raise errdefs.Internal(
                "error pulling image configuration: "
                f"image config verification failed for digest {desc.digest}"
            )
        return data

    def _plan(self, chains: list[str], diff_ids: list[str], layers: list[mf.Descriptor]) -> list[LayerRecord]:
        """Pin what this pull relies on, and find the bottom layers that are here already."""
        repo = self.dist.repo
        with repo.lock:
            self.pins = chains + [d.digest for d in layers]
            repo.pin(self.pins)
            self.present = {d.digest for d in layers if repo.content.has(d.digest)}
            found: list[LayerRecord] = []
            for chain, diff_id in zip(chains, diff_ids, strict=True):
                record = repo.store.find_layer(diff_id, chain) if repo.layers.has(chain) else None
                if record is None:
                    break
                found.append(record)
            return found

    async def _layers(
        self,
        emit: Emit,
        layers: list[mf.Descriptor],
        diff_ids: list[str],
        chains: list[str],
        existing: list[LayerRecord],
        config: bytes,
    ) -> str:
        for layer in layers[: len(existing)]:
            emit(progress.update(short(layer.digest), "Already exists"))
        missing = list(range(len(existing), len(layers)))
        for i in missing:
            emit(progress.update(short(layers[i].digest), "Pulling fs layer"))
        downloads = {i: asyncio.create_task(self._download(layers[i], emit)) for i in missing}
        records = list(existing)
        try:
            for i in missing:
                await _first_failure(downloads[i], list(downloads.values()))
                parent = chains[i - 1] if i else None
                ingested = await self._extract(layers[i], parent, diff_ids[i], emit)
                records.append(ingested.record)
                emit(progress.update(short(layers[i].digest), "Pull complete"))
        finally:
            for task in downloads.values():
                task.cancel()
            await asyncio.gather(*downloads.values(), return_exceptions=True)
        for layer in layers:
            self.dist.sources.add(layer.digest, self.repository.host, self.repository.path)
        return await asyncio.to_thread(self._create, config, records)

    async def _download(self, layer: mf.Descriptor, emit: Emit) -> None:
        # No await before joining the transfer: transfers start in layer order, so the ones
        # beyond the concurrency limit are the top layers, as in dockerd.
        if layer.digest in self.present:
            emit(progress.update(short(layer.digest), "Download complete"))
            return

        async def job(watch: Emit) -> None:
            await download_blob(self.dist, self.repository, layer, watch)

        await self.dist.downloads.run(layer.digest, short(layer.digest), job, emit)

    async def _extract(self, layer: mf.Descriptor, parent: str | None, diff_id: str, emit: Emit) -> Ingested:
        loop = asyncio.get_running_loop()
        dist = self.dist

        def threadsafe(message: Message) -> None:
            loop.call_soon_threadsafe(emit, message)

        def work() -> Ingested:
            bar: ProgressReader | None = None

            def wrap(raw: IO[bytes]) -> IO[bytes]:
                nonlocal bar
                bar = ProgressReader(raw, layer.size, short(layer.digest), "Extracting", threadsafe)
                return cast(IO[bytes], bar)

            done = apply_stored_blob(
                dist.repo.layers, dist.repo.content, parent, layer.digest, expected_diff_id=diff_id, wrap=wrap
            )
            if bar is not None:
                bar.finish()
            return done

        future = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            ingested = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread finishes regardless: wait for it so that its layer is undone too.
            with contextlib.suppress(Exception):
                late = await future
                if late.new_layer:
                    self.created.append(late.record.chain_id)
            raise
        if ingested.new_layer:
            self.created.append(ingested.record.chain_id)
        return ingested

    def _create(self, config: bytes, records: Sequence[LayerRecord]) -> str:
        repo = self.dist.repo
        with repo.lock:
            for record in records:
                if not repo.layers.has(record.chain_id):
                    raise errdefs.Internal(f"layer {record.chain_id} disappeared during the pull")
            return repo.store.create(config, records)

    async def _finish(self, ok: bool) -> None:
        repo = self.dist.repo

        def undo() -> None:
            with repo.lock:
                repo.unpin(self.pins)
                if ok:
                    return
                in_use = repo.chains_in_use()
                for chain in reversed(self.created):
                    if chain not in in_use:
                        with contextlib.suppress(errdefs.EngineError):
                            repo.layers.remove(chain)

        await asyncio.shield(asyncio.to_thread(undo))


async def _first_failure(target: asyncio.Task[None], tasks: list[asyncio.Task[None]]) -> None:
    """Wait for ``target``; fail as soon as any of ``tasks`` fails (as dockerd cancels the pull)."""
    while not target.done():
        pending = [t for t in tasks if not t.done()]
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    target.result()
