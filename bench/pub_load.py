"""Load generator: ``--jobs`` jobs, each POSTing its update ``--hz`` times a second (one thread and keep-alive
connection per job, as independent kernels would), with the publish time in ``message`` (``ts=<time.time()>``).

Runs until stdin closes or ``--duration`` passes; prints a JSON line of counters.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--hz", type=float, default=10)
    p.add_argument("--duration", type=float, default=3600)
    args = p.parse_args()
    u = urlsplit(args.url)
    path = u.path.rstrip("/") + "/jupyter-sse/api/updates"
    headers = {"Authorization": f"token {args.token}", "Content-Type": "application/json"}
    stop = threading.Event()
    stats = {"posts": 0, "failed": 0, "late": 0, "post_ms": []}
    lock = threading.Lock()
    period = 1 / args.hz

    def run(k: int) -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        job = f"bench-job-{k:02d}"
        t_next = time.monotonic() + period * k / args.jobs  # staggered
        n = 0
        while not stop.is_set():
            delay = t_next - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            elif delay < -period:
                with lock:
                    stats["late"] += 1
                t_next = time.monotonic()
            t_next += period
            n += 1
            body = {
                "jobs": [
                    {
                        "id": job,
                        "name": job,
                        "n": n,
                        "total": 1_000_000,
                        "unit": "it",
                        "message": f"ts={time.time():.6f}",
                        "elapsed": n * period,
                    }
                ]
            }
            t0 = time.monotonic()
            try:
                conn.request("POST", path, body=json.dumps(body), headers=headers)
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except Exception:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            with lock:
                stats["posts" if ok else "failed"] += 1
                stats["post_ms"].append((time.monotonic() - t0) * 1000)

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(args.jobs)]
    for t in threads:
        t.start()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    t_start = time.monotonic()
    stop.wait(args.duration)
    stop.set()
    for t in threads:
        t.join(5)
    ms = sorted(stats["post_ms"])
    print(
        json.dumps(
            {
                "posts": stats["posts"],
                "seconds": time.monotonic() - t_start,
                "failed": stats["failed"],
                "late": stats["late"],
                "post_p50_ms": ms[len(ms) // 2] if ms else None,
                "post_p99_ms": ms[int(len(ms) * 0.99)] if ms else None,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
