"""The ASGI application: routers, error handlers and the version middleware, nothing else.

``create_app(services)`` is called by ``api/server.py`` with the services from
``engine.wiring.build`` and by tests with fakes. The interactive docs and the OpenAPI route are
off (this is a local UNIX-socket API), but ``app.openapi()`` still builds the schema for tests.
"""

from __future__ import annotations

import importlib
import logging

from fastapi import FastAPI

from api import errors
from api.versions import VersionMiddleware
from engine.wiring import Services

log = logging.getLogger("skiff.api")

# One line per area; each module is api/routers/<name>.py exposing `router = APIRouter()`.
ROUTER_MODULES: tuple[str, ...] = (
    "system",
    "images",
    "exec",
    "containers",
    "containers_admin",
    "volumes",
    "networks",
    "commit",
    "archive",
    "auth",
    "sysdf",
    "stats",
)


def _include_routers(app: FastAPI) -> None:
    for name in ROUTER_MODULES:
        module_name = f"api.routers.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # the router exists but something it imports is missing: a real bug
            # Areas are written concurrently; a router not written yet is skipped loudly.
            log.warning("router %s not available yet", module_name)
            continue
        app.include_router(module.router)


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="skiff",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # Docker clients send JSON bodies without Content-Type (dockerd accepts them); the socket
        # is not reachable from a browser, so FastAPI's CSRF guard has nothing to protect.
        strict_content_type=False,
    )
    app.state.services = services
    errors.install(app)
    _include_routers(app)
    # add_middleware puts the latest outermost: versions/headers/access log wrap the catch-all.
    app.add_middleware(errors.CatchAllMiddleware)
    app.add_middleware(VersionMiddleware)
    return app
