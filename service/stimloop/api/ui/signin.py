"""Signing in to the live pages: a token (rig or analyst) is exchanged for a session cookie.

The cookie holds a random id, HttpOnly, SameSite=Strict, Secure over HTTPS, scoped to ``/ui``;
Redis keeps only that id's sha256 with the caller's role, for ``TTL`` seconds. The token itself
is never put in a URL, the browser's storage or a log. Forms that change anything must come
from the service's own pages (their Origin header), and every ``/ui`` answer carries a
Content-Security-Policy that admits scripts, styles and images from the service only.
"""

from __future__ import annotations

import hashlib
import json
import secrets

from fastapi import Request
from redis import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stimloop.api.auth import role_of
from stimloop.api.deps import Caller
from stimloop.runtime.settings import Settings

COOKIE = "stimloop_ui"
TTL = 12 * 3600  # a rig day
HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # no-referrer would send forms with Origin: null
    "cache-control": "no-store",
}


def _key(cfg: Settings, cookie: str) -> str:
    return f"{cfg.key_prefix}:ui:{hashlib.sha256(cookie.encode()).hexdigest()}"


def sign_in(cfg: Settings, r: Redis, token: str) -> str | None:
    """A new cookie value for a known token; None for an unknown one."""
    entry = role_of(cfg.tokens_path, token.strip())
    if entry is None:
        return None
    cookie = secrets.token_urlsafe(32)
    caller = {"role": entry["role"], "name": entry.get("name", ""), "id": entry["sha256"][:16]}
    r.set(_key(cfg, cookie), json.dumps(caller), ex=TTL)
    return cookie


def signed_in(request: Request, cfg: Settings, r: Redis) -> Caller | None:
    """The caller of a request's cookie; None without one, or when it expired or was ended."""
    if not cfg.auth:
        return Caller("rig", "anonymous", "anonymous")
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    found = r.get(_key(cfg, cookie))
    if found is None:
        return None
    return Caller(**json.loads(found))


def sign_out(request: Request, cfg: Settings, r: Redis) -> None:
    cookie = request.cookies.get(COOKIE)
    if cookie:
        r.delete(_key(cfg, cookie))


def cookie_options(request: Request) -> dict:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/ui",
        "max_age": TTL,
    }


def same_origin(request: Request) -> bool:
    """A form that changes something came from this service's pages: its Origin (or, where a
    browser sends none, its Referer) is the service's own scheme and host."""
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    origin = request.headers.get("origin") or request.headers.get("referer", "")
    return origin == own or origin.startswith(own + "/")


class UiHeaders:
    """The security headers on every ``/ui`` answer (an ASGI middleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/ui"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].decode() not in HEADERS]
                headers += [(k.encode(), v.encode()) for k, v in HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
