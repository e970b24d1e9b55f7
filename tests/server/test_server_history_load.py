"""100,000 jobs kept: 50 subscribers connecting at once get a bounded first sync, and the server keeps answering
(``/api/status`` measured meanwhile, from another process, on a real `jupyter server` process)."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from jupyter_sse._procs import StatusProbe, at_once, cpu_seconds, history_batches
from tests._servers import TOKEN, ServerProcess, free_port

pytestmark = pytest.mark.timeout(300)

JOBS = 100_000
RUNNING = 100
SUBSCRIBERS = 50
# Jobs a request while filling: applying one takes well under 100 ms even in asyncio's (slower) debug mode.
_BATCH = 250


async def _subscribe(client: httpx.AsyncClient, url: str, opened: asyncio.Event) -> tuple[int, int]:
    """Connect when every subscriber is ready, read the first sync; return (job events, bytes)."""
    await opened.wait()
    received = b""
    async with client.stream("GET", url) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            received += chunk
            # The sync is every running job and the 100 most recently finished ones.
            if received.count(b"event: job\n") >= RUNNING + 100:
                break
    return received.count(b"event: job\n"), len(received)


_SLOW_STEP = re.compile(r"Executing (.*) took (\d+\.\d+) seconds")


def test_fifty_subscribers_at_once_with_100k_jobs_kept_never_block_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # asyncio's debug mode logs every step of the loop that takes over 100 ms: the direct measure of a blocked loop.
    monkeypatch.setenv("PYTHONASYNCIODEBUG", "1")
    server = ServerProcess(tmp_path, free_port())
    # A long lease: the running jobs are not reported again during the test, and must stay running.
    server.start(f"--SSEExtension.jobs_kept={JOBS}", "--SSEExtension.publisher_lease=3600")
    log = tmp_path / "server.log"
    try:
        with httpx.Client(headers=server.auth, timeout=60) as client:
            for jobs in history_batches(JOBS, RUNNING, _BATCH):
                response = client.post(server.url + "jupyter-sse/api/updates", json={"jobs": jobs})
                assert response.status_code == 200, response.text
            page = client.get(server.url + "jupyter-sse/api/jobs").json()
            assert page["total"] == JOBS and len(page["jobs"]) == 100
            # What the server made while starting is out of the cycle collector's passes (and the jobs never in).
            status = client.get(server.url + "jupyter-sse/api/status").json()
            assert status["gc"]["frozen_objects"] > 50_000, status
        logged_before = log.stat().st_size
        storms = [_storm(server) for _ in range(3)]
        slow_steps = _SLOW_STEP.findall(log.read_text(errors="replace")[logged_before:])
    finally:
        server.stop()
    for storm in storms:
        print(
            f"\n{SUBSCRIBERS} subscribers, {JOBS} jobs kept: all synced in {storm.took * 1000:.0f} ms, "
            f"{storm.results[0][1]} bytes each, server CPU {storm.cpu * 1000:.0f} ms; /api/status worst "
            f"{max(storm.latencies) * 1000:.1f} ms, median {statistics.median(storm.latencies) * 1000:.1f} ms "
            f"over {len(storm.latencies)} probes"
        )
        assert all(count == RUNNING + 100 for count, _ in storm.results), storm.results
        assert all(size < 200_000 for _, size in storm.results), storm.results  # was 45 MB each, with every job
        assert storm.cpu < 1.0  # the server's own time for the 50 syncs (it was 17 s)
        # /api/status waits behind the 50 requests that came at once (about 2 ms of the server's time each) and,
        # on this shared machine, for a core: its worst is a figure, bounded loosely (it was 17 s).
        assert max(storm.latencies) < 2.0
    # The syncs take a few ms each, one per turn of the loop. What passed 100 ms before was a full pass of
    # Python's cycle collector over the 100,000 jobs' objects and the server's own (100-220 ms; the heap trim
    # after a burst of closes starts one): kept jobs are out of its passes now, and so is what the server made
    # while starting (tests/core/test_gc_layout.py, and the frozen objects above). On a quiet machine no step
    # passes 100 ms; a step is measured in wall time, though, and on this shared machine one that waited for a
    # core can (seen: 0.21 s, with the server's CPU for a storm twice the usual). Bounded loosely, then: one
    # storm blocked the loop 17 s before the first sync was bounded.
    durations = [float(took) for _, took in slow_steps]
    print(f"loop steps over 100 ms during the storms: {len(durations)}, longest {max(durations, default=0):.3f} s")
    assert all(took < 0.5 for took in durations), slow_steps[:5]


@dataclass
class _Storm:
    results: list[tuple[int, int]]  # (job events, bytes) of each subscriber's first sync
    took: float
    cpu: float  # the server process's CPU seconds meanwhile
    latencies: list[float]  # of /api/status meanwhile


def _storm(server: ServerProcess) -> _Storm:
    assert server.proc is not None
    probe = StatusProbe(server.port, TOKEN)
    cpu_before = cpu_seconds(server.proc.pid)

    async def connect_all() -> list[tuple[int, int]]:
        limits = httpx.Limits(max_connections=SUBSCRIBERS)
        async with httpx.AsyncClient(headers=server.auth, timeout=60, limits=limits) as client:
            url = server.url + "jupyter-sse/api/events"
            return await at_once(SUBSCRIBERS, lambda opened: _subscribe(client, url, opened))

    started = time.perf_counter()
    results = asyncio.run(connect_all())
    took = time.perf_counter() - started
    cpu = cpu_seconds(server.proc.pid) - cpu_before
    time.sleep(0.2)  # a few probes after the storm, too
    _, latencies = probe.stop()
    return _Storm(results, took, cpu, latencies)
