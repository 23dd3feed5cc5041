"""Go-compatible text helpers, so error messages read exactly as dockerd prints them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

_ATOI = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def quote(value: str) -> str:
    """Go's ``%q`` for printable text (strconv.Quote); control characters differ only in escape style."""
    return json.dumps(value, ensure_ascii=False)


def quote_list(values: Iterable[str]) -> str:
    """Go's ``%q`` applied to a ``[]string``: ``["a" "b"]``."""
    return "[" + " ".join(quote(v) for v in values) + "]"


def atoi(text: str) -> int | None:
    """strconv.Atoi: optional sign and ASCII digits only, 64-bit range; None where Go returns an error."""
    if not _ATOI.fullmatch(text):
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None
