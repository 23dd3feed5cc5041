"""Which repositories of which registry are known to hold a blob (dockerd's v2 metadata service).

Pulls and pushes record ``digest → (registry host, repository path)``; a later push to another
repository of the same registry tries a cross-repository mount from one of them instead of
uploading. Kept in memory only: after a restart a push simply uploads (the registry deduplicates).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

_MAX_BLOBS = 4096
_MAX_SOURCES = 4


class BlobSources:
    def __init__(self) -> None:
        self._sources: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, digest: str, host: str, path: str) -> None:
        with self._lock:
            entries = self._sources.pop(digest, [])
            if (host, path) in entries:
                entries.remove((host, path))
            entries.insert(0, (host, path))
            self._sources[digest] = entries[:_MAX_SOURCES]
            while len(self._sources) > _MAX_BLOBS:
                self._sources.popitem(last=False)

    def candidates(self, digest: str, host: str, exclude_path: str) -> list[str]:
        """Repositories on ``host`` (other than ``exclude_path``) that had ``digest``, newest first."""
        with self._lock:
            return [p for h, p in self._sources.get(digest, []) if h == host and p != exclude_path]
