"""The FastAPI application: routers per resource, one problem+json error handler."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from redis import Redis

from stimloop import __version__
from stimloop.api import access_log, errors, openapi
from stimloop.api.request_gate import RequestGate
from stimloop.api.routes import phase_three, sanity, sessions, sets, system
from stimloop.api.ui import pages as ui_pages
from stimloop.api.ui.signin import UiHeaders
from stimloop.runtime.settings import Settings
from stimloop.sessions.uploads import UploadPool
from stimloop.storage.registry import ensure_registry
from stimloop.storage.store import Store

log = logging.getLogger("stimloop.api")
UI_STATIC = Path(__file__).parent / "ui" / "static"


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> FastAPI:
    """The API over ``settings``' models store and Redis."""
    settings = settings or Settings()
    if redis is None:
        if not settings.redis_url:
            raise RuntimeError("set STIMLOOP_REDIS_URL, or start the API with `stimloop serve`")
        # short timeouts: with Redis down a request answers 503 at once instead of hanging
        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10)
    uploads = UploadPool(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        uploads.start()  # not during the first upload: spawning blocks the event loop
        access_log.install()  # after the server configured its loggers
        yield
        uploads.close()

    app = FastAPI(
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
        title="stimloop",
        version=__version__,
        description="Closed-loop stimulus selection: fit readouts on phase one, return the "
        "phase-two list, analyse, and draw shared-feature saliency maps. Errors are "
        "problem+json (RFC 9457).",
    )
    ensure_registry(settings.registry_path)
    app.state.settings = settings
    app.state.store = Store(settings.models_store)
    app.state.redis = redis
    app.state.uploads = uploads  # decodes and checks uploads in a process of its own

    errors.install(app, ui_pages.missing_page)
    openapi.install(app)
    app.add_middleware(RequestGate, settings=settings)  # token and size, before any body is read
    app.include_router(system.router)
    app.include_router(sets.router)
    app.include_router(sessions.router)
    app.include_router(sanity.router)
    app.include_router(phase_three.router)
    app.include_router(ui_pages.router)
    app.mount("/ui/static", StaticFiles(directory=UI_STATIC), name="ui-static")
    app.add_middleware(UiHeaders)
    return app
