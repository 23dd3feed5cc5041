"""Image layers: unpack a layer tar into a committed snapshot named by its chain id.

A layer is applied in one pass: the stream is sniffed (gzip ``1f 8b``, zstd ``28 b5 2f fd``,
else plain tar), decompressed, hashed (that hash is the diff id) and unpacked at the same
time into a fresh active snapshot, which is then committed under the layer's chain id
(OCI image spec: ChainID(L0) = DiffID(L0), ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) +
" " + DiffID(Ln))).

The tar is unpacked straight into the snapshot's own ``fs`` directory, not through an
overlay mount. That directory *is* the layer's upper dir, and overlayfs represents a Docker
``.wh.`` whiteout as a char 0/0 node and ``.wh..wh..opq`` as ``trusted.overlay.opaque=y`` in
the upper dir, which is exactly what ``archive.apply_layer_tar(whiteouts="overlay")`` writes.
This is what dockerd's overlay2 driver and containerd's overlay applier do: no mount per
layer, no copy-up, and whiteouts are written as data instead of being simulated by deleting
through a merged view. The parent layers are only consulted for the owner and mode of
directories the tar implies without listing. A hard link in a layer must point at a file
of the same layer (as in every tar that dockerd or buildkit writes).

The diff id is only known once the stream is read, so a layer that already exists is
recognised after unpacking (the duplicate is dropped), unless the caller passes the
``expected_diff_id`` from the image config: then an existing layer is only hashed.
On any failure the temporary snapshot is removed, so nothing is left behind.

Synchronous; the engine calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import secrets
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import zstandard

from engine import errdefs
from storage.archive import apply_layer_tar
from storage.content import ContentStore, validate_digest
from storage.mount import Mount
from storage.snapshots import OverlaySnapshotter, disk_usage

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LABEL_DIFF_ID = "skiff.diff-id"
LABEL_SIZE = "skiff.size"
_EXTRACT_PREFIX = "extract-"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class AppliedLayer:
    diff_id: str
    chain_id: str
    size: int


def chain_id(parent_chain: str | None, diff_id: str) -> str:
    """ChainID of a layer with diff id ``diff_id`` on top of the layer chain ``parent_chain``."""
    validate_digest(diff_id)
    if parent_chain is None:
        return diff_id
    validate_digest(parent_chain)
    return "sha256:" + hashlib.sha256(f"{parent_chain} {diff_id}".encode()).hexdigest()


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain id of every prefix of ``diff_ids`` (bottom layer first)."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(chain_id(out[-1] if out else None, diff_id))
    return out


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _PrefixedReader(io.RawIOBase):
    """Gives back the sniffed magic bytes before the rest of the stream."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        readinto = getattr(self._rest, "readinto", None)
        if readinto is not None:
            return int(readinto(view) or 0)  # straight into the caller's buffer, no copy
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)


class _HashingReader(io.RawIOBase):
    """Decompressed layer stream; hashes every byte handed out (that hash is the diff id)."""

    def __init__(self, source: _Readable, compression: str) -> None:
        self._source = source
        self._compression = compression
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        try:
            if isinstance(self._source, io.BufferedIOBase):
                n = self._source.readinto(view)
                self.hash.update(view[:n])
                self.size += n
                return n
            data = self._source.read(len(view))
        except EOFError:
            raise errdefs.InvalidParameter("unexpected EOF") from None
        except gzip.BadGzipFile as e:
            raise errdefs.InvalidParameter(f"gzip: invalid header: {e}") from None
        except zlib.error as e:
            raise errdefs.InvalidParameter(f"flate: corrupt input: {e}") from None
        except zstandard.ZstdError as e:
            raise errdefs.InvalidParameter(f"zstd: {e}") from None
        view[: len(data)] = data
        self.hash.update(data)
        self.size += len(data)
        return len(data)


