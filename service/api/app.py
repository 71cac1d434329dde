"""The FastAPI application: routers per resource, one problem+json error handler."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from redis import Redis

from service import __version__
from service.api import errors, routes_sessions, routes_sets, routes_system
from service.settings import Settings
from service.store import Store

log = logging.getLogger("stimloop.api")


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> FastAPI:
    """The API over ``settings``' models store and Redis."""
    settings = settings or Settings()
    if redis is None:
        if not settings.redis_url:
            raise RuntimeError("set STIMLOOP_REDIS_URL, or start the API with `stimloop serve`")
        redis = Redis.from_url(settings.redis_url)
    app = FastAPI(
        title="stimloop",
        version=__version__,
        description="Closed-loop stimulus selection: fit readouts on phase one, return the "
        "phase-two list, analyse, and draw shared-feature saliency maps. Errors are "
        "problem+json (RFC 9457).",
    )
    app.state.settings = settings
    app.state.store = Store(settings.models_store)
    app.state.redis = redis

    @app.middleware("http")
    async def limit_size(request: Request, call_next):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes:
            return errors.problem(
                413,
                "Payload too large",
                f"the body has {declared} bytes; the limit is "
                f"{settings.max_upload_bytes} (STIMLOOP_MAX_UPLOAD_BYTES)",
                request.url.path,
            )
        return await call_next(request)

    errors.install(app)
    app.include_router(routes_system.router)
    app.include_router(routes_sets.router)
    app.include_router(routes_sessions.router)
    return app
