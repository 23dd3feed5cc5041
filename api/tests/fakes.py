"""Stand-ins for the services a router test does not exercise."""

from __future__ import annotations

from typing import Any, NoReturn


class _Unused:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> NoReturn:
        raise AssertionError(f"the test gave no {self._name} service, yet {self._name}.{attr} was used")


def unused(name: str) -> Any:
    """A service the routes under test must not reach: any use of it fails the test by name,
    instead of an AttributeError on None somewhere inside a handler."""
    return _Unused(name)