class _ZstdReader:
    """Multi-frame zstd decoding that, unlike ``stream_reader``, reports a truncated frame.

    Input is fed in small pieces because one call returns all the output of its input and
    zstd's RLE blocks expand 32768-fold; 1 KiB in is at most 32 MiB out.
    """

    _FEED = 1024

    def __init__(self, source: _Readable) -> None:
        self._source = source
        self._dctx = zstandard.ZstdDecompressor()
        self._frame: zstandard.ZstdDecompressionObj | None = None
        self._input = memoryview(b"")
        self._out = b""
        self._pos = 0

    def read(self, size: int = -1, /) -> bytes:
        while self._pos >= len(self._out):
            if not self._input:
                self._input = memoryview(self._source.read(_CHUNK))
                if not self._input:
                    if self._frame is not None:
                        raise EOFError("zstd: truncated frame")
                    return b""
            piece, self._input = self._input[: self._FEED], self._input[self._FEED :]
            if self._frame is None:
                self._frame = self._dctx.decompressobj()
            self._out, self._pos = self._frame.decompress(piece), 0
            if self._frame.eof:
                # The next frame (if any) starts in what this one did not consume.
                self._input = memoryview(self._frame.unused_data + bytes(self._input))
                self._frame = None
        end = len(self._out) if size < 0 else self._pos + size
        data = self._out[self._pos : end]
        self._pos += len(data)
        return data


def _sniff(fileobj: BinaryIO) -> tuple[bytes, str]:
    head = b""
    while len(head) < 4:
        chunk = fileobj.read(4 - len(head))
        if not chunk:
            break
        head += chunk
    if head.startswith(GZIP_MAGIC):
        return head, "gzip"
    if head.startswith(ZSTD_MAGIC):
        return head, "zstd"
    return head, "none"


class LayerStream:
    """A layer blob (plain, gzip or zstd) as an uncompressed, hashed ``BinaryIO``."""

    def __init__(self, fileobj: BinaryIO) -> None:
        head, self.compression = _sniff(fileobj)
        raw = io.BufferedReader(_PrefixedReader(head, fileobj), _CHUNK)
        source: _Readable
        if self.compression == "gzip":
            source = gzip.GzipFile(fileobj=raw, mode="rb")
        elif self.compression == "zstd":
            source = _ZstdReader(raw)
        else:
            source = raw
        self._hashing = _HashingReader(source, self.compression)
        self.reader = io.BufferedReader(self._hashing, _CHUNK)

    def drain(self) -> None:
        # The diff id covers the whole uncompressed stream, including whatever follows the
        # tar's end-of-archive marker (record padding), exactly as dockerd hashes it.
        while self.reader.read(_CHUNK):
            pass

    def diff_id(self) -> str:
        return "sha256:" + self._hashing.hash.hexdigest()

    @property
    def size(self) -> int:
        """Uncompressed bytes read so far (the tar's size once drained)."""
        return self._hashing.size


