"""How the publisher's requests reach the server: a small injectable object, the way httpx takes a transport.

The default speaks HTTP/1.1 over one keep-alive ``http.client`` connection. Tests give the publisher another
transport to examine its decisions (batching, backoff, leases, the final flush) without sockets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import http.client

__all__ = ["HTTPTransport", "Transport"]


class Transport(Protocol):
    """Sends one request. ``post`` returns the status and the body, or raises on a connection error."""

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]: ...

    def close(self) -> None: ...


class HTTPTransport:
    """``POST`` over one reused ``http.client`` connection (made on first use, re-made after an error)."""

    def __init__(self, scheme: str, host: str, port: int, *, timeout: float = 5.0) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        import http.client  # not at import time: a kernel that never publishes never loads it

        for attempt in (0, 1):
            reused = self._conn is not None
            if self._conn is None:
                cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
                self._conn = cls(self.host, self.port, timeout=self.timeout)
            conn = self._conn
            try:
                conn.request("POST", path, body=body, headers=dict(headers))
                resp = conn.getresponse()
                reply = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: one fresh try
                raise
            except Exception:
                self.close()
                raise
            if resp.will_close:
                self.close()
            return resp.status, reply
        raise ConnectionError("unreachable")  # pragma: no cover
