"""6. A large history: the Jupyter server with 100,000 jobs kept (99,900 finished, 100 running; 10,000 in --quick).

What a new subscriber is sent (the first sync), what pages of ``GET jobs`` cost, and 50 subscribers connecting at
once while ``/api/status`` is measured every 10 ms from another process: its latency is how long the server's loop
kept other requests waiting.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

from _util import LOAD_CPU, Server, median, percentile, pin_prefix

from jupyter_sse._procs import StatusProbe, at_once, history_batches

RUNNING = 100
SUBSCRIBERS = 50
SYNC_EVENTS = RUNNING + 100  # every running job and the 100 most recently finished (sync_finished_jobs)


async def _subscribe(srv: Server, go: asyncio.Event) -> tuple[int, float]:
    """A raw socket: (bytes of the first sync, seconds from connect until it was all read)."""
    u = urlsplit(srv.base)
    await go.wait()
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    writer.write(
        f"GET /jupyter-sse/api/events HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: token {srv.token}\r\n\r\n".encode()
    )
    received = b""
    while received.count(b"event: job\n") < SYNC_EVENTS:
        chunk = await reader.read(1 << 20)
        if not chunk:
            break
        received += chunk
        if not received.startswith(b"HTTP/1.1 200"):  # a refusal would keep its connection open: say so
            raise RuntimeError(received[:200].decode(errors="replace"))
    took = time.perf_counter() - started
    writer.close()
    return len(received), took


def _storm(srv: Server) -> dict[str, Any]:
    probe = StatusProbe(srv.port, srv.token, prefix=pin_prefix(LOAD_CPU))
    cpu0 = srv.cpu_times()

    t0 = time.perf_counter()
    synced = asyncio.run(at_once(SUBSCRIBERS, lambda go: _subscribe(srv, go)))
    wall = time.perf_counter() - t0
    cpu = srv.cpu_times() - cpu0
    time.sleep(0.2)
    quiet, during = probe.stop()
    return {
        "subscribers": SUBSCRIBERS,
        "all_synced_ms": wall * 1000,
        "sync_ms_p50": median([t for _, t in synced]) * 1000,
        "bytes_each": median([float(n) for n, _ in synced]),
        "server_cpu_ms": cpu * 1000,
        "status_ms_p50_before": median(quiet) * 1000,
        "status_ms_p50": median(during) * 1000,
        "status_ms_p99": (percentile(during, 99) or 0) * 1000,
        "status_ms_max": max(during) * 1000,
        "status_probes": len(during),
    }


def run(quick: bool) -> dict[str, Any]:
    jobs = 10_000 if quick else 100_000
    # A long lease: the running jobs are not reported again while the benchmark runs, and must stay running.
    extra = [f"--SSEExtension.jobs_kept={jobs}", "--SSEExtension.publisher_lease=3600"]
    with Server("jupyter", extra=extra) as srv:
        rss0 = srv.rss()
        t0 = time.perf_counter()
        for batch in history_batches(jobs, RUNNING, 1000):
            srv.request("POST", "jupyter-sse/api/updates", {"jobs": batch})
        fill_s = time.perf_counter() - t0
        rss = srv.rss()

        def timed(path: str) -> tuple[Any, float]:
            started = time.perf_counter()
            body = srv.request("GET", path)
            return body, (time.perf_counter() - started) * 1000

        first, first_ms = timed("jupyter-sse/api/jobs")
        _, again_ms = timed("jupyter-sse/api/jobs")
        pages = 0
        cursor = ""
        started = time.perf_counter()
        while True:
            page, _ = timed("jupyter-sse/api/jobs?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
            pages += 1
            cursor = page["next"]
            if not cursor:
                break
        all_pages_s = time.perf_counter() - started
        gc_status = srv.request("GET", "jupyter-sse/api/status").get("gc") or {}
        storms = [_storm(srv) for _ in range(3)]
        res = {
            "jobs": jobs,
            "running": RUNNING,
            "fill_s": fill_s,
            "rss_mib": rss / 2**20,
            "rss_growth_mib": (rss - rss0) / 2**20,
            "first_page_jobs": len(first["jobs"]),
            "first_page_total": first["total"],
            "first_page_ms": first_ms,
            "page_ms": again_ms,
            "pages_of_1000": pages,
            "all_pages_s": all_pages_s,
            "gc_frozen_objects": gc_status.get("frozen_objects"),
            "storms": storms,
        }
    for s in storms:
        print(
            f"  history {jobs:,} jobs: {SUBSCRIBERS} subscribers synced in {s['all_synced_ms']:.0f} ms "
            f"({s['bytes_each']:,.0f} B each, server CPU {s['server_cpu_ms']:.0f} ms); /api/status p50 "
            f"{s['status_ms_p50']:.1f} ms, p99 {s['status_ms_p99']:.1f}, max {s['status_ms_max']:.1f}",
            flush=True,
        )
    return res
