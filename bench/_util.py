"""Helpers shared by the benchmarks: servers in subprocesses, process metrics, percentiles."""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PY = sys.executable
NCPU = os.cpu_count() or 1
SERVER_CPU = "0"  # the server under test gets core 0 ...
LOAD_CPU = "1" if NCPU > 1 else "0"  # ... the load generators core 1
# extra Jupyter server options for every run, e.g. BENCH_SERVER_ARGS="--SSEExtension.store_kind=memory"
SERVER_EXTRA = os.environ.get("BENCH_SERVER_ARGS", "").split()
# Redis's appendfsync for the hub on Redis: "always" is what the hub's tests run; "everysec" measures the hub alone
REDIS_FSYNC = os.environ.get("BENCH_REDIS_FSYNC", "always")


def raise_fd_limit(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cmd: list[str], cpu: str) -> list[str]:
    """Prefix ``taskset -c cpu`` when available (a 2-core machine: server and load must not starve each other)."""
    if shutil.which("taskset") and NCPU > 1 and os.environ.get("BENCH_PIN", "1") != "0":
        return ["taskset", "-c", cpu, *cmd]
    return cmd


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return percentile(values, 50) or 0.0


def start_redis(directory: str, cpu: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's redis-server on a free loopback port, as the hub's tests run it (append-only, fsync always:
    ``BENCH_REDIS_FSYNC`` changes that); returns the process and its ``redis://`` URL once it answers."""
    port = free_port()
    binary = os.environ.get("JUPYTER_SSE_REDIS_SERVER", "/usr/bin/redis-server")
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--save", ""]
    cmd += ["--appendonly", "yes", "--appendfsync", os.environ.get("BENCH_REDIS_FSYNC", "always")]
    proc = subprocess.Popen(pinned(cmd, cpu) if cpu else cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError("redis-server did not start")


class Server:
    """A server under test in its own process: the Jupyter server with jupyter-sse, the hub (``hub``: memory
    store; ``hub-redis``: a redis-server of its own, on the server's core too), or the baseline app."""

    def __init__(self, kind: str, *, extra: list[str] | None = None, cpu: str = SERVER_CPU) -> None:
        extra = [*(extra or []), *SERVER_EXTRA] if kind == "jupyter" else extra
        self.kind = kind
        self.redis: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}/"
        self.tmp = tempfile.mkdtemp(prefix=f"bench-{kind}-")
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=os.path.join(self.tmp, "config"),
            JUPYTER_RUNTIME_DIR=os.path.join(self.tmp, "runtime"),
            JUPYTER_DATA_DIR=os.path.join(self.tmp, "data"),
            PYTHONUNBUFFERED="1",
        )
        env.pop("JUPYTER_SSE_URL", None)
        env.pop("JUPYTER_SSE_TOKEN", None)
        if kind == "jupyter":
            cmd = [
                PY,
                "-m",
                "jupyter_server",
                "--allow-root",
                "--no-browser",
                f"--port={self.port}",
                "--ip=127.0.0.1",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.tmp}",
                "--ServerApp.port_retries=0",
                "--ServerApp.log_level=WARN",
                "--ServerApp.max_body_size=4194304",
                *(extra or []),
            ]
        elif kind in ("hub", "hub-redis"):
            cmd = [PY, "-m", "jupyter_sse.cli", "hub", "--port", str(self.port), "--token", self.token]
            if kind == "hub-redis":
                self.redis, store = start_redis(self.tmp, cpu)
                cmd += ["--store", store]
        elif kind == "baseline":
            cmd = [PY, str(HERE / "baseline_app.py"), "--port", str(self.port), "--token", self.token]
        else:
            raise ValueError(kind)
        self.log = open(os.path.join(self.tmp, "server.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            pinned(cmd, cpu), env=env, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=lambda: raise_fd_limit()
        )
        self._wait_ready()
        import psutil

        self.ps = psutil.Process(self.proc.pid)
        # taskset execs the command in place: same pid

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def _wait_ready(self, timeout: float = 60) -> None:
        path = "api/status" if self.kind == "jupyter" else "jupyter-sse/api/jobs"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: {self.tail()}")
            try:
                req = urllib.request.Request(self.base + path, headers=self.headers())
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError(f"{self.kind} server not ready: {self.tail()}")

    def tail(self) -> str:
        try:
            return Path(self.log.name).read_text(errors="replace")[-2000:]
        except Exception:
            return ""

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={**self.headers(), "Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu_times(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(10)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
