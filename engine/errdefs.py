"""Typed engine errors; the only vocabulary the engine uses to say what went wrong.

Leaf module: anyone may import it, it imports nothing from the project. Messages carry
dockerd's exact wording because clients match on them (docker-py's ImageNotFound, the
CLI's exit codes 125/126/127). Only ``api/errors.py`` maps these types to HTTP statuses.

    EngineError
    ├── InvalidParameter   400  bad argument, bad JSON, unknown filter
    ├── Unauthorized       401  registry login with wrong credentials
    ├── Forbidden          403  e.g. removing a pre-defined network
    ├── NotFound           404  no such container / image / exec / network / volume
    ├── Conflict           409  name in use, container running, image in use
    ├── NotModified        304  start on running, stop on stopped (empty body)
    ├── Internal           500  anything unexpected
    ├── NotImplemented_    501
    └── Unavailable        503  swarm endpoints on a non-swarm node
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class; ``message`` is what the client sees."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameter(EngineError):
    pass


class Unauthorized(EngineError):
    pass


class Forbidden(EngineError):
    pass


class NotFound(EngineError):
    pass


class Conflict(EngineError):
    pass


class NotModified(EngineError):
    def __init__(self, message: str = "") -> None:
        super().__init__(message)


class Internal(EngineError):
    pass


class NotImplemented_(EngineError):
    pass


class Unavailable(EngineError):
    pass


def no_such_image(ref: str) -> NotFound:
    return NotFound(f"No such image: {ref}")


def no_such_container(ref: str) -> NotFound:
    return NotFound(f"No such container: {ref}")
