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
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _util import HERE, PY, free_port, percentile

_NGINX_CONF = """
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_processes 1;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    upstream hubs {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://hubs;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""


def _start_nginx(prefix: Path, upstreams: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    servers = "\n".join(f"        server {u.split('//')[1].rstrip('/')};" for u in upstreams)
    conf = prefix / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(prefix=prefix, port=port, servers=servers))
    binary = os.environ.get("JUPYTER_SSE_NGINX", "/usr/sbin/nginx")
    log = open(prefix / "nginx.out", "wb")  # noqa: SIM115 (kept open for the child)
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"], stdout=log, stderr=log)
    return proc, f"http://127.0.0.1:{port}/"


def _cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes so far (Linux), to compare what the same load costs."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def _wait(url: str, headers: dict[str, str], proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


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
    try:
        redis_port = free_port()
        redis_bin = os.environ.get("JUPYTER_SSE_REDIS_SERVER", "/usr/bin/redis-server")
        args = [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(tmp), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", os.environ.get("BENCH_REDIS_FSYNC", "always")]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        store = f"redis://127.0.0.1:{redis_port}/0"
        served = [procs[0].pid]  # redis and the hubs: what serving the load costs
        bases = []
        for i in range(replicas):
            port = free_port()
            log = open(tmp / f"hub{i}.log", "wb")  # noqa: SIM115 (kept open for the child)
            cmd = [PY, "-m", "jupyter_sse.cli", "hub", "--port", str(port), "--token", token]
            cmd += ["--store", store] if memory is False else []
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            procs.append(proc)
            served.append(proc.pid)
            base = f"http://127.0.0.1:{port}/"
            _wait(base + "jupyter-sse/api/jobs", {"Authorization": f"Bearer {token}"}, proc)
            bases.append(base)
        front = None
        if nginx:
            proxy, front = _start_nginx(tmp, bases)
            procs.append(proxy)
            _wait(front + "jupyter-sse/api/jobs", {"Authorization": f"Bearer {token}"}, proxy)
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
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def run_section(quick: bool) -> list[dict[str, Any]]:
    """The rows of the results' table: three replicas on Redis behind nginx."""
    rows = []
    for n in [30] if quick else [1000, 2000]:
        try:
            row = run(n, 3, 1.0 if quick else 10.0, nginx=True)
        except Exception as exc:  # one size failing is a result, not the end of the run
            row = {"server": "hub x3 on Redis behind nginx", "subscribers": n, "error": f"{type(exc).__name__}: {exc}"}
        print(f"  replicas n={n:5}: {json.dumps({k: row.get(k) for k in ('p99_ms_worst', 'events_per_s', 'error')})}")
        rows.append(row)
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--memory", action="store_true", help="one hub with its memory store, for comparison")
    p.add_argument("--nginx", action="store_true", help="nginx in front: every client goes through it")
    a = p.parse_args()
    print(json.dumps(run(a.n, 1 if a.memory else a.replicas, a.duration, memory=a.memory, nginx=a.nginx)))
