"""The hub's bearer token, checked for every request before routing (an ASGI middleware)."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["TokenAuth", "token_from_header"]

_FORBIDDEN = json.dumps({"error": "forbidden", "detail": "a valid token is required"}).encode()


def token_from_header(value: str) -> str | None:
    """The token of ``Authorization: Bearer <t>`` or ``token <t>`` (the Jupyter form), else None."""
    scheme, _, token = value.partition(" ")
    if scheme.lower() in ("bearer", "token") and token.strip():
        return token.strip()
    return None


class TokenAuth:
    """Refuse with 403 JSON every HTTP request without the token: unknown paths and the schema included, so
    nothing about the hub is learnt without it. Runs before routing, so it costs no handler a line."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self._token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._token is None or scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_FORBIDDEN))],
            }
        )
        await send({"type": "http.response.body", "body": _FORBIDDEN})

    def _allowed(self, scope: Scope) -> bool:
        assert self._token is not None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                token = token_from_header(value.decode("latin-1"))
                # compare_digest: the time taken must not tell how much of a guess was right
                return token is not None and hmac.compare_digest(token.encode("latin-1"), self._token)
        return False
