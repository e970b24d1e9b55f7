"""Real services for the replica tests: Debian's redis-server and nginx, and hub processes, started on free
loopback ports and stopped by their PIDs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis
from httpx_sse import EventSource

from tests._servers import free_port
from tests._sse import is_event

TOKEN = "replica-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _binary(env: str, default: str) -> str:
    path = os.environ.get(env, default)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"no {path}: run scripts/ensure-redis and scripts/ensure-nginx (make pytest does)")
    return path


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "a condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class RedisServer:
    """Our own redis-server, with every write on disk before it answers (appendonly + appendfsync always)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = _binary("JUPYTER_SSE_REDIS_SERVER", "/usr/bin/redis-server")
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
            "--appendonly", "yes", "--appendfsync", "always",
        ]  # fmt: skip
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        client = redis.Redis(port=self.port, socket_timeout=1)
        try:
            wait_for(lambda: self._pings(client), what="redis-server to start")
        finally:
            client.close()

    @staticmethod
    def _pings(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)
        self.proc = None

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        try:
            client.flushall()
        finally:
            client.close()


class HubProcess:
    """``jupyter sse hub --store redis://...`` in a child process."""

    def __init__(self, directory: Path, store: str, name: str) -> None:
        self.dir = directory
        self.store = store
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable, "-m", "jupyter_sse.cli", "hub", "--port", str(self.port), "--token", TOKEN,
            "--store", self.store,
        ]  # fmt: skip
        with open(self.dir / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        wait_for(self._up, timeout=30, what=f"hub {self.name} to start")

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"hub {self.name} exited:\n" + (self.dir / f"{self.name}.log").read_text()[-3000:])
        try:
            return httpx.get(self.url + "jupyter-sse/api/jobs", headers=AUTH, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


_NGINX_CONF = """
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_processes 1;
events {{ worker_connections 4096; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    upstream hubs {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://hubs;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 3600s;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


class Nginx:
    """Debian's nginx as the load balancer in front of the hubs (round robin)."""

    def __init__(self, prefix: Path, upstreams: list[int]) -> None:
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.upstreams = upstreams
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = _binary("JUPYTER_SSE_NGINX", "/usr/sbin/nginx")
        self.prefix.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in self.upstreams)
        conf = self.prefix / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(prefix=self.prefix, port=self.port, servers=servers))
        with open(self.prefix / "stderr.log", "ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-p", str(self.prefix), "-c", str(conf), "-g", "daemon off;"], stdout=log, stderr=log
            )

        def up() -> bool:
            try:
                return httpx.get(self.url + "jupyter-sse/api/jobs", headers=AUTH, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, what="nginx to start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


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


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
