"""The OpenAPI document, exact: one ``Problem`` component that every error response refers
to, the bearer token as a security scheme, and operation ids named for their verbs (the
route functions' names). Generated clients read it without warnings."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from stimloop_contract.system import Problem
from stimloop_contract.trials import TrialUpload

from stimloop.api.errors import MEANING, PROBLEM

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def operation_id(route: APIRoute) -> str:
    """The route function's name: ``create_session``, ``upload_phase_one``, ..."""
    return route.name


def document(app: FastAPI) -> dict[str, Any]:
    """The document of ``app``, made once and kept."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema()
    schemas["TrialUpload"] = TrialUpload.model_json_schema()  # the uploads' JSON form
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A rig or analyst token: `stimloop token create --role rig|analyst`",
        }
    }
    doc["security"] = [{"bearer": []}]
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400:
                    response["description"] = MEANING.get(int(status), response.get("description"))
                    response["content"] = {PROBLEM: {"schema": PROBLEM_REF}}
    app.openapi_schema = doc
    return doc


def install(app: FastAPI) -> None:
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
