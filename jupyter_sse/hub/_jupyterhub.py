"""The hub as a JupyterHub service: JupyterHub says who is calling, its scopes say what they may do.

Switched on by the environment JupyterHub gives a service it manages (``JUPYTERHUB_API_TOKEN`` with
``JUPYTERHUB_SERVICE_NAME``). Tokens are checked with JupyterHub's own ``HubOAuth`` (which caches its answers):
an API call carries a JupyterHub token (a user's, or the token of a user's server, which its kernels have); a
browser logs in through JupyterHub's OAuth and then carries the service's cookie. Using the hub takes
``access:services!service=<name>``; seeing and acting on everyone's jobs takes the custom admin scope
(``custom:jupyter-sse:admin`` by default; JupyterHub needs it declared in ``c.JupyterHub.custom_scopes``).

Every path is under the service's prefix (``/services/<name>/``): the proxy forwards the whole path, and the
hub serves ``{prefix}jupyter-sse/api/...`` and ``{prefix}oauth_callback``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlparse

from starlette.types import ASGIApp, Receive, Scope, Send

from ..protocol import WRITE_HEADER
from ._identity import Identity

__all__ = ["ADMIN_SCOPE", "JupyterHubService", "ServicePrefix", "bind_from_environment", "from_environment"]

ADMIN_SCOPE = "custom:jupyter-sse:admin"
_STATE_COOKIE_AGE = 600  # seconds a login may take


def from_environment(env: Mapping[str, str] | None = None, admin_scope: str = ADMIN_SCOPE) -> JupyterHubService | None:
    """The JupyterHub service this process runs as, or None when it is not run by JupyterHub as a service."""
    env = os.environ if env is None else env
    if not env.get("JUPYTERHUB_API_TOKEN") or not env.get("JUPYTERHUB_SERVICE_NAME"):
        return None
    return JupyterHubService(admin_scope=admin_scope)


def bind_from_environment(env: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """The host and port JupyterHub expects the service at (``JUPYTERHUB_SERVICE_URL``), if it says."""
    env = os.environ if env is None else env
    url = urlparse(env.get("JUPYTERHUB_SERVICE_URL", ""))
    if url.hostname and url.port:
        return url.hostname, url.port
    return None


_WRITE_HEADER = WRITE_HEADER.lower().encode("latin-1")


def _cookie_may_write(scope: Scope) -> bool:
    """Whether a write that only the login cookie authenticates comes from a page of this origin.

    A page elsewhere can make a browser send the cookie with a POST, but not with a header of its own choosing
    unless a CORS preflight allows it, which the hub never does; the ``Origin`` and ``Sec-Fetch-Site`` a browser
    adds, when present, must also say this origin (behind JupyterHub's proxy the ``Host`` is the browser's).
    """
    headers = {name: value.decode("latin-1") for name, value in scope.get("headers", ())}
    if _WRITE_HEADER not in headers:
        return False
    if headers.get(b"sec-fetch-site", "same-origin") != "same-origin":
        return False
    origin = headers.get(b"origin")
    return origin is None or urlparse(origin).netloc == headers.get(b"host", "")


def _cookies(scope: Scope) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            with contextlib.suppress(Exception):  # a malformed cookie header is no identity, not an error
                jar.load(value.decode("latin-1"))
    return jar


class JupyterHubService:
    """JupyterHub's answers about tokens, and the OAuth login of browsers (an ASGI wrapper around the app)."""

    def __init__(self, admin_scope: str = ADMIN_SCOPE) -> None:
        from jupyterhub.services.auth import HubOAuth  # type: ignore[import-untyped]  # only here: the rest of the hub does without jupyterhub

        self.auth: Any = HubOAuth(cache_max_age=60)
        self.admin_scope = admin_scope
        self.name = os.environ.get("JUPYTERHUB_SERVICE_NAME", "")
        self.prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{self.name}/")
        if not self.prefix.endswith("/"):
            self.prefix += "/"
        self.callback_path = urlparse(self.auth.oauth_redirect_uri).path or f"{self.prefix}oauth_callback"

    # ---- identity --------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, token: str | None) -> Identity | None:
        if token is None and (scope.get("method") in ("GET", "HEAD") or _cookie_may_write(scope)):
            # The login cookie writes only with the page's own header (see _cookie_may_write).
            morsel = _cookies(scope).get(self.auth.cookie_name)
            token = morsel.value if morsel is not None else None
        if not token:
            return None
        model = await self.auth.user_for_token(token, sync=False)
        if not model or not self.auth.check_scopes(self.auth.access_scopes, model):
            return None
        scopes = set(model.get("scopes", ()))
        name = str(model["name"])
        if model.get("kind") == "service":
            name = f"service:{name}"  # a service named like a user is not that user ("service:" is no user name)
        return Identity(name, admin=self.admin_scope in scopes)

    # ---- login -----------------------------------------------------------------------------------------------
    def wrap(self, app: ASGIApp) -> ASGIApp:
        """The app served under the service's prefix, with the OAuth callback and the login redirect."""
        service = self

        async def served(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] not in ("http", "websocket"):
                await app(scope, receive, send)
                return
            path: str = scope["path"]
            if scope["type"] == "http" and path == service.callback_path:
                await service._callback(scope, send)
                return
            if not path.startswith(service.prefix):
                await _reply(send, 404, {"error": "not_found", "detail": f"this hub serves {service.prefix}"})
                return
            inner = dict(scope)
            inner["path"] = "/" + path[len(service.prefix) :]
            inner["root_path"] = scope.get("root_path", "") + service.prefix.rstrip("/")
            await app(inner, receive, send)

        return served

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """No identity: a browser asking for a page is sent to JupyterHub's login, anything else gets 403."""
        accept = b""
        for name, value in scope.get("headers", ()):
            if name == b"accept":
                accept = value
        if scope.get("method") == "GET" and b"text/html" in accept:
            state = secrets.token_urlsafe(16)
            next_url = scope.get("root_path", "") + scope["path"]
            if scope.get("query_string"):
                next_url += "?" + scope["query_string"].decode("latin-1")
            location = self.auth.login_url + "&" + urlencode({"state": state})
            cookie = json.dumps({"state": state, "next": next_url}, separators=(",", ":"))
            headers = [
                (b"location", location.encode()),
                (b"set-cookie", self._cookie(self.auth.state_cookie_name, cookie, _STATE_COOKIE_AGE)),
            ]
            await send({"type": "http.response.start", "status": 302, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await _reply(send, 403, {"error": "forbidden", "detail": "a JupyterHub token with access to this service"})

    async def _callback(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        code, state = query.get("code", [""])[0], query.get("state", [""])[0]
        morsel = _cookies(scope).get(self.auth.state_cookie_name)
        try:
            saved = json.loads(morsel.value) if morsel is not None else {}
        except ValueError:
            saved = {}
        if (
            not code
            or not state
            or not isinstance(saved, dict)
            or not secrets.compare_digest(str(saved.get("state", "")), state)
        ):
            await _reply(send, 403, {"error": "forbidden", "detail": "OAuth state mismatch: log in again"})
            return
        try:
            token = await self.auth.token_for_code(code, sync=False)
        except Exception as exc:  # JupyterHub refused the code: the browser starts over
            await _reply(send, 403, {"error": "forbidden", "detail": f"JupyterHub refused the login: {exc}"})
            return
        next_url = str(saved.get("next") or self.prefix)
        if not next_url.startswith(self.prefix):  # only ever back into this service
            next_url = self.prefix
        headers = [
            (b"location", quote(next_url, safe="/?&=%:").encode()),
            (b"set-cookie", self._cookie(self.auth.cookie_name, token, None)),
            (b"set-cookie", self._cookie(self.auth.state_cookie_name, "", 0)),
        ]
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def _cookie(self, name: str, value: str, max_age: int | None) -> bytes:
        jar: SimpleCookie = SimpleCookie()
        jar[name] = value
        jar[name]["path"] = self.prefix
        jar[name]["httponly"] = True
        jar[name]["samesite"] = "Lax"
        if max_age is not None:
            jar[name]["max-age"] = max_age
        if self.auth.cookie_host_prefix_enabled:
            jar[name]["secure"] = True
            jar[name]["path"] = "/"
        return jar.output(header="").strip().encode("latin-1")


class ServicePrefix:
    """ASGI middleware: the app under the service's prefix, with its OAuth callback (see ``wrap``)."""

    def __init__(self, app: ASGIApp, service: JupyterHubService) -> None:
        self._served = service.wrap(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._served(scope, receive, send)


async def _reply(send: Send, status: int, body: dict[str, str]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))],
        }
    )
    await send({"type": "http.response.body", "body": data})
