"""A small real HTTP server that plays scripted jupyter-sse responses, for protocol-level client tests.

It is not a model of the product server: each test says what each connection gets (status, bytes, pauses,
an abrupt close), and the server records what the client sent. It speaks HTTP/1.1 with chunked bodies over a
real socket, so the client's parser, timeouts and reconnects run for real.

    s = scripted_server
    s.route("GET", "jobs/a/events",
            s.stream(s.retry(20), s.event("job", s.job("a"), id="1"), s.DROP),  # first connection
            s.stream(s.event("job", s.job("a", "succeeded"), id="2")))            # every later one

Responses of a route are used in order, one per request; the last one repeats. The helpers are reached
through the fixture's object because test modules cannot import a `conftest` (several share that name).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

__all__ = ["JSON", "Recorded", "ScriptedServer", "Stream"]

API = "/jupyter-sse/api/"
TOKEN = "test-token"


class _Drop:
    """Step: close the socket without ending the chunked body (the client sees the stream cut)."""


DROP = _Drop()


@dataclass
class JSON:
    status: int
    body: Any = None
    content_type: str = "application/json"


@dataclass
class Stream:
    """A streamed 200 response. Steps: bytes are sent as one chunk, a float sleeps, DROP cuts the stream.
    After the last step the body ends properly (the terminating chunk)."""

    steps: tuple[bytes | float | _Drop, ...]
    content_type: str = "text/event-stream"

    def __init__(self, *steps: bytes | float | _Drop, content_type: str = "text/event-stream") -> None:
        self.steps = steps
        self.content_type = content_type


@dataclass
class Recorded:
    method: str
    path: str  # relative to the API root, e.g. "jobs/a/events"
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    time: float = field(default_factory=time.monotonic)


def event(name: str, data: Any, id: str | None = None) -> bytes:
    text = json.dumps(data) if not isinstance(data, str) else data
    head = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {name}\n".encode() + b"".join(f"data: {line}\n".encode() for line in text.split("\n")) + b"\n"


def job(id: str, state: str = "running", n: float = 0, total: float | None = 10, **fields: Any) -> dict[str, Any]:
    """A Job as the protocol describes it, with the fields a client looks at."""
    return {
        "id": id,
        "name": fields.pop("name", f"job {id}"),
        "state": state,
        "n": n,
        "total": total,
        "unit": "it",
        "message": "",
        "created": 1_700_000_000.0,
        "updated": 1_700_000_001.0,
        "finished": None,
        "elapsed": 1.0,
        "rate": 2.0,
        "eta": None,
        "error": None,
        "cancel_requested": False,
        **fields,
    }


def comment(text: str = "ping") -> bytes:
    return f": {text}\n\n".encode()


def retry(ms: int) -> bytes:
    # The protocol's opening: `retry:` and a comment in one block.
    return f"retry: {ms}\n: jupyter-sse v1\n\n".encode()


class ScriptedServer:
    # The script vocabulary, for test modules (see the module's docstring).
    DROP = DROP
    json = JSON
    stream = Stream
    event = staticmethod(event)
    job = staticmethod(job)
    comment = staticmethod(comment)
    retry = staticmethod(retry)

    def __init__(self, token: str | None = TOKEN) -> None:
        self.token = token
        self.requests: list[Recorded] = []
        self._routes: dict[tuple[str, str], list[JSON | Stream]] = {}
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def route(self, method: str, path: str, *responses: JSON | Stream) -> None:
        with self._lock:
            self._routes[(method, path)] = list(responses)

    def requests_to(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _next(self, method: str, path: str) -> JSON | Stream | None:
        with self._lock:
            responses = self._routes.get((method, path))
            if not responses:
                return None
            return responses.pop(0) if len(responses) > 1 else responses[0]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def _make_handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def do_DELETE(self) -> None:
            self._handle()

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = parts.path[len(API) :] if parts.path.startswith(API) else parts.path
            with server._lock:
                server.requests.append(
                    Recorded(
                        method=self.command,
                        path=path,
                        query=parse_qs(parts.query),
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                    )
                )
            try:
                if server.token is not None and self.headers.get("Authorization") != f"token {server.token}":
                    self._json(JSON(403, {"error": "forbidden", "detail": "no or wrong credentials"}))
                    return
                response = server._next(self.command, path)
                if response is None:
                    self._json(JSON(404, {"error": "not_found", "detail": f"no route {self.command} {path}"}))
                elif isinstance(response, JSON):
                    self._json(response)
                else:
                    self._stream(response)
            except OSError:
                # The client went away (it stopped following, or timed out): nothing to tell anyone.
                self.close_connection = True

        def _json(self, response: JSON) -> None:
            if response.body is None:
                payload = b""
            elif isinstance(response.body, bytes):
                payload = response.body
            else:
                payload = json.dumps(response.body).encode()
            self.send_response(response.status)
            if payload:
                self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _stream(self, response: Stream) -> None:
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.flush()
            for step in response.steps:
                if isinstance(step, _Drop):
                    return  # no terminating chunk: the socket just closes
                if isinstance(step, float | int):
                    if server.stopping.wait(step):
                        return
                    continue
                self.wfile.write(b"%x\r\n%s\r\n" % (len(step), step))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
