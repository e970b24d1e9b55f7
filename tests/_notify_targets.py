"""Real notification targets on loopback for the tests: an SMTP server (aiosmtpd) and an HTTP endpoint for
Apprise's ``json://``, each recording what it received; the HTTP one can also hang, as a dead webhook does."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests._servers import free_port


@dataclass
class Mail:
    subject: str
    sender: str
    to: str
    text: str


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class SMTPSink:
    """aiosmtpd on a loopback port; ``messages`` are the mails it accepted, parsed."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[Mail] = []
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = parsed.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        self.messages.append(Mail(str(parsed["Subject"]), str(parsed["From"]), str(parsed["To"]), text))
        return "250 OK"

    def url(self, to: str = "me@example.org") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=jobs@example.org&to={to}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Mail]:
        _wait(lambda: len(self.messages) >= count, timeout, f"{count} mail(s), got {len(self.messages)}")
        return self.messages[:count]

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


class HTTPSink:
    """A ``json://`` target: records each POSTed JSON body; with ``hang`` set it never answers until stopped."""

    def __init__(self, hang: bool = False) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []  # the request path of each body, in the same order
        self.requests = 0
        self.hang = hang
        self.release = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.requests += 1
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if sink.hang:
                    sink.release.wait(60)  # bounded: stop() releases it
                    return
                sink.paths.append(self.path)
                sink.bodies.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-sink", daemon=True)

    def url(self, path: str = "hook", **params: str) -> str:
        query = "&".join(f"{key}={value}" for key, value in params.items())
        return f"json://127.0.0.1:{self.port}/{path}" + (f"?{query}" if query else "")

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        _wait(lambda: len(self.bodies) >= count, timeout, f"{count} webhook call(s), got {len(self.bodies)}")
        return self.bodies[:count]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def smtp_sink() -> Iterator[SMTPSink]:
    sink = SMTPSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def http_sink() -> Iterator[HTTPSink]:
    sink = HTTPSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def hanging_sink() -> Iterator[HTTPSink]:
    sink = HTTPSink(hang=True)
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
