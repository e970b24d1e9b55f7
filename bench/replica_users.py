"""What many users cost a hub replica on Redis: ``python bench/replica_users.py [--users 200] [--duration 10]``.

A redis-server and two hub processes with one users file of U users on it. Every user publishes one job through
replica 0 (so replica 1 knows them all, as it would in a team), then the run measures, for replica 1 (which hears
of every change only through Redis): its connections to Redis (``CLIENT LIST``), its CPU idle, and its CPU while
the users publish round robin at ``--rate`` updates a second through replica 0. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

from jupyter_sse._procs import ChildProcess, HubProcess, RedisServer, cpu_seconds
from jupyter_sse.hub import UsersFile


def _post(base: str, token: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        base + "jupyter-sse/api/updates",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def run(users: int, duration: float, rate: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-replica-users-"))
    services: list[ChildProcess] = []
    try:
        store = RedisServer(tmp, fsync="everysec")
        services.append(store)
        store.start()
        client = redis.Redis(port=store.port, decode_responses=True)
        file = UsersFile(tmp / "users")
        tokens = {f"user{i}": file.add(f"user{i}") for i in range(users)}
        hubs = [HubProcess(tmp, f"hub{i}", store=store.url, users=file.path) for i in range(2)]
        for hub in hubs:
            services.append(hub)
            hub.start(timeout=120)
        bases = [hub.url for hub in hubs]
        names = sorted(tokens)
        for name in names:
            _post(bases[0], tokens[name], {"jobs": [{"id": "j", "n": 0}]})
        hub1 = hubs[1].pid
        time.sleep(2.0)  # replica 1 learns of every user within half a second
        conns = _connections(client)
        start = cpu_seconds(hub1)
        time.sleep(duration)
        idle = (cpu_seconds(hub1) - start) / duration
        start, sent, t0 = cpu_seconds(hub1), 0, time.monotonic()
        while time.monotonic() - t0 < duration:
            name = names[sent % len(names)]
            _post(bases[0], tokens[name], {"jobs": [{"id": "j", "n": sent + 1}]})
            sent += 1
            time.sleep(max(0.0, t0 + sent / rate - time.monotonic()))
        busy = (cpu_seconds(hub1) - start) / (time.monotonic() - t0)
        return {
            "users": users,
            "redis_connections_per_replica": conns,
            "replica_cpu_idle_percent": round(idle * 100, 1),
            "replica_cpu_busy_percent": round(busy * 100, 1),
            "updates_per_s": round(sent / (time.monotonic() - t0), 1),
        }
    finally:
        for service in reversed(services):
            service.stop(signal.SIGTERM, timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


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
