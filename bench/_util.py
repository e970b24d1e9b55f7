"""Helpers shared by the benchmarks: servers in subprocesses, process metrics, percentiles."""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import signal
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from jupyter_sse._procs import HttpService, HubProcess, JupyterServer, RedisServer

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


def pin_prefix(cpu: str) -> list[str]:
    """``taskset -c cpu`` when available (a 2-core machine: server and load must not starve each other)."""
    if shutil.which("taskset") and NCPU > 1 and os.environ.get("BENCH_PIN", "1") != "0":
        return ["taskset", "-c", cpu]
    return []


def pinned(cmd: list[str], cpu: str) -> list[str]:
    return [*pin_prefix(cpu), *cmd]


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


class _Baseline(HttpService):
    """The baseline app (``baseline_app.py``): the same API on FastAPI with sse-starlette's defaults."""

    auth_scheme = "token"

    def start(self, prefix: list[str]) -> _Baseline:
        args = [PY, str(HERE / "baseline_app.py"), "--port", str(self.port), "--token", str(self.token)]
        self.spawn(args, prefix=prefix, preexec_fn=raise_fd_limit)
        self.wait_ready(60)
        return self


class Server:
    """A server under test in its own process: the Jupyter server with jupyter-sse, the hub (``hub``: memory
    store; ``hub-redis``: a redis-server of its own, on the server's core too), or the baseline app."""

    def __init__(self, kind: str, *, extra: list[str] | None = None, cpu: str = SERVER_CPU) -> None:
        self.kind = kind
        self.redis: RedisServer | None = None
        self.token = secrets.token_hex(16)
        self.tmp = tempfile.mkdtemp(prefix=f"bench-{kind}-")
        root, pin = Path(self.tmp), pin_prefix(cpu)
        self.child: HttpService
        try:
            if kind == "jupyter":
                self.child = JupyterServer(root, token=self.token)
                self.child.start(
                    "--ServerApp.log_level=WARN",
                    "--ServerApp.max_body_size=4194304",
                    *(extra or []),
                    *SERVER_EXTRA,
                    prefix=pin,
                    preexec_fn=raise_fd_limit,
                    timeout=60,
                )
            elif kind in ("hub", "hub-redis"):
                if kind == "hub-redis":
                    self.redis = RedisServer(root, fsync=REDIS_FSYNC).start(prefix=pin)
                self.child = HubProcess(root, token=self.token, store=self.redis.url if self.redis else None)
                self.child.start(prefix=pin, preexec_fn=raise_fd_limit, timeout=60)
            elif kind == "baseline":
                self.child = _Baseline(root, "baseline", token=self.token).start(pin)
            else:
                raise ValueError(kind)
        except BaseException:
            self.stop()
            raise
        self.port = self.child.port
        self.base = self.child.url
        assert self.child.proc is not None
        self.proc = self.child.proc
        import psutil

        self.ps = psutil.Process(self.proc.pid)
        # taskset execs the command in place: same pid

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def tail(self) -> str:
        return self.child.tail(2000)

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
        child: HttpService | None = getattr(self, "child", None)
        if child is not None:
            child.stop(signal.SIGTERM, timeout=10)
        if self.redis is not None:
            self.redis.stop(signal.SIGTERM, timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
