"""What the hub's OpenAPI schema says about bodies, taken from the core's own models so it cannot drift.

``POST updates`` is read and validated by the core (``parse_update_batch``, as in the extension: the same
refusals for NaN, lone surrogates and oversized bodies), so its request body is declared here from
``UpdateBatch``'s JSON schema rather than through a FastAPI body parameter. Replies are declared with the
core's ``Job`` (a dataclass, which pydantic describes as it is).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, TypeAdapter

from ..core import Job, UpdateBatch

__all__ = ["CancelReply", "ErrorBody", "JobList", "errors", "install_openapi", "update_body"]

_REF = "#/components/schemas/{model}"


class ErrorBody(BaseModel):
    """Every error: a machine-readable name (``not_found``, ``invalid_update``, ...) and what was wrong."""

    error: str
    detail: Any = None


class CancelReply(BaseModel):
    """The reply to ``POST updates``: the jobs of the request whose cancellation was asked for."""

    cancel: list[str]


class JobList(BaseModel):
    """``GET jobs``: a page of jobs, newest first; how many match in all; the cursor of the next page."""

    jobs: list[Job]
    total: int
    next: str | None


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entries of the error statuses a route can answer (403 is every route's)."""
    return {status: {"model": ErrorBody, "description": "a protocol error"} for status in sorted({403, *statuses})}


def update_body() -> dict[str, Any]:
    """``openapi_extra`` for ``POST updates``."""
    schema = {"$ref": _REF.format(model="UpdateBatch")}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` add ``UpdateBatch`` and the bearer-token scheme to FastAPI's own schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            batch = TypeAdapter(UpdateBatch).json_schema(ref_template=_REF)
            schemas.update(batch.pop("$defs", {}))
            schemas["UpdateBatch"] = batch
            schema["components"]["securitySchemes"] = {"token": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"token": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
