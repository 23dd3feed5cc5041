"""Turning a layer blob (plain, gzip or zstd tar) into a layer snapshot plus a saved copy of the blob.

One pass over the blob: the raw bytes are copied into the content store (so ``docker save`` can later
reproduce the exact tar, hence the exact diff ID) while the decompressed stream is unpacked by the
LayerStore, counted (a streamed save needs the tar's size up front) and hashed (to report a wrong
diff ID in dockerd's words). Synchronous; runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, BinaryIO, Protocol, cast

from engine import errdefs
from storage.content import ContentStore
from storage.images import LayerRecord
from storage.layers import LayerStore, LayerStream, chain_id

MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
_MEDIA_TYPES = {"none": MT_LAYER, "gzip": MT_LAYER_GZIP, "zstd": MT_LAYER_ZSTD}
UNCOMPRESSED_TYPES = {
    MT_LAYER,
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
}
_CHUNK = 1 << 20


class _Sink(Protocol):
    def write(self, b: bytes, /) -> object: ...


class _Tee(io.RawIOBase):
    """Reads from ``src`` and writes every byte to ``sink``."""

    def __init__(self, src: IO[bytes], sink: _Sink) -> None:
        super().__init__()
        self._src = src
        self._sink = sink

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self._src.read(len(view))
        view[: len(data)] = data
        if data:
            self._sink.write(data)
        return len(data)


class _Counter(io.RawIOBase):
    """Counts and hashes what is read through it."""

    def __init__(self, src: IO[bytes]) -> None:
        super().__init__()
        self._src = src
        self.size = 0
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self._src.read(len(view))
        view[: len(data)] = data
        self.size += len(data)
        self.hash.update(data)
        return len(data)


@dataclass
class Ingested:
    """The layer's record, and whether its snapshot / blob were created by this ingest (to undo)."""

    record: LayerRecord
    new_layer: bool
    new_blob: bool


def ingest_layer(
    layers: LayerStore,
    content: ContentStore,
    parent_chain: str | None,
    source: IO[bytes],
    *,
    expected_diff_id: str | None,
    expected_blob: str | None = None,
    layer_index: int = 0,
) -> Ingested:
    """Apply ``source`` on ``parent_chain`` and keep the blob; ``Ingested`` says what is new (to undo)."""
    known_chain = chain_id(parent_chain, expected_diff_id) if expected_diff_id else None
    layer_existed = known_chain is not None and layers.has(known_chain)
    with content.writer(f"layer-{expected_diff_id or 'import'}", expected=expected_blob) as writer:
        raw = io.BufferedReader(_Tee(source, writer), _CHUNK)
        # The layer store decompresses, counts and hashes this one stream: the diff id and the
        # tar's size come from it, so the bytes are hashed once for the diff id and once (raw,
        # in the writer) for the blob.
        stream = LayerStream(raw)
        try:
            applied = layers.apply(parent_chain, stream, expected_diff_id=expected_diff_id)
        except errdefs.InvalidParameter as e:
            if expected_diff_id is not None and e.message.startswith("layer verification failed"):
                stream.drain()
                raise errdefs.InvalidParameter(
                    f'invalid diffID for layer {layer_index}: expected "{expected_diff_id}", '
                    f'got "{stream.diff_id()}"'
                ) from None
            raise
        new_layer = not layer_existed and (known_chain is None or known_chain == applied.chain_id)
        try:
            stream.drain()
            while raw.read(_CHUNK):
                pass
            blob_existed = content.has(writer.digest())
            blob = writer.commit()
        except BaseException:
            if new_layer:
                _remove_quietly(layers, applied.chain_id)
            raise
    record = LayerRecord(
        diff_id=applied.diff_id,
        chain_id=applied.chain_id,
        blob=blob,
        media_type=_MEDIA_TYPES[stream.compression],
        size=content.size(blob),
        uncompressed_size=stream.size,
    )
    return Ingested(record, new_layer, not blob_existed)


def _remove_quietly(layers: LayerStore, chain: str) -> None:
    with contextlib.suppress(errdefs.EngineError):
        layers.remove(chain)


def apply_stored_blob(
    layers: LayerStore,
    content: ContentStore,
    parent_chain: str | None,
    blob: str,
    *,
    expected_diff_id: str,
    wrap: Callable[[IO[bytes]], IO[bytes]] | None = None,
) -> Ingested:
    """Unpack a layer blob that is already in the content store (a pull's download) on ``parent_chain``.

    ``wrap`` may interpose on the raw blob (the pull's ``Extracting`` progress). The record keeps the
    blob as downloaded, its media type from its actual compression, and the tar's size.
    """
    known_chain = chain_id(parent_chain, expected_diff_id)
    layer_existed = layers.has(known_chain)
    with content.open(blob) as raw:
        src: IO[bytes] = wrap(raw) if wrap is not None else raw
        stream = LayerStream(cast(BinaryIO, src))
        counter = _Counter(stream.reader)
        counted: BinaryIO = io.BufferedReader(counter, _CHUNK)
        try:
            applied = layers.apply(parent_chain, counted, expected_diff_id=expected_diff_id)
        except errdefs.InvalidParameter as e:
            if e.message.startswith("layer verification failed"):
                raise errdefs.InvalidParameter(
                    "layers from manifest don't match image configuration"
                ) from None
            raise
        try:
            while counted.read(_CHUNK):
                pass
            while src.read(_CHUNK):
                pass
        except BaseException:
            if not layer_existed:
                _remove_quietly(layers, applied.chain_id)
            raise
    record = LayerRecord(
        diff_id=applied.diff_id,
        chain_id=applied.chain_id,
        blob=blob,
        media_type=_MEDIA_TYPES[stream.compression],
        size=content.size(blob),
        uncompressed_size=counter.size,
    )
    return Ingested(record, not layer_existed, False)
