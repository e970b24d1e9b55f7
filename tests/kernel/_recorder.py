"""A real local HTTP server that records the publisher's ``POST updates`` and answers as told."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = ["Recorder", "server"]


class Recorder:
    """What the fake server saw and how it answers."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.fail_next = 0  # answer 500 to this many requests
        self.status = 200
        self.cancel: set[str] = set()
        self.cancel_all = False
        self.lock = threading.Lock()

    def updates(self, job_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [u for b in self.bodies for u in b["jobs"] if u["id"] == job_id]

    def merged(self, job_id: str) -> dict[str, Any]:
        """The job as the server would hold it: every update applied in order."""
        out: dict[str, Any] = {}
        for update in self.updates(job_id):
            out.update(update)
        return out

    def last_state(self, job_id: str) -> str | None:
        states = [u["state"] for u in self.updates(job_id) if "state" in u]
        return states[-1] if states else None

    def lines(self, job_id: str) -> list[str]:
        with self.lock:
            return [
                line for b in self.bodies for entry in b["logs"] if entry["job"] == job_id for line in entry["lines"]
            ]


@pytest.fixture
def server() -> Iterator[tuple[Recorder, str]]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with rec.lock:
                rec.paths.append(self.path)
                rec.headers.append(dict(self.headers))
                if rec.fail_next > 0:
                    rec.fail_next -= 1
                    status: int = 500
                else:
                    status = rec.status
                    if status == 200:
                        rec.bodies.append(json.loads(body))
                ids = [u["id"] for u in json.loads(body)["jobs"]]
                cancel = [i for i in ids if rec.cancel_all or i in rec.cancel]
            reply = json.dumps({"cancel": cancel} if status == 200 else {"error": "invalid_update"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # tornado's backlog: the default 5 drops connections from a storm of children

    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield rec, f"http://127.0.0.1:{httpd.server_address[1]}/base/"
    httpd.shutdown()
    httpd.server_close()
