"""Finding the server a kernel publishes to, from the environment the extension sets.

``JUPYTER_SSE_URL``: the server's base URL (``http://127.0.0.1:8888/`` or ``.../user/alice/``); the API lives
at ``{url}jupyter-sse/api/``. ``JUPYTER_SSE_TOKEN``: the publish token, sent as ``Authorization: Bearer``.
``JUPYTER_SSE_DISABLE=1``: never publish (local display only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from ..protocol import API_PATH

__all__ = ["ServerInfo", "discover", "flush_timeout"]

_DEFAULT_FLUSH_TIMEOUT = 2.0


class ServerInfo:
    """Where and how to POST updates."""

    __slots__ = ("base_url", "host", "port", "scheme", "token")

    def __init__(self, base_url: str, scheme: str, host: str, port: int, token: str | None) -> None:
        self.base_url = base_url  # always ends with "/"
        self.scheme = scheme  # "http" or "https"
        self.host = host
        self.port = port
        self.token = token

    def __repr__(self) -> str:  # never show the token
        return f"ServerInfo({self.base_url!r})"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PATH

    @property
    def updates_path(self) -> str:
        """The request target of ``POST updates`` (path only, for http.client)."""
        return urlsplit(self.base_url).path + API_PATH + "updates"

    @classmethod
    def from_url(cls, url: str, token: str | None = None) -> ServerInfo:
        if not url.endswith("/"):
            url += "/"
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"JUPYTER_SSE_URL must be an http(s) URL, got {url!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        return cls(base_url=url, scheme=scheme, host=parts.hostname, port=port, token=token or None)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def discover(environ: Mapping[str, str] | None = None) -> ServerInfo | None:
    """The server to publish to, or None (no URL, a bad URL, or publishing disabled)."""
    env = os.environ if environ is None else environ
    if _truthy(env.get("JUPYTER_SSE_DISABLE")):
        return None
    url = env.get("JUPYTER_SSE_URL", "").strip()
    if not url:
        return None
    try:
        return ServerInfo.from_url(url, env.get("JUPYTER_SSE_TOKEN"))
    except ValueError:
        return None


def flush_timeout(environ: Mapping[str, str] | None = None) -> float:
    """How long an ending job may wait for its final state to be sent (``JUPYTER_SSE_FLUSH_TIMEOUT``)."""
    env = os.environ if environ is None else environ
    try:
        value = float(env.get("JUPYTER_SSE_FLUSH_TIMEOUT", _DEFAULT_FLUSH_TIMEOUT))
    except ValueError:
        return _DEFAULT_FLUSH_TIMEOUT
    # never wait long, whatever the environment says: user code is waiting
    return min(max(value, 0.0), 30.0) if value == value else _DEFAULT_FLUSH_TIMEOUT
