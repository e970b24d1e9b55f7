"""Fan-out across hub replicas on one Redis: ``python bench/replicas.py [--n 1000] [--replicas 3] [--duration 10]``.

A redis-server (appendonly, appendfsync always) and R hub processes (``jupyter sse hub --store redis://...``) on
free loopback ports; N subscribers spread evenly over the replicas; 20 jobs x 10 Hz published through replica 0
only, so (R-1)/R of the subscribers get every event across Redis. ``--nginx``: Debian's nginx in front of the
replicas (round robin, ``proxy_buffering off``), and every subscriber and the publisher go through it, as a team's
clients would. Latency is publish (the job's ``updated``, set by the replica that took the POST) to receipt, as in
the fan-out benchmark. Prints one JSON line. Processes are not pinned: replicas exist to use more than one core.
``python -m bench --only replicas`` runs three replicas behind nginx at 1,000 and 2,000 subscribers into the
results' table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _util import HERE, PY, REDIS_FSYNC, percentile

from jupyter_sse._procs import ChildProcess, HubProcess, Nginx, RedisServer, cpu_seconds, stop_process


def _cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes so far (Linux), to compare what the same load costs."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # gone: it costs nothing more
            total += cpu_seconds(pid)
    return total


def run(
    n: int,
    replicas: int,
    duration: float,
    jobs: int = 20,
    hz: float = 10,
    memory: bool = False,
    nginx: bool = False,
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    token = "bench-replicas"
    procs: list[subprocess.Popen[Any]] = []
    services: list[ChildProcess] = []
    try:
        redis = RedisServer(tmp, fsync=REDIS_FSYNC)
        services.append(redis)
        redis.start()
        hubs = [HubProcess(tmp, f"hub{i}", token=token, store=None if memory else redis.url) for i in range(replicas)]
        for hub in hubs:
            services.append(hub)
            hub.start(timeout=60)
        bases = [hub.url for hub in hubs]
        served = [redis.pid, *(hub.pid for hub in hubs)]  # what serving the load costs
        front = None
        if nginx:
            ports = [hub.port for hub in hubs]
            proxy = Nginx(tmp, ports, token=token, connections=16384, keepalive=32, access_log=False, failover=False)
            services.append(proxy)
            proxy.start()
            front = proxy.url
        subs = []
        for i, base in enumerate(bases):
            share = n // replicas + (1 if i < n % replicas else 0)
            cmd = [PY, str(HERE / "subscribers.py"), "--url", front or base, "--token", token, "--n", str(share)]
            cmd += ["--sample", str(max(1, 100 // replicas))]
            sub = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(sub)
            subs.append(sub)
        connected = 0
        for sub in subs:
            assert sub.stdout is not None
            ready = sub.stdout.readline().split()
            connected += int(ready[1]) if len(ready) > 1 else 0
        cmd = [PY, str(HERE / "pub_load.py"), "--url", front or bases[0], "--token", token]
        cmd += ["--jobs", str(jobs), "--hz", str(hz)]
        pub = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(pub)
        time.sleep(min(2.0, duration * 0.7))
        cpu_start, clock_start = _cpu_seconds(served), time.monotonic()
        for sub in subs:
            assert sub.stdin is not None
            sub.stdin.write(f"MEASURE {duration}\n")
            sub.stdin.flush()
        rows = []
        for sub in subs:
            assert sub.stdout is not None
            rows.append(json.loads(sub.stdout.readline()))
        cpu_used = (_cpu_seconds(served) - cpu_start) / (time.monotonic() - clock_start)
        assert pub.stdin is not None and pub.stdout is not None
        pub.stdin.close()
        published = json.loads(pub.stdout.readline() or "{}")
        # the p99 of all samples is not derivable from per-process p99s: take the worst replica's, and the median
        posts_per_s = published.get("posts", 0) / published["seconds"] if published.get("seconds") else 0.0
        events_per_s = sum(row.get("events_per_s", 0) for row in rows)
        return {
            "server": ("hub in memory" if memory else f"hub x{replicas} on Redis") + (" behind nginx" if nginx else ""),
            "loadavg_1m": os.getloadavg()[0],
            "server_cpu_per_s": cpu_used,  # CPU seconds a second of redis and the hubs while measured
            "delivered_ratio": events_per_s / (posts_per_s * connected) if posts_per_s and connected else None,
            "subscribers": n,
            "connected": connected,
            "jobs": jobs,
            "hz": hz,
            "p50_ms_per_replica": [row.get("p50_ms") for row in rows],
            "p99_ms_per_replica": [row.get("p99_ms") for row in rows],
            "p99_ms_worst": max((row.get("p99_ms") or 0) for row in rows),
            "events_per_s": events_per_s,
            "publisher": published,
            "median_of_p50_ms": percentile([row.get("p50_ms") or 0 for row in rows], 50),
        }
    finally:
        for proc in reversed(procs):
            stop_process(proc, timeout=10)
        for service in reversed(services):
            service.stop(signal.SIGTERM, timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def run_section(quick: bool) -> list[dict[str, Any]]:
    """The rows of the results' table: three replicas on Redis, the subscribers spread over them directly (the
    publisher on the first), then every client behind nginx."""
    rows = []
    for nginx in (False, True):
        for n in [30] if quick else [1000, 2000]:
            rows.append(_row(n, quick, nginx))
    return rows


def _row(n: int, quick: bool, nginx: bool) -> dict[str, Any]:
    try:
        row = run(n, 3, 1.0 if quick else 10.0, nginx=nginx)
    except Exception as exc:  # one size failing is a result, not the end of the run
        server = "hub x3 on Redis" + (" behind nginx" if nginx else "")
        row = {"server": server, "subscribers": n, "error": f"{type(exc).__name__}: {exc}"}
    shown = {k: row.get(k) for k in ("server", "p99_ms_worst", "events_per_s", "error")}
    print(f"  replicas n={n:5}: {json.dumps(shown)}")
    return row


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--memory", action="store_true", help="one hub with its memory store, for comparison")
    p.add_argument("--nginx", action="store_true", help="nginx in front: every client goes through it")
    a = p.parse_args()
    print(json.dumps(run(a.n, 1 if a.memory else a.replicas, a.duration, memory=a.memory, nginx=a.nginx)))
