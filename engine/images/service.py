"""ImageService: the image endpoints' domain logic (list, inspect, history, tag, rmi, prune, load, save,
import; pull, push and login through engine/images/remote.py) and the image lookups the containers
service needs.

Everything that touches the disk runs in worker threads through ``ImageRepo``; multi-step mutations
hold the repo lock so they never interleave. Request bodies are spooled to a temp file under the
image store before any work starts (as dockerd untars into a temp dir first), so a client can not
hold the lock while it trickles bytes. Progress for load is a stream of jsonmessage dicts; save is
a stream of tar chunks; neither is ever held in memory as a whole.
"""

from __future__ import annotations

import asyncio
import bz2
import contextlib
import gzip
import lzma
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import zstandard

from engine import errdefs
from engine.events import EventBus
from engine.images import commit as commit_
from engine.images import importer, progress, saver, view
from engine.images.delete import Deleter
from engine.images.endpoints import RegistryOptions
from engine.images.loader import Loader
from engine.images.model import Image
from engine.images.platform import Platform, host
from engine.images.platform import parse as parse_platform
from engine.images.progress import Message
from engine.images.reference import Reference, repo_tag_reference
from engine.images.regauth import AuthConfig
from engine.images.remote import Remote
from engine.images.repo import ImageRepo
from engine.images.streams import Emitter, iterate_in_thread
from engine.images.timestamps import now
from storage.content import ContentStore
from storage.images import ImageStore
from storage.layers import LayerStore

UsageChecker = Callable[[str], list[tuple[str, bool]]]
"""image ID → [(container ID, running)] for every container using that image."""

_SPOOL_CHUNK = 1 << 20


