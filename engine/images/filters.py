"""Filter arguments for image list and prune, with dockerd's (api/types/filters) semantics.

The router hands the engine a plain ``{key: [values]}`` mapping (already decoded from either JSON
form); these helpers give the Go ``filters.Args`` behaviour the image code relies on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from engine import errdefs

FilterMap = Mapping[str, Sequence[str]]


def invalid_filter(key: str, values: Sequence[str] | None = None) -> errdefs.InvalidParameter:
    """filters' invalidFilter error: ``invalid filter 'k'`` or ``invalid filter 'k=[v w]'``."""
    if values is None:
        return errdefs.InvalidParameter(f"invalid filter '{key}'")
    return errdefs.InvalidParameter(f"invalid filter '{key}=[{' '.join(values)}]'")


def validate(filters: FilterMap, accepted: Iterable[str]) -> None:
    allowed = set(accepted)
    for key in filters:
        if key not in allowed:
            raise invalid_filter(key)


def match_kv(values: Sequence[str], labels: Mapping[str, str] | None) -> bool:
    """Args.MatchKVList: every ``k`` / ``k=v`` must be satisfied by ``labels``."""
    if not values:
        return True
    if not labels:
        return False
    for value in values:
        key, has_value, expected = value.partition("=")
        if key not in labels:
            return False
        if has_value and labels[key] != expected:
            return False
    return True


def bool_or_default(filters: FilterMap, key: str, default: bool) -> bool:
    """Args.GetBoolOrDefault: ``1``/``true`` or ``0``/``false``; anything else is an invalid filter."""
    if key not in filters:
        return default
    values = list(filters[key])
    if not values:
        raise invalid_filter(key)
    is_false = "0" in values or "false" in values
    is_true = "1" in values or "true" in values
    if is_false == is_true:
        raise invalid_filter(key, values)
    return is_true
