"""Every refusal mapped to RFC 9457 problem+json in one place: the API's own (``ApiError``),
the use cases' (``sessions.errors``, by class), a missing or outdated session, invalid
requests, HTTP errors, Redis down, and a bug."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from stimloop.sessions.errors import (
    ForbiddenError,
    InvalidInputError,
    SessionError,
    StateConflictError,
    UnknownItemError,
    UnsupportedMediaError,
)
from stimloop.storage.session import NotFoundError, OutdatedSessionError

log = logging.getLogger("stimloop.api")
PROBLEM = "application/problem+json"


class ApiError(Exception):
    """A caller's mistake (4xx) or a state conflict, with what to do about it."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail

    def __reduce__(self):  # raised in the upload process, re-raised in the API
        return (ApiError, (self.status, self.title, self.detail))


def problem(
    status: int,
    title: str,
    detail: str,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


MEANING = {
    400: "Bad input (a file, an id, a value), named in the detail",
    401: "No known bearer token",
    403: "The token's role may not do this, or a path outside the allowed folders",
    404: "No such thing (session, set, job, result)",
    409: "The session's state does not allow this now",
    410: "A session stored by an earlier version of stimloop: create it again",
    413: "The body passes the route's size limit",
    415: "Unsupported media type",
    422: "The body or parameters do not validate",
    503: "Redis does not answer; try again (Retry-After)",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for ``codes`` (all of ``MEANING`` when none); ``api.openapi`` gives
    each the one ``Problem`` component as its problem+json body."""
    return {code: {"description": MEANING[code]} for code in (codes or MEANING)}


def _location(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "request"


def _allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document lists for the request's path (a path may be served
    by several routes, one per method)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        regex, _, _ = compile_path(template)
        if regex.match(request.url.path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


# the answer to each of the use cases' refusals (``sessions.errors``)
STATUS_OF: dict[type[SessionError], int] = {
    StateConflictError: 409,
    ForbiddenError: 403,
    UnknownItemError: 404,
    InvalidInputError: 422,
    UnsupportedMediaError: 415,
}


def status_of(exc: SessionError) -> int:
    """The HTTP status of a use case's refusal (409 for one this table does not name)."""
    return next((code for kind, code in STATUS_OF.items() if isinstance(exc, kind)), 409)


HtmlPage = Callable[[Request, int, str], Response]


def wants_html(request: Request) -> bool:
    """A browser opening one of the live pages (``/ui``, a GET asking for HTML): it gets an
    HTML page for an error, not problem+json."""
    return (
        request.url.path.startswith("/ui")
        and request.method == "GET"
        and "text/html" in request.headers.get("accept", "")
    )


def install(app: FastAPI, html_page: HtmlPage | None = None) -> None:
    """The error handlers; ``html_page`` (status, why) answers a browser on the live pages
    (``wants_html``) for a missing page or session."""

    def as_page(request: Request, status: int, detail: str) -> Response | None:
        return html_page(request, status, detail) if html_page and wants_html(request) else None

    @app.exception_handler(SessionError)
    async def refused(request: Request, exc: SessionError) -> JSONResponse:
        return problem(status_of(exc), exc.title, exc.detail, request.url.path)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, request.url.path)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> Response:
        page = as_page(request, 410 if isinstance(exc, OutdatedSessionError) else 404, str(exc))
        if page is not None:
            return page
        if isinstance(exc, OutdatedSessionError):
            return problem(410, "Session from an earlier version", str(exc), request.url.path)
        return problem(404, "Not found", str(exc), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = [f"{_location(e['loc'])}: {e['msg']}" for e in exc.errors()[:10]]
        detail = "; ".join(parts) + ". Fix these fields and send the request again."
        in_path = all(e["loc"][:1] == ("path",) for e in exc.errors())
        page = as_page(request, 404 if in_path else 422, "No such page: " + detail)
        if page is not None:
            return page
        return problem(422, "Invalid request", detail, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            page = as_page(request, 404, f"No page at {request.url.path}.")
            if page is not None:
                return page
        title = "Payload too large" if exc.status_code == 413 else "HTTP error"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Allow: every method of the path (RFC 9110), all routes
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed here; use {' or '.join(allowed)}"
            return problem(405, "Method not allowed", detail, request.url.path, headers)
        return problem(exc.status_code, title, str(exc.detail), request.url.path, headers)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
        if not isinstance(exc, RedisConnectionError | RedisTimeoutError):
            log.exception("Redis error on %s", request.url.path)
        return problem(
            503,
            "Service unavailable",
            f"Redis (the job queue and activation cache) does not answer ({exc}); nothing "
            "stored was lost: try again in a few seconds, and check that Redis runs",
            request.url.path,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem(
            500,
            "Internal error",
            f"this is a bug in stimloop: {type(exc).__name__}",
            request.url.path,
        )
