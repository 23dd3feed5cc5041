"""Headers every skiff response carries (dockerd's version middleware), as one shared constant.

Leaf module: the version middleware (``api/versions.py``) and the hijacked-stream heads
(``api/hijack.py``) both import from here, so the values cannot drift apart. The Go client reads
the OS type for ``docker stats`` from the parentheses of ``Server``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

API_VERSION = "1.50"


def _engine_version() -> str:
    try:
        return version("skiff")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


ENGINE_VERSION = _engine_version()

# Sorted by name: dockerd writes them with Go's Header.WriteSubset, which sorts the keys.
SERVER_HEADERS: tuple[tuple[str, str], ...] = (
    ("Api-Version", API_VERSION),
    ("Docker-Experimental", "false"),
    ("Ostype", "linux"),
    ("Server", f"skiff/{ENGINE_VERSION} (linux)"),
)
