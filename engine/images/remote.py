"""The registry side of ImageService: pull, push and login, with the state they share.

``Remote`` owns the registry client, the download and upload transfer managers, the blob sources
and the tasks that run pull and push streams; ``aclose`` ends them all. Errors found before a
stream starts (bad reference, unknown manifest, refused credentials) are raised; later ones end
the stream with an ``errorDetail`` message, as dockerd writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import httpx

from engine import errdefs
from engine.images import manifest as mf
from engine.images import progress
from engine.images.distribution import MAX_CONCURRENT_DOWNLOADS, Distribution
from engine.images.endpoints import RegistryOptions
from engine.images.platform import parse as parse_platform
from engine.images.progress import Message
from engine.images.pull import Puller
from engine.images.push import MAX_CONCURRENT_UPLOADS, Pusher, push_error_text
from engine.images.reference import Reference, parse_normalized_named, repo_tag_reference, validate_digest
from engine.images.regauth import AuthConfig
from engine.images.regerrors import translate_pull_error
from engine.images.registry import RegistryClient
from engine.images.repo import ImageRepo
from engine.images.sources import BlobSources
from engine.images.streams import stream_task
from engine.images.transfers import TransferManager

log = logging.getLogger("skiff.images")


class Remote:
    def __init__(
        self,
        repo: ImageRepo,
        publish: Callable[[str, str, dict[str, str]], None],
        options: RegistryOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._publish_raw = publish
        self.registry = RegistryClient(options, transport=transport)
        self.downloads: TransferManager[None] = TransferManager(MAX_CONCURRENT_DOWNLOADS)
        self.uploads: TransferManager[mf.Descriptor] = TransferManager(MAX_CONCURRENT_UPLOADS)
        self.dist = Distribution(repo, self.registry, self.downloads, BlobSources(), self._publish)
        self._compressed: dict[str, tuple[str, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _publish(self, action: str, actor: str, image_id: str | None) -> None:
        """LogImageEvent(ref, ref, action): the image's labels, ``name`` = the reference."""
        repo = self.dist.repo
        attributes: dict[str, str] = {}
        with contextlib.suppress(errdefs.EngineError):
            image = repo.image(image_id) if image_id else repo.resolve(actor)
            attributes.update({k: str(v) for k, v in (image.labels or {}).items()})
        attributes["name"] = actor
        self._publish_raw(action, actor, attributes)

    async def pull(self, image: str, tag: str, platform: str, auth: AuthConfig) -> AsyncIterator[Message]:
        # "pull -a" may send the name with a trailing ":" (dockerd trims it).
        ref = parse_normalized_named(image.removesuffix(":"))
        if tag:
            try:
                ref = Reference(ref.domain, ref.path, None, validate_digest(tag))
            except errdefs.InvalidParameter:
                ref = ref.with_tag(tag)
        if ref.name == "scratch" or ref.familiar_name == "scratch":
            raise errdefs.Forbidden("'scratch' is a reserved name")
        target = parse_platform(platform) if platform else None
        if target is not None and target.os != "linux":
            raise errdefs.InvalidParameter(
                f'image operating system "{target.os}" cannot be used on this platform'
            )
        puller = Puller(self.dist, ref, target, auth)
        await puller.prepare()

        def failed(e: Exception) -> Message:
            err = translate_pull_error(e, ref)
            if isinstance(err, errdefs.Internal) and not isinstance(e, errdefs.EngineError):
                log.info("pull of %s failed: %s", ref.familiar(), e)
            return progress.error(err.message)

        return stream_task(puller.run, failed, self._tasks)

    async def push(self, name: str, tag: str, auth: AuthConfig) -> AsyncIterator[Message]:
        ref = repo_tag_reference(name, tag) if tag else parse_normalized_named(name)
        assert ref is not None
        if ref.digest is not None and ref.tag is None:
            raise errdefs.InvalidParameter("cannot push a digest reference")
        pusher = Pusher(self.dist, self.uploads, self._compressed, ref, auth)
        return stream_task(pusher.run, lambda e: progress.error(push_error_text(e)), self._tasks)

    async def login(self, auth: AuthConfig) -> dict[str, str]:
        token = await self.registry.login(auth)
        return {"IdentityToken": token, "Status": "Login Succeeded"}

    def cancel_streams(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await self.downloads.close()
        await self.uploads.close()
        await self.registry.aclose()
