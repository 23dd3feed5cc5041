"""Content-addressed blob store: ``blobs/sha256/<hex>`` with verified ingest.

Modelled on containerd's local content store: a write goes to ``ingest/<dir>/data``, is
hashed as it is written, and on commit is checked against the expected size and digest,
fsynced and renamed into ``blobs/sha256/<hex>`` (then the directory is fsynced). A blob is
therefore either complete and verified or absent. Each writer gets its own ingest
directory, so concurrent writers of the same ref never share a file; whichever commits
second finds the blob present and discards its copy. Unlike containerd, ingests are not
resumable: anything left in ``ingest/`` when the store opens is from a crash and is removed.

Synchronous; the engine calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from engine import errdefs

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


def validate_digest(digest: str) -> str:
    """Return the hex part of a ``sha256:<64 hex>`` digest; InvalidParameter otherwise."""
    if not _DIGEST_RE.match(digest):
        algo, sep, _ = digest.partition(":")
        if sep and algo and algo != "sha256" and re.fullmatch(r"[a-z0-9]+([+._-][a-z0-9]+)*", algo):
            raise errdefs.InvalidParameter(f"unsupported digest algorithm: {algo}")
        raise errdefs.InvalidParameter("invalid checksum digest format")
    return digest[7:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class IngestWriter:
    """One in-progress blob write. Use as a context manager: leaving it uncommitted aborts."""

    def __init__(self, store: ContentStore, ref: str, expected: str | None, size: int | None) -> None:
        if expected is not None:
            validate_digest(expected)
        self._store = store
        self.ref = ref
        self._expected = expected
        self._size = size
        self._hash = hashlib.sha256()
        self._written = 0
        self._dir = store.root / "ingest" / secrets.token_hex(16)
        self._dir.mkdir(mode=0o700)
        try:
            (self._dir / "ref").write_text(ref, encoding="utf-8", errors="surrogateescape")
            self._file: BinaryIO | None = open(self._dir / "data", "xb")  # noqa: SIM115 - owned by the writer
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    @property
    def offset(self) -> int:
        return self._written

    def _open_file(self) -> BinaryIO:
        if self._file is None:
            raise errdefs.Internal(f"ingest {self.ref}: writer is closed")
        return self._file

    def write(self, b: bytes) -> None:
        f = self._open_file()
        f.write(b)
        self._hash.update(b)
        self._written += len(b)

    def digest(self) -> str:
        """Digest of what was written so far."""
        return "sha256:" + self._hash.hexdigest()

    def commit(self) -> str:
        """Verify and publish the blob; returns its digest. Mismatch: InvalidParameter, nothing kept."""
        f = self._open_file()
        try:
            dgst = self.digest()
            if self._size is not None and self._written != self._size:
                raise errdefs.InvalidParameter(
                    f"unexpected commit size {self._written}, expected {self._size}"
                )
            if self._expected is not None and dgst != self._expected:
                raise errdefs.InvalidParameter(f"unexpected commit digest {dgst}, expected {self._expected}")
            f.flush()
            os.fsync(f.fileno())
            f.close()
            self._file = None
            target = self._store.path(dgst)
            if not target.exists():
                os.chmod(self._dir / "data", 0o444)
                os.replace(self._dir / "data", target)
                _fsync_dir(target.parent)
            return dgst
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the ingest (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> IngestWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()


class ContentStore:
    """Blobs addressed by ``sha256:<hex>`` under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs" / "sha256"
        self._blobs.mkdir(parents=True, exist_ok=True)
        ingest = root / "ingest"
        # No daemon is writing yet, so every ingest is a leftover from a crash.
        shutil.rmtree(ingest, ignore_errors=True)
        ingest.mkdir(mode=0o700)

    def path(self, digest: str) -> Path:
        return self._blobs / validate_digest(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def _not_found(self, digest: str) -> errdefs.NotFound:
        return errdefs.NotFound(f"content digest {digest}: not found")

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise self._not_found(digest) from None

    def read_bytes(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise self._not_found(digest) from None

    def open(self, digest: str) -> BinaryIO:
        """Open a blob for streaming reads (caller closes)."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise self._not_found(digest) from None

    def writer(self, ref: str, expected: str | None = None, size: int | None = None) -> IngestWriter:
        return IngestWriter(self, ref, expected, size)

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        dgst = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected is not None:
            validate_digest(expected)
            if dgst != expected:
                raise errdefs.InvalidParameter(f"unexpected commit digest {dgst}, expected {expected}")
        if self.has(dgst):
            return dgst
        with self.writer(f"put-{dgst}", expected=dgst, size=len(data)) as w:
            w.write(data)
            return w.commit()

    def delete(self, digest: str) -> None:
        """Remove a blob; NotFound if it is not there (containerd's behaviour)."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            raise self._not_found(digest) from None

    def walk(self) -> Iterator[str]:
        """Every stored digest, in sorted order."""
        for name in sorted(os.listdir(self._blobs)):
            if len(name) == 64 and _DIGEST_RE.match("sha256:" + name):
                yield "sha256:" + name
