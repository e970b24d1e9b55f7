"""``GET jupyter-sse/api/status``: is the extension serving, and are jobs stored durably (and if not, why)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

__all__ = ["StatusHandler"]


class StatusHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = "jupyter_sse"
    _track_activity = False  # a monitor polling this is not a user

    @web.authenticated
    @authorized
    async def get(self) -> None:
        status = cast(Callable[[], dict[str, Any]], self.settings["jupyter_sse_status"])
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(status()))