class LayerStore:
    """Layers as committed overlay snapshots named by chain id."""

    def __init__(
        self, content: ContentStore, snapshotter: OverlaySnapshotter, *, allow_devices: bool = True
    ) -> None:
        # allow_devices: dockerd running as root creates the device nodes a layer carries,
        # and images in the wild (old debian/centos bases) do carry some.
        self.content = content
        self.snapshotter = snapshotter
        self._allow_devices = allow_devices
        for info in list(snapshotter.walk()):
            if info.kind == "active" and info.name.startswith(_EXTRACT_PREFIX):
                # An extraction interrupted by a crash.
                snapshotter.remove(info.name)

    @staticmethod
    def chain_id(diff_ids: Sequence[str]) -> str:
        """Chain id of the whole stack ``diff_ids`` (bottom layer first)."""
        if not diff_ids:
            raise errdefs.InvalidParameter("no diff ids: a chain id needs at least one layer")
        return chain_ids(diff_ids)[-1]

    def has(self, chain_id: str) -> bool:
        try:
            return self.snapshotter.stat(chain_id).kind == "committed"
        except errdefs.NotFound:
            return False

    def _committed(self, chain: str) -> dict[str, str]:
        try:
            info = self.snapshotter.stat(chain)
        except errdefs.NotFound:
            info = None
        if info is None or info.kind != "committed":
            raise errdefs.NotFound(f"layer {chain} does not exist")
        return info.labels

    def size(self, chain_id: str) -> int:
        """Bytes of the layer's own files (what dockerd reports as the layer's size)."""
        labels = self._committed(chain_id)
        if LABEL_SIZE in labels:
            return int(labels[LABEL_SIZE])
        return disk_usage(self.snapshotter.upperdir(chain_id)).size

    def diff_id(self, chain_id: str) -> str:
        labels = self._committed(chain_id)
        if LABEL_DIFF_ID not in labels:
            raise errdefs.NotFound(f"layer {chain_id} has no recorded diff id")
        return labels[LABEL_DIFF_ID]

    def apply(
        self,
        parent_chain_id: str | None,
        fileobj: BinaryIO | LayerStream,
        *,
        expected_diff_id: str | None = None,
    ) -> AppliedLayer:
        """Unpack layer ``fileobj`` on top of ``parent_chain_id`` (None: a base layer).

        ``expected_diff_id`` (from the image config) lets an existing layer be recognised
        without unpacking, and a mismatch is refused with InvalidParameter. A caller that needs
        the stream's compression, size or diff id afterwards passes a ``LayerStream`` of its
        own, which is then decompressed and hashed once, here, rather than twice.
        """
        if parent_chain_id is not None:
            self._committed(parent_chain_id)
        stream = fileobj if isinstance(fileobj, LayerStream) else LayerStream(fileobj)
        if expected_diff_id is not None:
            known = chain_id(parent_chain_id, expected_diff_id)
            if self.has(known):
                stream.drain()
                self._verify(stream.diff_id(), expected_diff_id)
                return AppliedLayer(expected_diff_id, known, self.size(known))
        key = f"{_EXTRACT_PREFIX}{secrets.token_hex(8)}"
        self.snapshotter.prepare(key, parent_chain_id)
        try:
            upper = self.snapshotter.upperdir(key)
            apply_layer_tar(
                stream.reader,
                upper,
                whiteouts="overlay",
                allow_devices=self._allow_devices,
                parents=self.snapshotter.lowerdirs(key),
            )
            stream.drain()
            diff_id = stream.diff_id()
            if expected_diff_id is not None:
                self._verify(diff_id, expected_diff_id)
            chain = chain_id(parent_chain_id, diff_id)
            size = disk_usage(upper).size
            try:
                self.snapshotter.commit(chain, key, labels={LABEL_DIFF_ID: diff_id, LABEL_SIZE: str(size)})
            except errdefs.Conflict:
                if not self.has(chain):
                    raise
                # The same layer landed first (applied before, or concurrently): keep that one.
                self.snapshotter.remove(key)
                return AppliedLayer(diff_id, chain, self.size(chain))
            return AppliedLayer(diff_id, chain, size)
        except BaseException:
            if self.snapshotter.exists(key):
                self.snapshotter.remove(key)
            raise

    def apply_blob(
        self, parent_chain_id: str | None, digest: str, *, expected_diff_id: str | None = None
    ) -> AppliedLayer:
        """``apply`` with the layer read from the content store."""
        with self.content.open(digest) as f:
            return self.apply(parent_chain_id, f, expected_diff_id=expected_diff_id)

    @staticmethod
    def _verify(diff_id: str, expected: str) -> None:
        if diff_id != expected:
            raise errdefs.InvalidParameter(
                f"layer verification failed: expected diff id {expected}, got {diff_id}"
            )

    def remove(self, chain_id: str) -> None:
        """Remove a layer; NotFound if missing, Conflict while a layer or container builds on it."""
        self._committed(chain_id)
        self.snapshotter.remove(chain_id)

    def prepare_rw(self, key: str, parent_chain_id: str | None) -> list[Mount]:
        """A container's read-write layer on top of ``parent_chain_id``; returns its mounts."""
        if parent_chain_id is not None:
            self._committed(parent_chain_id)
        return self.snapshotter.prepare(key, parent_chain_id)

    def remove_rw(self, key: str) -> None:
        self.snapshotter.remove(key)
