"""Real services in child processes, for the tests and the benchmarks: Debian's redis-server and nginx, hub
replicas and a Jupyter server with jupyter-sse, each on a free loopback port, waited for until it answers and
stopped by its PID; a probe of ``/api/status`` in a process of its own; the batches that fill a server with a
large history, and a storm of clients connecting at once.

Standard library only, so that a benchmark's process pays for nothing else. Not part of the public API.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "ChildProcess",
    "HttpService",
    "HubProcess",
    "JupyterServer",
    "Nginx",
    "RedisServer",
    "StatusProbe",
    "at_once",
    "cpu_seconds",
    "free_port",
    "history_batches",
    "service_binary",
    "stop_process",
]

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal one child by its PID and reap it; SIGKILL if it has not gone within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def service_binary(env: str, default: str) -> str:
    """The executable that ``env`` names, else ``default``; a clear error when it is not there."""
    path = os.environ.get(env, default)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"no {path}: run scripts/ensure-redis and scripts/ensure-nginx (make pytest does)")
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (no psutil needed)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ChildProcess:
    """One service in a child process, its output appended to ``{directory}/{name}.log``; stopped by its PID."""

    def __init__(self, directory: Path, name: str, port: int | None = None) -> None:
        self.dir = Path(directory)
        self.name = name
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def spawn(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        """Start ``prefix + args`` (a prefix such as ``taskset -c 0`` execs the command in place: same PID)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [*prefix, *args], env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn
            )

    def wait_ready(self, timeout: float) -> None:
        """Until ``answers()``; an error with the end of its log if it exits or ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()  # the caller has no handle on a service that never came up
                raise RuntimeError(f"{self.name} did not answer in {timeout} s:\n{self.tail()}")
            time.sleep(0.05)

    def answers(self) -> bool:
        """Whether the service takes requests yet; each kind says how it knows."""
        raise NotImplementedError

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig, timeout)
        self.proc = None


class RedisServer(ChildProcess):
    """Our own redis-server; by default every write is on disk before it answers (appendonly, appendfsync
    always). The port stays the same across a stop and a start, so that a test can restart it under its clients."""

    def __init__(self, directory: Path, *, fsync: str = "always", port: int | None = None) -> None:
        super().__init__(directory, "redis", port)
        self.fsync = fsync
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, prefix: Sequence[str] = (), timeout: float = 10.0) -> RedisServer:
        binary = service_binary("JUPYTER_SSE_REDIS_SERVER", "/usr/bin/redis-server")
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
            "--appendonly", "yes", "--appendfsync", self.fsync,
        ]  # fmt: skip
        self.spawn(args, prefix=prefix)
        self.wait_ready(timeout)
        return self

    def command(self, *words: str) -> bytes:
        """One command in Redis's inline form; its raw reply (first line)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            return sock.recv(4096)

    def answers(self) -> bool:
        try:
            return self.command("PING").startswith(b"+PONG")  # "-LOADING" while it reads its append-only file
        except OSError:
            return False

    def flush(self) -> None:
        reply = self.command("FLUSHALL")
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL: {reply!r}")


class HttpService(ChildProcess):
    """A service that is up once ``GET {url}{ready_path}`` answers: 200 with ``token``, anything without one."""

    ready_path = "jupyter-sse/api/jobs"
    auth_scheme = "Bearer"

    def __init__(self, directory: Path, name: str, *, token: str | None = None, port: int | None = None) -> None:
        super().__init__(directory, name, port)
        self.token = token
        self.url = f"http://127.0.0.1:{self.port}/"  # a test that serves over TLS sets https and its CA (verify)
        self.verify: ssl.SSLContext | None = None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"{self.auth_scheme} {self.token}"} if self.token else {}

    def answers(self) -> bool:
        request = urllib.request.Request(self.url + self.ready_path, headers=self.auth)
        try:
            with urllib.request.urlopen(request, timeout=2, context=self.verify) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return self.token is None  # 401 without a token: it is up
        except OSError:
            return False


class HubProcess(HttpService):
    """``jupyter sse hub`` in a child process: with ``store=redis://...``, one replica of a team hub."""

    def __init__(
        self,
        directory: Path,
        name: str = "hub",
        *,
        token: str | None = None,
        store: str | None = None,
        users: Path | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(directory, name, token=token, port=port)
        self.store = store
        self.users = users

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "jupyter_sse.cli", "hub", "--port", str(self.port)]
        args += ["--token", self.token] if self.token else []
        args += ["--store", self.store] if self.store else []
        args += ["--users", str(self.users)] if self.users else []
        return args

    def start(
        self, prefix: Sequence[str] = (), preexec_fn: Callable[[], object] | None = None, timeout: float = 30.0
    ) -> HubProcess:
        self.spawn(self.command(), prefix=prefix, preexec_fn=preexec_fn)
        self.wait_ready(timeout)
        return self


class JupyterServer(HttpService):
    """``jupyter server`` with jupyter-sse in a child process, with its own config, data and runtime folders and
    ``directory`` as its root."""

    ready_path = "api/status"
    auth_scheme = "token"

    def __init__(self, directory: Path, *, token: str, port: int | None = None, name: str = "server") -> None:
        super().__init__(directory, name, token=token, port=port)

    def environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.dir / "config"),
            "JUPYTER_RUNTIME_DIR": str(self.dir / "runtime"),
            "JUPYTER_DATA_DIR": str(self.dir / "data"),
            "PYTHONUNBUFFERED": "1",
        }
        # the server sets these for its own kernels; inherited ones would point them at another server
        env.pop("JUPYTER_SSE_URL", None)
        env.pop("JUPYTER_SSE_TOKEN", None)
        return env

    def command(self, *extra: str) -> list[str]:
        args = [
            sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.dir}",
        ]  # fmt: skip
        if os.geteuid() == 0:
            args.append("--allow-root")
        return [*args, *extra]

    def start(
        self,
        *extra: str,
        prefix: Sequence[str] = (),
        preexec_fn: Callable[[], object] | None = None,
        timeout: float = 30.0,
    ) -> JupyterServer:
        self.spawn(self.command(*extra), env=self.environment(), prefix=prefix, preexec_fn=preexec_fn)
        self.wait_ready(timeout)
        return self


