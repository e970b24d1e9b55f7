"""3. Fan-out (and 4a. memory per idle subscriber): jupyter-sse in a real Jupyter server and in the hub (memory
store, and Redis store with its redis-server on the server's core) against the baseline.

Server on core 0; the subscriber process and the publisher process on core 1 (taskset). Per size: a fresh server,
its RSS, N subscribers connected and idle (RSS again: memory per idle subscriber), then 20 jobs x 10 Hz for the
measured window (latency publish -> receipt, events delivered per second, server CPU and RSS).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from _util import HERE, LOAD_CPU, PY, Server, pinned


def run_one(
    kind: str, n: int, duration: float, jobs: int = 20, hz: float = 10, profile: str | None = None
) -> dict[str, Any]:
    res: dict[str, Any] = {"server": kind, "subscribers": n, "jobs": jobs, "hz": hz, "duration": duration}
    with Server(kind) as srv:
        time.sleep(0.5)
        rss0 = srv.rss()
        subs = subprocess.Popen(
            pinned(
                [
                    PY,
                    str(HERE / "subscribers.py"),
                    "--url",
                    srv.base,
                    "--token",
                    srv.token,
                    "--n",
                    str(n),
                    "--sample",
                    "100",
                ],
                LOAD_CPU,
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        pub = None
        spy = None
        try:
            ready = subs.stdout.readline().split()
            res["connected"] = int(ready[1]) if len(ready) > 1 else 0
            res["connect_s"] = float(ready[2]) if len(ready) > 2 else None
            time.sleep(1.0)
            rss_idle = srv.rss()
            res["rss_base_mib"] = rss0 / 2**20
            res["idle_kib_per_sub"] = (rss_idle - rss0) / 1024 / max(res["connected"], 1)
            pub = subprocess.Popen(
                pinned(
                    [
                        PY,
                        str(HERE / "pub_load.py"),
                        "--url",
                        srv.base,
                        "--token",
                        srv.token,
                        "--jobs",
                        str(jobs),
                        "--hz",
                        str(hz),
                    ],
                    LOAD_CPU,
                ),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(min(2.0, duration * 0.7))  # warm up: every job exists, every queue flows
            if profile:
                spy = subprocess.Popen(
                    [
                        str(Path(PY).parent / "py-spy"),
                        "record",
                        "-o",
                        profile,
                        "-f",
                        "raw",
                        "-d",
                        str(int(duration)),
                        "-p",
                        str(srv.proc.pid),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            c0, t0 = srv.cpu_times(), time.monotonic()
            subs.stdin.write(f"MEASURE {duration}\n")
            subs.stdin.flush()
            out = subs.stdout.readline()
            c1, t1 = srv.cpu_times(), time.monotonic()
            res.update(json.loads(out))
            res["server_cpu_pct"] = 100 * (c1 - c0) / (t1 - t0)
            res["server_cpu_us_per_event"] = (c1 - c0) * 1e6 / max(res["events"], 1)
            res["loadavg_1m"] = __import__("os").getloadavg()[0]
            res["rss_busy_mib"] = srv.rss() / 2**20
            pub.stdin.close()
            res["publisher"] = json.loads(pub.stdout.readline() or "{}")
            offered = res["publisher"].get("posts", 0)
            # offered = what the publisher actually sent (it is a closed loop: a slow server slows it) x subscribers
            res["posts_per_s"] = offered / res["publisher"]["seconds"] if offered else 0.0
            res["offered_events_per_s"] = res["posts_per_s"] * res["connected"]
            res["delivered_ratio"] = res["events_per_s"] / res["offered_events_per_s"] if offered else None
            if spy:
                spy.wait(duration + 30)
        finally:
            for p in (pub, subs, spy):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
    return res


# The servers of the fan-out table, in its order. BENCH_FANOUT_KINDS="jupyter,hub" runs some of them.
KINDS = tuple(
    k for k in __import__("os").environ.get("BENCH_FANOUT_KINDS", "jupyter,hub,hub-redis,baseline").split(",") if k
)


def run(quick: bool) -> list[dict[str, Any]]:
    sizes = [30] if quick else [100, 1000, 2000]
    duration = 1.0 if quick else 10.0
    results = []
    for n in sizes:
        for kind in KINDS:
            try:
                r = run_one(kind, n, duration)
            except Exception as exc:  # one size failing is a result, not the end of the run
                r = {"server": kind, "subscribers": n, "error": f"{type(exc).__name__}: {exc}"}
            keys = (
                "connected",
                "p50_ms",
                "p99_ms",
                "events_per_s",
                "delivered_ratio",
                "server_cpu_pct",
                "server_cpu_us_per_event",
                "idle_kib_per_sub",
                "error",
            )
            print(f"  fanout {kind:8} n={n:5}: {json.dumps({k: r.get(k) for k in keys})}", flush=True)
            results.append(r)
    return results


def run_lone(quick: bool) -> list[dict[str, Any]]:
    """3b. The common case in a notebook: one job at 10 Hz followed by a few viewers. What a server adds to each
    update's latency when it is not busy (jupyter-sse wakes at once after a quiet window, see wake_delay)."""
    results = []
    for kind in ("jupyter", "baseline"):
        try:
            r = run_one(kind, 10, 1.0 if quick else 5.0, jobs=1)
        except Exception as exc:
            r = {"server": kind, "subscribers": 10, "error": f"{type(exc).__name__}: {exc}"}
        print(f"  lone job {kind:8}: p50 {r.get('p50_ms')} ms, p99 {r.get('p99_ms')} ms", flush=True)
        results.append(r)
    return results


if __name__ == "__main__":
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=1))