class ImageService:
    def __init__(
        self,
        store: ImageStore,
        layers: LayerStore,
        content: ContentStore,
        events: EventBus,
        *,
        docker_version: str | None = None,
        registry: RegistryOptions | None = None,
        registry_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if docker_version is None:
            from engine.system import engine_version  # the version /version reports

            docker_version = engine_version()
        self._store = store
        self._events = events
        self._docker_version = docker_version
        self._repo = ImageRepo(store, layers, content, self._publish)
        self._remote = Remote(self._repo, self._publish, registry, registry_transport)
        self._usage: UsageChecker | None = None
        self._prune_running = False

    # --- wiring ----------------------------------------------------------------------------------

    def set_usage_checker(self, fn: UsageChecker) -> None:
        """The containers service registers who uses which image (for rmi/prune conflicts)."""
        self._usage = fn

    def _publish(self, action: str, image_id: str, attributes: dict[str, str]) -> None:
        # EventBus.publish is thread-safe: worker threads report as they go, in order.
        self._events.publish("image", action, image_id, attributes)

    def _usage_snapshot(self) -> dict[str, list[tuple[str, bool]]]:
        checker = self._usage
        if checker is None:
            return {}
        return {image_id: list(checker(image_id)) for image_id in self._store.ids()}

    # --- lookups for other services --------------------------------------------------------------

    async def resolve(self, ref: str) -> Image:
        """An image by full ID, ``sha256:`` ID, ID prefix, name[:tag] or name@digest; NotFound otherwise."""
        return await asyncio.to_thread(self._repo.resolve, ref)

    def count(self) -> int:
        return self._store.count()

    def image_config(self, image: Image) -> dict[str, Any]:
        """The image's defaults (``Env``, ``Cmd``, ``Entrypoint``, ``WorkingDir``, ``User``, ``ExposedPorts``,
        ``Volumes``, ``Labels``, ``StopSignal``, ``Healthcheck``, …) in container.Config shape."""
        return image.container_config() or {}

    def top_chain_id(self, image: Image) -> str | None:
        return image.top_chain_id

    async def collect_garbage(self) -> list[str]:
        """Remove layers no image uses any more (e.g. after the last container of a deleted image)."""
        return await asyncio.to_thread(self._repo.collect_garbage)

    async def commit(
        self,
        layer: commit_.RwLayer,
        config: dict[str, Any],
        *,
        author: str,
        comment: str,
        ref: Reference | None,
        container_config: dict[str, Any] | None = None,
    ) -> str:
        """The image half of ``POST /commit`` (engine/images/commit.py): the new image's ID."""
        return await asyncio.to_thread(
            commit_.commit_image,
            self._repo,
            layer,
            config,
            author=author,
            comment=comment,
            ref=ref,
            docker_version=self._docker_version,
            container_config=container_config,
        )

    # --- read endpoints --------------------------------------------------------------------------

    async def list_images(
        self,
        filters: Mapping[str, Sequence[str]] | None = None,
        all: bool = False,
        digests: bool = False,
        shared_size: bool = False,
    ) -> list[dict[str, Any]]:
        """``GET /images/json`` rows; ``digests`` changes nothing (RepoDigests is always filled in)."""
        return await asyncio.to_thread(view.list_images, self._repo, filters or {}, all, shared_size)

    async def layers_size(self) -> int:
        """``LayersSize`` of ``system df``: every layer of every image, shared layers once."""

        def work() -> int:
            chains = {chain for image in self._repo.images() for chain in image.chain_ids}
            return sum(self._repo.layer_size(chain) for chain in chains)

        return await asyncio.to_thread(work)

    async def inspect(self, name: str) -> dict[str, Any]:

        def run() -> dict[str, Any]:
            return view.inspect(self._repo, self._repo.resolve(name))

        return await asyncio.to_thread(run)

    async def history(self, name: str) -> list[dict[str, Any]]:

        def run() -> list[dict[str, Any]]:
            return view.history(self._repo, self._repo.resolve(name))

        return await asyncio.to_thread(run)

    # --- tag / rmi / prune -----------------------------------------------------------------------

    async def tag(self, name: str, repo: str, tag: str) -> bool:
        """``POST /images/{name}/tag``; False when no ``repo`` was given (dockerd then does nothing)."""
        ref = repo_tag_reference(repo, tag)
        if ref is None:
            return False
        if ref.familiar_name == "sha256":
            raise errdefs.InvalidParameter(
                "refusing to create an ambiguous tag using digest algorithm as name"
            )

        def run() -> None:
            with self._repo.lock:
                try:
                    image = self._repo.resolve(name)
                except errdefs.EngineError as e:
                    raise errdefs.NotFound(e.message) from None
                self._repo.add_tag(ref, image.id)
                self._store.set_last_tag_time(image.id, now().rfc3339nano())
                self._repo.event("tag", image.id, ref.familiar())

        await asyncio.to_thread(run)
        return True

    async def delete(self, name: str, force: bool = False, noprune: bool = False) -> list[dict[str, str]]:
        """``DELETE /images/{name}``: the Untagged/Deleted records."""
        usage = self._usage_snapshot()

        def run() -> list[dict[str, str]]:
            with self._repo.lock:
                return Deleter(self._repo, usage).delete(name, force, not noprune)

        return await asyncio.to_thread(run)

    async def prune(self, filters: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
        """``POST /images/prune``: dangling images unless ``dangling=false``; until/label/label! filters."""
        if self._prune_running:
            raise errdefs.Conflict("a prune operation is already running")
        self._prune_running = True
        try:
            usage = self._usage_snapshot()

            def publish_prune(reclaimed: int) -> None:
                self._publish("prune", "", {"reclaimed": str(reclaimed)})

            def run() -> dict[str, Any]:
                with self._repo.lock:
                    return Deleter(self._repo, usage).prune(filters or {}, publish_prune)

            return await asyncio.to_thread(run)
        finally:
            self._prune_running = False

    # --- request bodies --------------------------------------------------------------------------

    async def _spool(self, body: AsyncIterator[bytes], prefix: str) -> Path:
        fd, name = tempfile.mkstemp(dir=self._store.tmp_dir, prefix=prefix, suffix=".tar")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                buf = bytearray()
                async for chunk in body:
                    buf += chunk
                    if len(buf) >= _SPOOL_CHUNK:
                        await asyncio.to_thread(f.write, bytes(buf))
                        buf.clear()
                if buf:
                    await asyncio.to_thread(f.write, bytes(buf))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    # --- load ------------------------------------------------------------------------------------

    async def load(self, body: AsyncIterator[bytes], quiet: bool = True) -> AsyncIterator[Message]:
        """``POST /images/load``: read the whole body first, then the jsonmessage stream.

        Failures after that point are part of the stream (``errorDetail``), as dockerd reports them.
        """
        path = await self._spool(body, "load-")
        return self._load_stream(path, quiet)

    async def _load_stream(self, path: Path, quiet: bool) -> AsyncIterator[Message]:
        def work(emit: Emitter[Message]) -> None:
            archive = path
            try:
                archive = _decompressed(path)
                Loader(self._repo, emit, quiet, host()).run(archive)
            finally:
                path.unlink(missing_ok=True)
                if archive != path:
                    archive.unlink(missing_ok=True)

        try:
            async for message in iterate_in_thread(work):
                yield message
        except errdefs.EngineError as e:
            yield progress.error(e.message)
        except OSError as e:
            yield progress.error(str(e))

    # --- save ------------------------------------------------------------------------------------

    async def export(self, names: Sequence[str]) -> AsyncIterator[bytes]:
        """``GET /images/get`` and ``/images/{name}/get``: names resolve now (errors are HTTP errors),
        then the tar streams."""
        entries = await asyncio.to_thread(saver.plan, self._repo, list(names))

        def work(emit: Emitter[bytes]) -> None:
            saver.write(self._repo, entries, emit)

        return iterate_in_thread(work, maxsize=8)

    # --- import / pull ---------------------------------------------------------------------------

    async def import_image(
        self,
        body: AsyncIterator[bytes],
        *,
        src: str,
        repo: str = "",
        tag: str = "",
        message: str = "",
        changes: Sequence[str] = (),
        platform: str = "",
    ) -> str:
        """``POST /images/create?fromSrc=-``: the new image ID (the route answers ``{"status": id}``)."""
        target: Platform = parse_platform(platform) if platform else host()
        if target.os != "linux":
            raise errdefs.InvalidParameter(
                f'image operating system "{target.os}" cannot be used on this platform'
            )
        ref = repo_tag_reference(repo, tag)
        if src != "-":
            raise errdefs.NotImplemented_(
                f"importing from {src!r} is not supported: skiff does not download; "
                "send the archive in the request body (fromSrc=-)"
            )
        container_config = importer.build_config(list(changes))
        path = await self._spool(body, "import-")

        def run() -> str:
            archive = path
            try:
                # gzip and zstd layers are kept as sent (the layer store reads them); bzip2 and xz,
                # which dockerd also accepts, are unpacked first.
                archive = _decompressed(path, kinds=("bzip2", "xz"))
                return importer.import_image(
                    self._repo,
                    archive,
                    ref=ref,
                    platform=target,
                    message=message,
                    container_config=container_config,
                    docker_version=self._docker_version,
                )
            finally:
                path.unlink(missing_ok=True)
                if archive != path:
                    archive.unlink(missing_ok=True)

        return await asyncio.to_thread(run)

    async def pull(
        self, image: str, tag: str = "", platform: str = "", auth: AuthConfig | None = None
    ) -> AsyncIterator[Message]:
        """``POST /images/create?fromImage=``: errors before the first message are raised (HTTP
        errors); the rest is dockerd's pull stream (engine/images/pull.py)."""
        return await self._remote.pull(image, tag, platform, auth or AuthConfig())

    async def push(self, name: str, tag: str = "", auth: AuthConfig | None = None) -> AsyncIterator[Message]:
        """``POST /images/{name}/push``: dockerd's push stream (engine/images/push.py)."""
        return await self._remote.push(name, tag, auth or AuthConfig())

    async def login(self, auth: AuthConfig) -> dict[str, str]:
        """``POST /auth``: check the credentials against the registry (Unauthorized if refused)."""
        return await self._remote.login(auth)

    def begin_shutdown(self) -> None:
        """End pull and push streams now, so the server's graceful shutdown is not held open."""
        self._remote.cancel_streams()

    async def aclose(self) -> None:
        """Stop pulls and pushes in progress and close registry connections (daemon shutdown)."""
        await self._remote.aclose()


_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


def _decompressor(kind: str, src: BinaryIO) -> BinaryIO:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=src)  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(src)  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(src)  # type: ignore[return-value]
    return zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)  # type: ignore[no-any-return,unused-ignore]


def _decompressed(path: Path, kinds: Sequence[str] = ("gzip", "bzip2", "xz", "zstd")) -> Path:
    """The archive as a plain tar: ``path`` itself, or a decompressed sibling (docker load accepts
    gzip, bzip2, xz and zstd archives)."""
    with open(path, "rb") as f:
        head = f.read(6)
    kind = next((k for magic, k in _MAGIC if head.startswith(magic)), None)
    if kind is None or kind not in kinds:
        return path
    out = path.with_suffix(".plain.tar")
    try:
        with open(path, "rb") as src, open(out, "wb") as dst, _decompressor(kind, src) as reader:
            shutil.copyfileobj(reader, dst, _SPOOL_CHUNK)
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as e:
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        # dockerd reports a corrupt stream from its untar helper as a plain (500) error.
        raise errdefs.Internal(f"Error processing tar file(exit status 1): {e}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        raise
    return out