_NGINX_CONF = """
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_processes auto;  # as in Debian's own nginx.conf: one worker a core
worker_rlimit_nofile {nofile};
events {{ worker_connections {connections}; }}
http {{
    access_log {access_log};
    client_body_temp_path {prefix}/client_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    upstream hubs {{
{servers}
{keepalive}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://hubs;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 3600s;
{failover}
        }}
    }}
}}
"""


class Nginx(HttpService):
    """Debian's nginx in the foreground as the load balancer in front of hubs (round robin, streams unbuffered).

    ``failover``: a hub that fails is skipped for 2 s and a request it refused goes to the next one at once (the
    tests kill replicas under their clients); ``keepalive``: idle connections kept to the hubs."""

    def __init__(
        self,
        prefix: Path,
        upstreams: Sequence[int],
        *,
        token: str | None = None,
        connections: int = 4096,
        keepalive: int = 0,
        access_log: bool = True,
        failover: bool = True,
    ) -> None:
        super().__init__(prefix, "nginx", token=token)
        self.upstreams = list(upstreams)
        self.connections = connections
        self.keepalive = keepalive
        self.access_log = access_log
        self.failover = failover

    def conf(self) -> str:
        options = " max_fails=1 fail_timeout=2s" if self.failover else ""
        servers = "\n".join(f"        server 127.0.0.1:{port}{options};" for port in self.upstreams)
        failover = "            proxy_next_upstream error timeout;\n            proxy_connect_timeout 2s;"
        return _NGINX_CONF.format(
            prefix=self.dir,
            port=self.port,
            nofile=4 * self.connections,
            connections=self.connections,
            access_log=f"{self.dir}/access.log" if self.access_log else "off",
            servers=servers,
            keepalive=f"        keepalive {self.keepalive};" if self.keepalive else "",
            failover=failover if self.failover else "",
        )

    def start(self, timeout: float = 10.0) -> Nginx:
        binary = service_binary("JUPYTER_SSE_NGINX", "/usr/sbin/nginx")
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(self.conf())
        self.spawn([binary, "-p", str(self.dir), "-c", str(conf), "-g", "daemon off;"])
        self.wait_ready(timeout)
        return self

    def stop(self, sig: int = signal.SIGQUIT, timeout: float = 10.0) -> None:
        """SIGQUIT: nginx's graceful stop, which lets the requests in flight end."""
        super().stop(sig, timeout)


async def at_once(n: int, connect: Callable[[asyncio.Event], Awaitable[T]]) -> list[T]:
    """``n`` calls of ``connect(go)``, each made ready to go before ``go`` is set: a storm of clients at once."""
    go = asyncio.Event()
    tasks = [asyncio.ensure_future(connect(go)) for _ in range(n)]
    await asyncio.sleep(0)  # every task runs up to its wait on go
    go.set()
    return list(await asyncio.gather(*tasks))


def history_batches(jobs: int, running: int, size: int) -> Iterator[list[dict[str, object]]]:
    """The ``jobs`` of ``POST updates`` bodies, ``size`` a request, that fill a server with ``jobs`` jobs of which
    the last ``running`` still run and the others have succeeded."""
    for start in range(0, jobs, size):
        yield [
            {"id": f"j{i}", "n": i, "total": jobs, **({} if i >= jobs - running else {"state": "succeeded"})}
            for i in range(start, min(start + size, jobs))
        ]


# In a process of its own: a thread of the caller's would share its GIL with whatever else the caller measures.
_PROBE = """
import json, sys, threading, time, http.client
host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
conn = http.client.HTTPConnection(host, port, timeout=60)
latencies = []
while not stop.is_set():
    started = time.perf_counter()
    conn.request("GET", "/api/status", headers={"Authorization": "token " + token})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"/api/status answered {response.status}")
    latencies.append(time.perf_counter() - started)
    if len(latencies) == READY:
        print("ready", flush=True)
    stop.wait(0.01)
print(json.dumps(latencies), flush=True)
"""


class StatusProbe:
    """``GET /api/status`` of a Jupyter server every 10 ms from another process: the latencies say how long the
    server's loop kept other requests waiting. Started, it has taken ``READY`` probes already."""

    READY = 20

    def __init__(self, port: int, token: str, prefix: Sequence[str] = ()) -> None:
        script = _PROBE.replace("READY", str(self.READY))
        args = [*prefix, sys.executable, "-c", script, "127.0.0.1", str(port), token]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline() != "ready\n":
            stop_process(self.proc)
            raise RuntimeError("the /api/status probe did not start")

    def stop(self) -> tuple[list[float], list[float]]:
        """The latencies (seconds) of the first ``READY`` probes (how busy the machine is anyway) and the rest."""
        out, _ = self.proc.communicate("", timeout=60)
        if self.proc.returncode != 0:
            raise RuntimeError(f"the /api/status probe failed ({self.proc.returncode})")
        latencies: list[float] = json.loads(out.strip().splitlines()[-1])
        return latencies[: self.READY], latencies[self.READY :]
