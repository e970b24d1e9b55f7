"""Every error the hub sends is the protocol's JSON ``{"error", "detail"}``, with the extension's statuses.

FastAPI's own 422 for a request that does not match the schema becomes the protocol's 400, named after where
the problem is: the body (``invalid_update``), a query argument or header (``invalid_query``), a path
(``invalid_job_id``).
"""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from ..core import ProtocolError
from ..protocol import API_PATH, JOB_ID_RULE

__all__ = ["error_response", "install_error_handlers"]

_log = logging.getLogger("jupyter_sse.hub")

_NAMES = {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
_BY_LOCATION = {"body": "invalid_update", "query": "invalid_query", "header": "invalid_query", "path": "invalid_job_id"}
# A job route whose id segment held an encoded "/": the router sees one segment more and finds no route; the
# extension (which matches the raw path) calls that a bad job id, and so do we.
_JOB_ROUTE = re.compile(rb"/" + API_PATH.encode() + rb"jobs/[^/]+(/cancel|/events)?")


def error_response(status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": error, "detail": detail}, allow_nan=False, default=str)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def _protocol_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProtocolError)
    _log.info("jupyter-sse hub refused %s %s: %s", request.method, request.url.path, exc)
    return error_response(exc.status, exc.error, exc.detail)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [{"loc": list(err.get("loc", ())), "msg": err.get("msg", "")} for err in exc.errors()]
    where = problems[0]["loc"][0] if problems and problems[0]["loc"] else "body"
    if where == "path":  # the only path parameter is a job id: say it as the core does
        return error_response(400, "invalid_job_id", f"a job id is {JOB_ID_RULE}")
    return error_response(400, _BY_LOCATION.get(str(where), "invalid_query"), problems)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    if exc.status_code == 404 and _JOB_ROUTE.fullmatch(raw_path.partition(b"?")[0]):
        return error_response(400, "invalid_job_id", f"a job id is {JOB_ID_RULE}")
    name = _NAMES.get(exc.status_code, "error")
    detail = exc.detail if exc.detail else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return error_response(exc.status_code, name, detail, headers)


def _allowed_methods(request: Request) -> list[str]:
    # Starlette names only the first route that matched the path; a path has a route per method here.
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "\0"})
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProtocolError, _protocol_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
