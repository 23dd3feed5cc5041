"""System routes: ping, version, info, events, and the answers for what skiff does not run
(swarm-family endpoints: 503 as on a dockerd outside a swarm; managed plugins: none)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from api.deps import get_services
from api.eventfilter import EVENT_FILTERS, event_matcher
from api.params import Filters, docker_bool, parse_timestamp
from api.ping import PING_HEADERS, TEXT_PLAIN
from api.versions import api_version
from engine import errdefs
from engine.events import Event, Subscription
from engine.wiring import Services

router = APIRouter()

NOT_A_SWARM_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect '
    "this node to swarm and try again."
)
SWARM_AREAS = ("swarm", "nodes", "services", "tasks", "secrets", "configs")
ANY_METHOD = ["GET", "POST", "PUT", "DELETE", "HEAD"]

NDJSON = "application/x-ndjson"
JSON_SEQ = "application/json-seq"
JSON = "application/json"


# The server answers plain pings itself (api/ping.py) with these routes' exact bytes; the routes
# serve what it leaves to the app (a query string, pipelining, odd headers) and in-process tests.
@router.get("/_ping")
async def ping() -> Response:
    return PlainTextResponse("OK", headers=PING_HEADERS)


@router.head("/_ping")
async def ping_head() -> Response:
    return Response(b"", media_type=TEXT_PLAIN, headers=PING_HEADERS)


@router.get("/version")
async def version(services: Services = Depends(get_services)) -> Response:
    return JSONResponse(await services.system.version())


@router.get("/info")
async def info(services: Services = Depends(get_services)) -> Response:
    return JSONResponse(await services.system.info())


@router.get("/plugins")
async def plugins(filters: str | None = None) -> Response:
    parsed = Filters.parse(filters)
    parsed.validate(("capability", "enabled"))
    parsed.bool_value("enabled")
    return JSONResponse([])


def _no_plugin(name: str) -> errdefs.NotFound:
    return errdefs.NotFound(f'plugin "{name}" not found')


@router.get("/plugins/{name:path}/json")
async def plugin_inspect(name: str) -> Response:
    raise _no_plugin(name)


@router.post("/plugins/{name:path}/enable")
async def plugin_enable(name: str, timeout: str = "") -> Response:
    if not re.fullmatch(r"[+-]?[0-9]+", timeout):
        raise errdefs.Internal(f'strconv.Atoi: parsing "{timeout}": invalid syntax')
    raise _no_plugin(name)


async def _plugin_not_found(name: str) -> Response:
    raise _no_plugin(name)


for _action in ("disable", "push", "set"):
    router.add_api_route(f"/plugins/{{name:path}}/{_action}", _plugin_not_found, methods=["POST"])
router.add_api_route("/plugins/{name:path}", _plugin_not_found, methods=["DELETE"])


@router.post("/plugins/{name:path}/upgrade")
async def plugin_upgrade(name: str) -> Response:
    # The plugin is looked up by its normalized reference: a name without a tag means ":latest".
    tagged = name if ":" in name.rsplit("/", 1)[-1] or "@" in name else f"{name}:latest"
    raise _no_plugin(tagged)


async def _not_a_swarm_manager() -> Response:
    raise errdefs.Unavailable(NOT_A_SWARM_MANAGER)


@router.post("/swarm/leave")
async def swarm_leave() -> Response:
    # docker-py's leave_swarm(force=True) treats this 503 as success.
    raise errdefs.Unavailable("This node is not part of a swarm")


async def _swarm_logs(request: Request) -> Response:
    # dockerd checks the streams before it asks the (absent) cluster.
    q = request.query_params
    if not (docker_bool(q.get("stdout")) or docker_bool(q.get("stderr"))):
        raise errdefs.Internal("Bad parameters: you must choose at least one stream")
    raise errdefs.Unavailable(NOT_A_SWARM_MANAGER)


for _area in ("services", "tasks"):
    router.add_api_route(f"/{_area}/{{ref}}/logs", _swarm_logs, methods=["GET"], include_in_schema=False)

for _area in SWARM_AREAS:
    router.add_api_route(f"/{_area}", _not_a_swarm_manager, methods=ANY_METHOD, include_in_schema=False)
    router.add_api_route(
        f"/{_area}/{{rest:path}}", _not_a_swarm_manager, methods=ANY_METHOD, include_in_schema=False
    )


def negotiate_stream_type(accept: str | None) -> str:
    """dockerd 28's events content negotiation: NDJSON or JSON sequence on request, else JSON."""
    best, best_q = JSON, 0.0
    for item in (accept or "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media in (NDJSON, JSON_SEQ) and q > best_q:
            best, best_q = media, q
    return best


def _encoder(media_type: str) -> Callable[[Event], bytes]:
    prefix = b"\x1e" if media_type == JSON_SEQ else b""

    def encode(event: Event) -> bytes:
        return prefix + json.dumps(event.to_message(), separators=(",", ":")).encode() + b"\n"

    return encode


class EventStreamResponse(StreamingResponse):
    """Closes the subscription however the response ends, even if streaming never began."""

    def __init__(self, subscription: Subscription, content: AsyncIterator[bytes], media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self.subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.subscription.close()


@router.get("/events")
async def events(
    request: Request,
    since: str | None = None,
    until: str | None = None,
    filters: str | None = None,
    services: Services = Depends(get_services),
) -> Response:
    since_ns, until_ns = parse_timestamp(since), parse_timestamp(until)
    # dockerd compares with a zero time.Time when `since` is absent: nothing is before it.
    if until_ns is not None and since_ns is not None and until_ns < since_ns:
        raise errdefs.InvalidParameter(f"`since` time ({since}) cannot be after `until` time ({until})")
    parsed = Filters.parse(filters)
    parsed.validate(EVENT_FILTERS)
    hide_image_create = api_version(request) < (1, 46)  # image "create" events appeared in 1.46

    def wanted(event: Event) -> bool:
        return not (hide_image_create and event.type == "image" and event.action == "create")

    subscription = services.events.subscribe(since=since_ns, until=until_ns, match=event_matcher(parsed))
    only_past = until_ns is not None and until_ns <= time.time_ns()
    media_type = negotiate_stream_type(request.headers.get("accept"))
    encode = _encoder(media_type)

    async def stream() -> AsyncIterator[bytes]:
        for past in subscription.backlog:
            if wanted(past):
                yield encode(past)
        if only_past:
            return
        while True:
            event: Event | None
            if until_ns is None:
                event = await subscription.get()
            else:
                remaining = (until_ns - time.time_ns()) / 1e9
                if remaining <= 0:
                    return
                try:
                    event = await asyncio.wait_for(subscription.get(), remaining)
                except TimeoutError:
                    return
            if event is None:  # daemon shutting down, or this listener fell too far behind
                return
            if wanted(event):
                yield encode(event)

    return EventStreamResponse(subscription, stream(), media_type)
