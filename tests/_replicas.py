"""Real services for the replica tests: Debian's redis-server and nginx, and hub processes (started on free
loopback ports and stopped by their PIDs, as the benchmarks start them), and a stream reader."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import EventSource

from jupyter_sse import _procs
from jupyter_sse._procs import RedisServer
from tests._sse import is_event

__all__ = ["AUTH", "TOKEN", "HubProcess", "Nginx", "RedisServer", "StreamReader", "wait_for"]

TOKEN = "replica-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "a condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class HubProcess(_procs.HubProcess):
    """``jupyter sse hub --store redis://...`` in a child process, with the tests' token."""

    def __init__(self, directory: Path, store: str, name: str) -> None:
        super().__init__(directory, name, token=TOKEN, store=store)


class Nginx(_procs.Nginx):
    """Debian's nginx as the load balancer in front of the hubs (round robin), skipping a hub that fails."""

    def __init__(self, prefix: Path, upstreams: list[int]) -> None:
        super().__init__(prefix, upstreams, token=TOKEN)


class StreamReader:
    """Reads ``GET events`` in a thread, reconnecting with ``Last-Event-ID`` as a browser does."""

    def __init__(
        self, base_url: str, last_event_id: str | None = None, reconnect: bool = False, token: str = TOKEN
    ) -> None:
        self.url = base_url + "jupyter-sse/api/events"
        self.auth = {"Authorization": f"Bearer {token}"}
        self.last_id = last_event_id
        self.reconnect = reconnect
        self.events: list[tuple[str, str, dict[str, Any], float]] = []  # (id, name, data, time received)
        self.connections = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._read()
            except Exception:  # a replica killed, or close() closing the response under the reader
                if self._stop.is_set():
                    return
            if not self.reconnect:
                return
            time.sleep(0.1)

    def _read(self) -> None:
        headers = dict(self.auth)
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        with (
            httpx.Client(timeout=httpx.Timeout(5, read=30)) as client,
            client.stream("GET", self.url, headers=headers) as response,
        ):
            response.raise_for_status()
            self._response = response
            self.connections += 1
            self.connected.set()
            for sse in EventSource(response).iter_sse():
                if self._stop.is_set():
                    return
                if is_event(sse):
                    self.last_id = sse.id or self.last_id
                    self.events.append((sse.id, sse.event, sse.json(), time.time()))

    def jobs(self, job_id: str) -> list[dict[str, Any]]:
        return [data for _, name, data, _ in self.events if name == "job" and data["id"] == job_id]

    def close(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # the reader thread may be closing it at the same moment
                response.close()
        self._thread.join(timeout=35)
