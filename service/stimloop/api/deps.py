"""Dependencies shared by the routers: settings, store, Redis, auth, request bodies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from redis import Redis

from stimloop.api.auth import role_of
from stimloop.api.errors import ApiError
from stimloop.runtime.settings import Settings
from stimloop.storage.session import SESSION_ID
from stimloop.storage.store import Store

# a session's id as a path parameter, with the pattern the document states
SessionId = Annotated[
    str, Path(pattern=SESSION_ID.pattern, description="A session's id (12 hex digits)")
]


def settings(request: Request) -> Settings:
    return request.app.state.settings


def store(request: Request) -> Store:
    return request.app.state.store


def redis(request: Request) -> Redis:
    return request.app.state.redis


# what a route receives, as its signature says it: ``cfg: SettingsDep``
SettingsDep = Annotated[Settings, Depends(settings)]
StoreDep = Annotated[Store, Depends(store)]
RedisDep = Annotated[Redis, Depends(redis)]


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the token's role, name and id (the first 16 hex of its sha256)."""

    role: str
    name: str
    id: str


def require(*roles: str) -> Callable:
    """A dependency admitting bearer tokens of ``roles`` (401 without one, 403 for another);
    returns the ``Caller``."""

    def check(request: Request, cfg: Settings = Depends(settings)) -> Caller:
        if not cfg.auth:
            return Caller("rig", "anonymous", "anonymous")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "Unauthorized",
                "send 'Authorization: Bearer <token>'; create one with "
                "`stimloop token create --role rig|analyst`",
            )
        entry = role_of(cfg.tokens_path, token.strip())
        if entry is None:
            raise ApiError(401, "Unauthorized", "this token is not known to the server")
        if entry["role"] not in roles:
            raise ApiError(
                403,
                "Forbidden",
                f"{'an' if entry['role'][:1] in 'aeiou' else 'a'} {entry['role']} token "
                f"cannot do this; it needs role {' or '.join(roles)}",
            )
        return Caller(entry["role"], entry.get("name", ""), entry["sha256"][:16])

    return check


RIG = require("rig")
READ = require("rig", "analyst")
RigCaller = Annotated[Caller, Depends(RIG)]  # the rig's token, and who it is
AnyCaller = Annotated[Caller, Depends(READ)]  # the rig's or an analyst's


async def body_bytes(request: Request, cfg: Settings) -> bytes:
    """The request body, refused with 413 beyond ``max_upload_bytes``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cfg.max_upload_bytes:
        raise ApiError(
            413,
            "Payload too large",
            f"the body has {declared} bytes; the limit is {cfg.max_upload_bytes} "
            "(STIMLOOP_MAX_UPLOAD_BYTES)",
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cfg.max_upload_bytes:
            raise ApiError(
                413,
                "Payload too large",
                f"the body exceeds the limit of {cfg.max_upload_bytes} bytes",
            )
        chunks.append(chunk)
    return b"".join(chunks)
