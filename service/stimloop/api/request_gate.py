"""The first wall every request meets, before any route reads a byte of its body.

* The token: every ``/v1`` route but health needs a known bearer token; without one the
  request is refused with 401 at once (roles are checked later, by the routes).
* The size: each route has a body limit (uploads ``STIMLOOP_MAX_UPLOAD_BYTES``, everything
  else ``STIMLOOP_MAX_JSON_BYTES``), checked against ``Content-Length`` and counted on the
  stream itself (chunked bodies too): 413 as soon as it is passed, nothing more is read.

A pure ASGI middleware, so nothing is buffered on the way.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.exceptions import HTTPException

from stimloop.api.auth import role_of
from stimloop.api.errors import PROBLEM
from stimloop.runtime.settings import Settings

UPLOAD_ROUTES = (
    re.compile(r"^/v1/sessions/[^/]+/phase[12]$"),
    re.compile(r"^/v1/sessions/[^/]+/phase3/trials$"),
    re.compile(r"^/v1/stimulus-sets/upload$"),
    re.compile(r"^/ui/sessions/[^/]+/upload/phase[123]$"),  # the session page's uploads
)
OPEN_ROUTES = ("/v1/health",)


class BodyTooLargeError(HTTPException):
    """The request body passed its route's limit while it was being read (an HTTP 413, so
    FastAPI's body parsing passes it on as it is)."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(
            413,
            f"the body passed this route's limit of {limit} bytes ({setting}); nothing of it "
            "was stored",
        )


class RequestGate:
    def __init__(self, app: Any, settings: Settings) -> None:
        self.app, self.settings = app, settings

    def limit(self, path: str) -> tuple[int, str]:
        if any(p.match(path) for p in UPLOAD_ROUTES):
            return self.settings.max_upload_bytes, "STIMLOOP_MAX_UPLOAD_BYTES"
        return self.settings.max_json_bytes, "STIMLOOP_MAX_JSON_BYTES"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.settings.auth and path.startswith("/v1/") and path not in OPEN_ROUTES:
            refusal = self.check_token(headers.get("authorization", ""))
            if refusal:
                await respond(send, 401, "Unauthorized", refusal, path)
                return
        limit, setting = self.limit(path)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await respond(
                send,
                413,
                "Payload too large",
                f"the body has {declared} bytes; this route takes at most {limit} ({setting})",
                path,
            )
            return
        seen = 0
        started = False

        async def counted_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError(limit, setting)
            return message

        async def watched_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLargeError as exc:
            if started:
                raise
            await respond(send, 413, "Payload too large", str(exc.detail), path)

    def check_token(self, header: str) -> str | None:
        """None for a known token, else what is wrong with the header."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return (
                "send 'Authorization: Bearer <token>'; create one with "
                "`stimloop token create --role rig|analyst`"
            )
        if role_of(self.settings.tokens_path, token.strip()) is None:
            return (
                "this token is not known to the server: check that it was copied whole, or "
                "create one on the server with `stimloop token create --role rig|analyst`"
            )
        return None


async def respond(send: Any, status: int, title: str, detail: str, path: str) -> None:
    """A problem+json answer sent straight from the middleware (the body is never read)."""
    body = json.dumps(
        {
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": path,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
