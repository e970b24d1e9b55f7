"""``GET``/``PUT jupyter-sse/api/notify``: a user reads and sets their own notification settings.

This is how a user the hub knows only through JupyterHub (no users file to edit) chooses where their jobs' ends
are told; a users-file user may use it too (it writes the users file). An admin may pass ``?owner=``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from starlette.responses import Response

from ..core import ProtocolError
from ._identity import Identity, caller
from ._notify import HubNotifications
from ._notify_prefs import UserNotify, check_urls

__all__ = ["add_notify_routes"]

_MAX_BODY = 64 * 1024
_PATH = "/jupyter-sse/api/notify"


def _json(value: Any) -> Response:
    return Response(json.dumps(value, allow_nan=False), media_type="application/json")


Caller = Annotated[Identity, Depends(caller)]
Owner = Annotated[str | None, Query(max_length=128, description="an admin's choice of whose settings")]


def add_notify_routes(app: FastAPI, notifications: HubNotifications) -> None:
    def whose(who: Identity, owner: str | None) -> str:
        if owner is None or owner == who.name:
            return who.name
        if not who.admin:
            raise ProtocolError(404, "not_found", f"no settings of {owner!r} for you")
        return owner

    async def read(name: str) -> UserNotify | None:
        try:
            return await asyncio.to_thread(notifications.prefs.get, name)
        except Exception as exc:
            raise ProtocolError(503, "settings_unavailable", f"cannot read the notify settings: {exc}") from None

    # Out of the OpenAPI schema, as /metrics is: the schema is protocol v1, which the extension serves too.
    @app.get(_PATH, response_model=None, include_in_schema=False)
    async def get_notify(who: Caller, owner: Owner = None) -> Response:
        """The caller's notification settings (`settings`: their own; the rest: what they come to)."""
        name = whose(who, owner)
        return _json(notifications.describe(name, await read(name)))

    @app.put(_PATH, response_model=None, include_in_schema=False)
    async def put_notify(who: Caller, request: Request, owner: Owner = None) -> Response:
        """Set the caller's settings: `urls` (Apprise URLs; `[]`: none), `states`, `min_duration`, `window` (s).
        A field left out or null is the hub's; `{}` goes back to the hub's settings."""
        name = whose(who, owner)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > _MAX_BODY:
            raise ProtocolError(413, "body_too_large", f"the body is over {_MAX_BODY} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_BODY:
                raise ProtocolError(413, "body_too_large", f"the body is over {_MAX_BODY} bytes")
        try:
            prefs = UserNotify.from_json(json.loads(body))
            if prefs.urls:
                check_urls(prefs.urls)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(400, "invalid_settings", str(exc)) from None
        except RuntimeError as exc:  # no Apprise in the hub's environment
            raise ProtocolError(503, "notifications_unavailable", str(exc)) from None
        stored = prefs if prefs.to_json() else None
        try:
            await asyncio.to_thread(notifications.prefs.set, name, stored)
        except ValueError as exc:  # the users file cannot be written, or memory is full of users
            raise ProtocolError(503, "settings_unavailable", str(exc)) from None
        except Exception as exc:  # Redis away
            raise ProtocolError(503, "settings_unavailable", f"cannot store the notify settings: {exc}") from None
        return _json(notifications.describe(name, stored))
