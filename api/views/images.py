"""Image responses as each API version expects them (the engine produces the 1.50 shapes).

- < 1.43: list rows of untagged images carry the ``<none>:<none>`` / ``<none>@<none>``
  placeholders, and an empty ``RepoTags``/``RepoDigests`` is ``null`` (Go's nil slice).
- < 1.44: ``VirtualSize`` (= ``Size``) in list rows and inspect; an image without ``Created``
  inspects as ``0001-01-01T00:00:00Z``.
- < 1.45: inspect still has ``Container`` and ``ContainerConfig``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

ZERO_TIME = "0001-01-01T00:00:00Z"


def docker_json(obj: Any, status: int = 200) -> Response:
    """dockerd's WriteJSON: compact JSON plus a newline, ``Content-Type: application/json``."""
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
    return Response(body.encode(), status_code=status, media_type="application/json")


def _legacy_refs(row: dict[str, Any]) -> dict[str, Any]:
    if not row["RepoTags"] and not row["RepoDigests"]:
        return {**row, "RepoDigests": ["<none>@<none>"], "RepoTags": ["<none>:<none>"]}
    return {**row, "RepoDigests": row["RepoDigests"] or None, "RepoTags": row["RepoTags"] or None}


def list_rows(rows: list[dict[str, Any]], version: tuple[int, int]) -> list[dict[str, Any]]:
    if version < (1, 43):
        rows = [_legacy_refs(row) for row in rows]
    if version < (1, 44):
        rows = [{**row, "VirtualSize": row["Size"]} for row in rows]
    return rows


def inspect(doc: dict[str, Any], version: tuple[int, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "Container" and version >= (1, 45):
            continue
        if key == "ContainerConfig" and version >= (1, 45):
            continue
        if key == "Created" and not value and version < (1, 44):
            value = ZERO_TIME
        out[key] = value
        if key == "Size" and version < (1, 44):
            out["VirtualSize"] = value
    return out
