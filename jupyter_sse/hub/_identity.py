"""Who is calling: every HTTP request is identified before routing, or refused with 403 JSON.

The ways to authenticate, tried in order: the users file (a user's token), the hub's single token (its holder
is the one user, an admin: the hub as it was before users), and JupyterHub (as a JupyterHub service). With none
configured (``--no-auth``, loopback only) every caller is the hub's own user. Routes read the caller with the
``caller`` dependency.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..core.adapter import token_from_authorization
from ._users import UsersFile

__all__ = ["Authenticate", "Identify", "Identity", "TokenIdentity", "UsersIdentity", "caller", "token_from_header"]

_FORBIDDEN = json.dumps({"error": "forbidden", "detail": "a valid token is required"}).encode()
_STATE_KEY = "jupyter_sse_identity"


@dataclass(frozen=True)
class Identity:
    """The caller: ``name`` owns the jobs it publishes; an admin sees and acts on every user's jobs."""

    name: str
    admin: bool = False


# (the request's scope, its bearer token or None) -> the caller, or None when this way does not know them
Identify = Callable[[Scope, str | None], Awaitable[Identity | None]]


# The header's token as the extension reads it (one function for both servers).
token_from_header = token_from_authorization


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return token_from_header(value.decode("latin-1"))
    return None


class TokenIdentity:
    """The hub's single token: its holder is ``owner``, an admin."""

    def __init__(self, token: str, owner: str) -> None:
        self._token = token.encode()
        self._identity = Identity(owner, admin=True)

    async def __call__(self, scope: Scope, token: str | None) -> Identity | None:
        # compare_digest: the time taken must not tell how much of a guess was right
        if token is not None and hmac.compare_digest(token.encode("latin-1", "replace"), self._token):
            return self._identity
        return None


class UsersIdentity:
    """A user's token from the users file."""

    def __init__(self, users: UsersFile) -> None:
        self.users = users

    async def __call__(self, scope: Scope, token: str | None) -> Identity | None:
        if token is None:
            return None
        user = self.users.verified(token)
        if user is None:
            # The first use of a token costs a scrypt hash: off the event loop, so streams keep flowing.
            user = await asyncio.to_thread(self.users.verify, token)
        return Identity(user.name, user.admin) if user is not None else None


class Authenticate:
    """ASGI middleware: identify every HTTP request, or answer 403 JSON (unknown paths and the schema included,
    so nothing about the hub is learnt without a token). ``anonymous``: who a caller is when no way to
    authenticate is configured at all."""

    def __init__(
        self,
        app: ASGIApp,
        ways: Sequence[Identify],
        anonymous: Identity | None,
        refuse: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self._ways = list(ways)
        self._anonymous = anonymous
        self._refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        identity = self._anonymous if not self._ways else None
        if identity is None:
            token = _bearer(scope)
            for way in self._ways:
                identity = await way(scope, token)
                if identity is not None:
                    break
        if identity is not None:
            scope.setdefault("state", {})[_STATE_KEY] = identity
            await self.app(scope, receive, send)
        elif self._refuse is not None:
            await self._refuse(scope, receive, send)
        else:
            await forbidden(scope, receive, send)


async def forbidden(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_FORBIDDEN))],
        }
    )
    await send({"type": "http.response.body", "body": _FORBIDDEN})


async def caller(request: Request) -> Identity:
    """The dependency routes take: who is calling (set by ``Authenticate``). Async, though it never waits: FastAPI
    runs a plain function dependency in a worker thread, which cost every POST a thread handoff."""
    identity: Identity = request.scope["state"][_STATE_KEY]
    return identity
