"""The media types of the API's non-JSON bodies and answers, in one place, as the OpenAPI
document declares them: binary files (NPZ arrays, zip archives) are
``application/octet-stream``, which every client generator reads as bytes."""

from __future__ import annotations

from typing import Any

BINARY = "application/octet-stream"
CSV = "text/csv"
PNG = "image/png"
HTML = "text/html"
ZIP_TYPES = (BINARY, "application/zip")  # accepted for zip uploads


def answer(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """A 200 answer of ``media_type`` for a route's ``responses``."""
    schema = (
        {"type": "string"} if media_type in (CSV, HTML) else {"type": "string", "format": "binary"}
    )
    return {200: {"description": description, "content": {media_type: {"schema": schema}}}}


def body(media_type: str, description: str, json_schema: dict | None = None) -> dict[str, Any]:
    """``openapi_extra`` declaring a request body of ``media_type`` (and JSON, when given)."""
    content: dict[str, Any] = {}
    if json_schema is not None:
        content["application/json"] = {"schema": json_schema}
    content[media_type] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "description": description, "content": content}}
