"""Load generator: N SSE subscribers on raw asyncio streams, in one process (lighter than an HTTP library).

Protocol with the parent on stdin/stdout: prints ``READY <n_connected>`` once every stream has sent its first
bytes; reads ``MEASURE <seconds>``; prints one JSON line with the results and exits.

Every connection counts ``data:`` lines (events). ``--sample`` of them also read the publish timestamp the
load's job messages carry (``ts=<time.time()>``) and record the latency to receipt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _util import percentile, raise_fd_limit

TS = re.compile(rb"ts=([0-9]+\.[0-9]+)")
MARK = b"data:"


class State:
    measuring = False
    events = 0
    reads = 0
    bytes = 0
    latencies: list[float] = []
    closed = 0
    errors: list[str] = []


class Sub(asyncio.Protocol):
    """One SSE connection as a bare Protocol: data_received is all the work (lighter than StreamReader)."""

    def __init__(self, request: bytes, sampled: bool, st: type[State], on_ready: Any) -> None:
        self.request = request
        self.sampled = sampled
        self.st = st
        self.on_ready = on_ready
        self.started = False
        self.tail = b""

    def connection_made(self, transport: Any) -> None:
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        st = self.st
        if not self.started:
            self.started = True
            if not data.startswith(b"HTTP/1.1 200"):
                st.errors.append(data[:200].decode(errors="replace"))
                return
            self.on_ready()
            return
        if not st.measuring:
            return
        st.bytes += len(data)
        st.reads += 1
        data = self.tail + data
        st.events += data.count(MARK)
        if self.sampled:
            now = time.time()
            end = 0
            for m in TS.finditer(data):
                st.latencies.append(now - float(m.group(1)))
                end = m.end()
            self.tail = data[max(end, len(data) - 64) :]
        else:
            self.tail = data[-(len(MARK) - 1) :]

    def connection_lost(self, exc: Exception | None) -> None:
        self.st.closed += 1


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--sample", type=int, default=100)
    args = p.parse_args()
    raise_fd_limit()
    u = urlsplit(args.url)
    path = u.path.rstrip("/") + "/jupyter-sse/api/events"
    st = State
    ready = asyncio.Event()
    counter = [0]
    tasks = []
    every = max(1, args.n // max(args.sample, 1))
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nAuthorization: token {args.token}\r\n"
        f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()

    def on_ready() -> None:
        counter[0] += 1
        if counter[0] == args.n:
            ready.set()

    async def connect(i: int) -> None:
        try:
            await loop.create_connection(lambda: Sub(request, i % every == 0, st, on_ready), u.hostname, u.port)
        except Exception as exc:
            st.errors.append(f"{type(exc).__name__}: {exc}")

    for i in range(args.n):
        tasks.append(asyncio.create_task(connect(i)))
        if i % 50 == 49:
            await asyncio.sleep(0.01)  # do not flood the accept backlog
    with contextlib.suppress(TimeoutError):  # report how many connected, whatever happened
        await asyncio.wait_for(ready.wait(), 120)
    connect_s = time.monotonic() - t0
    print(f"READY {counter[0]} {connect_s:.2f}", flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    duration = float(line.split()[1])
    import resource

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    st.measuring = True
    t1 = time.monotonic()
    await asyncio.sleep(duration)
    st.measuring = False
    wall = time.monotonic() - t1
    lat = st.latencies
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "client_cpu_pct": 100 * (ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime) / wall,
                "connected": counter[0],
                "connect_s": connect_s,
                "wall": wall,
                "events": st.events,
                "bytes": st.bytes,
                "events_per_read": st.events / max(st.reads, 1),
                "events_per_s": st.events / wall,
                "latency_samples": len(lat),
                "p50_ms": (percentile(lat, 50) or 0) * 1000 if lat else None,
                "p99_ms": (percentile(lat, 99) or 0) * 1000 if lat else None,
                "max_ms": max(lat) * 1000 if lat else None,
                "closed": st.closed,
                "errors": len(st.errors),
                "first_error": st.errors[0] if st.errors else None,
            }
        ),
        flush=True,
    )
    for t in tasks:
        t.cancel()


if __name__ == "__main__":
    # uvloop, measured: with asyncio's own loop this process, which shares a core with the publishers, used 88% of
    # it at 1,000 subscribers and its own queueing made half of the measured p99; with uvloop it uses 38%. Both
    # servers are measured with the same client. BENCH_UVLOOP=0 uses asyncio's loop.
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None and os.environ.get("BENCH_UVLOOP", "1") != "0":
        uvloop.run(main())
    else:
        asyncio.run(main())
