"""The one place that turns errors into HTTP responses (dockerd's ``httpstatus.FromError``).

Every error body is ``{"message": ...}`` with ``Content-Type: application/json`` exactly: the Go
client only decodes the body as JSON for that exact value, and docker-py reads ``["message"]``.
FastAPI's defaults (``{"detail": ...}``, 422) are replaced: validation failures are 400 and
unknown routes or methods are dockerd's ``404 page not found``.

``install(app)`` registers the handlers; ``CatchAllMiddleware`` answers anything else that
escapes a route with a 500 carrying ``str(exc)`` (as dockerd does for untyped errors) instead of
letting Starlette's ServerErrorMiddleware print a plain-text traceback page.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import errdefs

log = logging.getLogger("skiff.api")

JSON = "application/json"

STATUS_BY_ERROR: tuple[tuple[type[errdefs.EngineError], int], ...] = (
    (errdefs.InvalidParameter, 400),
    (errdefs.Unauthorized, 401),
    (errdefs.Forbidden, 403),
    (errdefs.NotFound, 404),
    (errdefs.Conflict, 409),
    (errdefs.NotModified, 304),
    (errdefs.Internal, 500),
    (errdefs.NotImplemented_, 501),
    (errdefs.Unavailable, 503),
)

PAGE_NOT_FOUND = "page not found"


def error_response(status: int, message: str) -> Response:
    """dockerd's WriteJSON: compact JSON, HTML characters unescaped, trailing newline."""
    body = json.dumps({"message": message}, ensure_ascii=False, separators=(",", ":")) + "\n"
    return Response(body.encode(), status_code=status, media_type=JSON)


def status_for(exc: BaseException) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(exc, kind):
            return status
    return 500


def engine_error_response(exc: errdefs.EngineError) -> Response:
    status = status_for(exc)
    if status == 304:
        # Both the Go client and docker-py treat a bodiless 304 as success (start/stop no-ops).
        return Response(status_code=304)
    return error_response(status, exc.message)


def validation_message(errors: Sequence[Any]) -> str:
    """One readable line from pydantic's error list, e.g. ``invalid query parameter "t": ...``."""
    parts: list[str] = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        where, names = (loc[0], loc[1:]) if loc else ("request", [])
        msg = str(err.get("msg", "invalid value"))
        kind = err.get("type", "")
        if kind == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", msg)
            parts.append(f"invalid JSON: {detail}")
        elif where == "body" and not names and kind == "missing":
            parts.append("request body is missing")
        elif where == "body":
            parts.append(
                f'invalid body field "{".".join(names)}": {msg}' if names else f"invalid body: {msg}"
            )
        else:
            label = {"query": "query parameter", "path": "path parameter", "header": "header"}.get(
                where, where
            )
            parts.append(f'invalid {label} "{".".join(names)}": {msg}')
    return "; ".join(parts) or "invalid request"


async def _on_engine_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, errdefs.EngineError)
    return engine_error_response(exc)


async def _on_validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, validation_message(exc.errors()))


async def _on_http_exception(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    # dockerd's router answers an unknown path and a known path with the wrong method alike.
    if exc.status_code in (404, 405):
        return error_response(404, PAGE_NOT_FOUND)
    if exc.status_code in (204, 304) or exc.status_code < 200:
        return Response(status_code=exc.status_code)
    return error_response(exc.status_code, str(exc.detail))


def install(app: FastAPI) -> None:
    app.add_exception_handler(errdefs.EngineError, _on_engine_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_exception)


def _leaf(exc: BaseException) -> BaseException:
    """Unwrap an exception group holding a single error (anyio task groups in streaming code)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class CatchAllMiddleware:
    """Pure ASGI: an exception escaping the app before the response started becomes JSON.

    Once a response has started (a stream), there is nothing left to send: the error is
    re-raised and the server closes the connection, which the client sees as a cut stream.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            leaf = _leaf(exc)
            if isinstance(leaf, errdefs.EngineError):
                response = engine_error_response(leaf)
            else:
                log.error("%s %s failed", scope.get("method"), scope.get("path"), exc_info=exc)
                response = error_response(500, str(leaf) or type(leaf).__name__)
            await response(scope, receive, send)
