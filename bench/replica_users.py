"""What many users cost a hub replica on Redis: ``python bench/replica_users.py [--users 200] [--duration 10]``.

A redis-server and two hub processes with one users file of U users on it. Every user publishes one job through
replica 0 (so replica 1 knows them all, as it would in a team), then the run measures, for replica 1 (which hears
of every change only through Redis): its connections to Redis (``CLIENT LIST``), its CPU idle, and its CPU while
the users publish round robin at ``--rate`` updates a second through replica 0. Prints one JSON line.
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

import redis
from _util import PY, free_port

from jupyter_sse.hub import UsersFile


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _post(base: str, token: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        base + "jupyter-sse/api/updates",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def _wait(condition: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.2)


def run(users: int, duration: float, rate: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-replica-users-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        redis_port = free_port()
        redis_bin = os.environ.get("JUPYTER_SSE_REDIS_SERVER", "/usr/bin/redis-server")
        args = [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(tmp), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = redis.Redis(port=redis_port, decode_responses=True)
        _wait(lambda: _pings(client))
        file = UsersFile(tmp / "users")
        tokens = {f"user{i}": file.add(f"user{i}") for i in range(users)}
        bases = []
        for i in range(2):
            port = free_port()
            log = open(tmp / f"hub{i}.log", "wb")  # noqa: SIM115 (kept open for the child)
            cmd = [PY, "-m", "jupyter_sse.cli", "hub", "--port", str(port), "--users", str(file.path)]
            cmd += ["--store", f"redis://127.0.0.1:{redis_port}/0"]
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
            bases.append(f"http://127.0.0.1:{port}/")
        for base in bases:
            _wait(lambda base=base: _answers(base))
        names = sorted(tokens)
        for name in names:
            _post(bases[0], tokens[name], {"jobs": [{"id": "j", "n": 0}]})
        hub1 = procs[2].pid
        time.sleep(2.0)  # replica 1 learns of every user within half a second
        conns = _connections(client)
        start = _cpu_seconds(hub1)
        time.sleep(duration)
        idle = (_cpu_seconds(hub1) - start) / duration
        start, sent, t0 = _cpu_seconds(hub1), 0, time.monotonic()
        while time.monotonic() - t0 < duration:
            name = names[sent % len(names)]
            _post(bases[0], tokens[name], {"jobs": [{"id": "j", "n": sent + 1}]})
            sent += 1
            time.sleep(max(0.0, t0 + sent / rate - time.monotonic()))
        busy = (_cpu_seconds(hub1) - start) / (time.monotonic() - t0)
        return {
            "users": users,
            "redis_connections_per_replica": conns,
            "replica_cpu_idle_percent": round(idle * 100, 1),
            "replica_cpu_busy_percent": round(busy * 100, 1),
            "updates_per_s": round(sent / (time.monotonic() - t0), 1),
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


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _answers(base: str) -> bool:
    try:
        urllib.request.urlopen(base + "jupyter-sse/api/jobs", timeout=2)
    except urllib.error.HTTPError:
        return True  # 401: it is up
    except OSError:
        return False
    return True


def _connections(client: redis.Redis) -> float:
    """Connections to Redis per hub replica (both replicas, this client left out)."""
    listed = client.client_list()
    return (len(listed) - 1) / 2


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=100.0, help="updates a second, over all users")
    a = p.parse_args()
    print(json.dumps(run(a.users, a.duration, a.rate)))
